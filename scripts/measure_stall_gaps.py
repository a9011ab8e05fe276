"""Camera path of the rgbd backend when a stall drops a run of frames.

    .venv/bin/python scripts/measure_stall_gaps.py [--seeds 2 5] [--gaps 5 10 15 20]

Each synthetic clip (160x120, scene motion at 30 fps, as the node tests' camera) is played
forward and back (the synthetic camera's ping-pong loop, 70 frames); for every gap length, runs
of that many frames starting at every third frame from 10 to 37 are left out, one run per
pass. Prints a Markdown table: per seed and gap, the passes whose path stays within 5 mm ATE,
the worst ATE, and the frames the tracker relocalised or lost (docs/measurements.md quotes it).
"""

from __future__ import annotations

import argparse

import numpy as np

from fourd_ros.core.backends.rgbd import RgbdBackend
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
from fourd_ros.core.eval.metrics import ate
from fourd_ros.core.types import Frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[2, 5])
    ap.add_argument('--gaps', type=int, nargs='+', default=[5, 10, 15, 20])
    args = ap.parse_args()
    print('| seed | frames lost | passes within 5 mm | worst ATE (mm) | relocalised | lost |')
    print('|---|---|---|---|---|---|')
    for seed in args.seeds:
        clip = generate_clip(SceneConfig(frames=30, width=160, height=120, seed=seed, fps=30.0))
        order = (list(range(30)) + list(range(28, 0, -1))) * 2
        for gap in args.gaps:
            ates, relocalised, lost = [], 0, 0
            starts = range(10, 38, 3)
            for start in starts:
                engine = StreamingEngine(RgbdBackend(), EngineConfig(width=0))
                est, ref = [], []
                for k in range(70):
                    if start <= k < start + gap:
                        continue
                    i = order[k]
                    r = engine.process(Frame(rgb=clip.rgb[i], depth=clip.depth[i], K=clip.K,
                                             stamp=k / 10.0, index=k))
                    est.append(r.T_wc)
                    ref.append(clip.T_wc[i])
                    relocalised += bool(r.extras['tracking_relocalized'])
                    lost += not r.extras['tracking_ok']
                ates.append(ate(np.array(est), np.array(ref), align='se3')['ate_m'])
            ates = np.array(ates)
            print(f'| {seed} | {gap} | {int((ates <= 0.005).sum())} of {len(ates)} | '
                  f'{ates.max() * 1e3:.1f} | {relocalised} | {lost} |', flush=True)


if __name__ == '__main__':
    main()
