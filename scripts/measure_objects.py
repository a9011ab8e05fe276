"""Moving objects of a backend against synthetic ground truth (issue 15's figures, table in
docs/measurements.md, "Moving objects").

Per clip: the scores of `fourd_ros.core.eval.moving_objects.score_objects` (mask IoU, scene-flow
error, objects matched, velocity error, id stability, frames with a false object). Clips: the
DDS test's scene (seed 2, 160x120, 30 frames, 2 objects) and 256x192 clips of 48 frames with
3-5 objects, all at 30 Hz. Development seeds 0, 2, 5, 11 (tuned on), held-out seeds 100,
102-105 (never tuned on).

Usage: .venv/bin/python scripts/measure_objects.py [--backend learned] [--seeds 0 2 100]
"""

from __future__ import annotations

import argparse

from fourd_ros.core.backends import factory
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
from fourd_ros.core.eval.moving_objects import score_objects

COLUMNS = ('mask_iou', 'flow_moving_rel_median', 'objects_matched_share',
           'object_velocity_rel_median_worst', 'id_stability_worst',
           'frames_with_false_object')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backend', default='rgbd', choices=factory.STREAM_BACKENDS)
    parser.add_argument('--seeds', type=int, nargs='*',
                        default=[0, 2, 5, 11, 100, 102, 103, 104, 105])
    parser.add_argument('--no-dds-clip', action='store_true',
                        help='leave out the DDS test scene (seed 2 at 160x120)')
    args = parser.parse_args()
    clips = [] if args.no_dds_clip else [
        ('DDS clip', SceneConfig(frames=30, width=160, height=120, seed=2, fps=30.0))]
    clips += [(f'seed {s}', SceneConfig(frames=48, width=256, height=192, seed=s, fps=30.0,
                                        num_objects=(3, 5))) for s in args.seeds]
    print('| clip | ' + ' | '.join(COLUMNS) + ' |')
    print('|---' * (len(COLUMNS) + 1) + '|')
    for name, config in clips:
        engine = StreamingEngine(factory.make_backend(args.backend, device='cpu'),
                                 EngineConfig(width=0))
        scores = score_objects(engine, generate_clip(config)).result()
        print(f'| {name} | ' + ' | '.join(f'{scores[c]:.3f}' for c in COLUMNS) + ' |',
              flush=True)


if __name__ == '__main__':
    main()
