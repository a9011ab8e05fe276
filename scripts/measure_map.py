"""The node's accumulated map cloud (`~/map_points`) with and without carving the points a later
view sees through, fed from one engine pass (docs/measurements.md, "The map cloud").

Synthetic clips, played forwards, backwards and forwards again as the demo's camera does: the
share of map points farther than 0.1 m from every ground-truth static surface point (ghosts of
moving objects the motion mask missed) and the share of the static surface the map covers
(within 0.1 m). Clips: the DDS test's scene (seed 2, 160x120, 30 frames) and 256x192 clips of
48 frames with 3-5 objects; development seeds 0, 2, 5, 11, held-out seeds 100, 102-105.
`--real DIR` (7-Scenes): map points Sim(3)/SE(3)-aligned by their camera centres to the ground
truth, share within 5 and 10 cm of the ground-truth surface.

Usage: .venv/bin/python scripts/measure_map.py [--backend learned] [--seeds 0 2 100]
       [--real ../shared/data/7scenes-redkitchen]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from fourd_ros.core.backends import factory
from fourd_ros.core.data.readers import open_sequence
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
from fourd_ros.core.geometry import invert_pose, transform_points, umeyama, unproject_depth
from fourd_ros.core.map_cloud import MAX_POINTS, UPDATE_EVERY, VOXEL_SIZE, MapAccumulator

FAR = 0.1  # metres from the static surface: a ghost


class TwoMaps:
    """The node's map cloud fed twice from the same frames: plain and carved."""

    def __init__(self) -> None:
        self.plain = MapAccumulator(VOXEL_SIZE, MAX_POINTS, carve=False)
        self.carved = MapAccumulator(VOXEL_SIZE, MAX_POINTS)
        self.frames = 0

    def add(self, result) -> None:
        for acc in (self.plain, self.carved):
            acc.add_frame(result, np.eye(4))
        self.frames += 1
        if self.frames % UPDATE_EVERY == 1:
            self.update()

    def update(self) -> None:
        self.plain.update()
        self.carved.update()


def _surface(depth: np.ndarray, K: np.ndarray, T_wc: np.ndarray, mask: np.ndarray,
             stride: int) -> np.ndarray:
    p = unproject_depth(depth.astype(np.float64), K)[::stride, ::stride][mask[::stride, ::stride]]
    return transform_points(T_wc, p[np.isfinite(p).all(axis=1) & (p[:, 2] > 0)])


def synthetic(backend: str, name: str, config: SceneConfig) -> None:
    clip = generate_clip(config)
    engine = StreamingEngine(factory.make_backend(backend, device='cpu'), EngineConfig(width=0))
    n = len(clip)
    order = list(range(n)) + list(range(n - 2, 0, -1)) + list(range(n))
    maps = TwoMaps()
    for k, i in enumerate(order):
        maps.add(engine.process(dataclasses.replace(clip.frame(i), stamp=k / config.fps,
                                                    index=k)))
    maps.update()
    engine.close()
    # ground truth in the engine's world frame (the first camera's)
    T_first = invert_pose(clip.T_wc[order[0]])
    moving = np.flatnonzero(clip.moving)
    static = np.concatenate([
        _surface(clip.depth[i], clip.K, T_first @ clip.T_wc[i],
                 ~np.isin(clip.instance[i], moving) & (clip.depth[i] > 0), 2) for i in range(n)])
    tree = cKDTree(static)
    row = [name]
    for acc in (maps.plain, maps.carved):
        ghosts = float((tree.query(acc.points)[0] > FAR).mean()) if len(acc.points) else 0.0
        covered = float((cKDTree(acc.points).query(static[::5])[0] < FAR).mean()) \
            if len(acc.points) else 0.0
        row += [f'{len(acc.points)}', f'{ghosts:.3f}', f'{covered:.3f}']
    print('| ' + ' | '.join(row) + ' |', flush=True)


def real(backend: str, path: str) -> None:
    engine = StreamingEngine(factory.make_backend(backend, device='cpu'))
    maps = TwoMaps()
    est, gt, surface = [], [], []
    for k, frame in enumerate(open_sequence(path)):
        result = engine.process(frame)
        maps.add(result)
        est.append(result.T_wc[:3, 3])
        gt.append(frame.T_wc_gt[:3, 3])
        if k % 3 == 0:
            surface.append(_surface(frame.depth, frame.K, frame.T_wc_gt, frame.depth > 0, 4))
    maps.update()
    engine.close()
    s, R, t = umeyama(np.array(est), np.array(gt), with_scale=not engine.metric)
    tree = cKDTree(np.concatenate(surface))
    for label, acc in (('plain', maps.plain), ('carved', maps.carved)):
        d = tree.query(s * acc.points.astype(np.float64) @ R.T + t)[0]
        print(f'{path} ({backend}), {label}: {len(d)} points, within 5 cm {(d < 0.05).mean():.3f}'
              f', within 10 cm {(d < 0.10).mean():.3f}, median {100 * np.median(d):.1f} cm',
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backend', default='rgbd', choices=factory.STREAM_BACKENDS)
    parser.add_argument('--seeds', type=int, nargs='*',
                        default=[0, 2, 5, 11, 100, 102, 103, 104, 105])
    parser.add_argument('--real', default=None, help='a 7-Scenes folder (with ground truth)')
    args = parser.parse_args()
    if args.real:
        real(args.backend, args.real)
        return
    print('| clip | points | ghosts | static covered | points, carved | ghosts, carved '
          '| static covered, carved |')
    print('|---' * 7 + '|')
    synthetic(args.backend, 'DDS clip',
              SceneConfig(frames=30, width=160, height=120, seed=2, fps=30.0))
    for seed in args.seeds:
        synthetic(args.backend, f'seed {seed}',
                  SceneConfig(frames=48, width=256, height=192, seed=seed, fps=30.0,
                              num_objects=(3, 5)))


if __name__ == '__main__':
    main()
