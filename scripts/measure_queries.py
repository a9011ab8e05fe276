"""Queried points of the rgbd backend by their visibility at the target (issue 12's figures,
table in docs/measurements.md, "Every queried point").

Per synthetic clip (256x192, 48 frames at 30 Hz, 3-5 objects): `fourd eval --backend rgbd`'s
APD3D of every queried static and moving point, split by what the target frame shows of it
(visible, hidden behind something, out of view; point counts in brackets), the APD3D of the
moving points that the target sees, and the camera's ATE. Development seeds 0-15 (tuned on),
held-out seeds 100-105 (never tuned on).

Usage: .venv/bin/python scripts/measure_queries.py [--seeds 0 100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fourd_ros.core.data.clip_format import write_clip
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.eval.evaluate import evaluate

GROUPS = [f'{kind}_{status}' for kind in ('static', 'dynamic')
          for status in ('visible', 'hidden', 'out_of_view', 'every')]


def _count(metrics: dict, group: str) -> str:
    """' (N)': the points of a hidden or out-of-view group (few; visible ones are most)."""
    if group.endswith(('visible', 'every')):
        return ''
    return f" ({metrics[f'track_points_{group}']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='*',
                        default=list(range(16)) + list(range(100, 106)))
    args = parser.parse_args()
    print('| seed | ' + ' | '.join(GROUPS) + ' | APD3D dynamic | ATE (mm) |')
    print('|---' * (len(GROUPS) + 3) + '|')
    for seed in args.seeds:
        clip = generate_clip(SceneConfig(frames=48, width=256, height=192, seed=seed,
                                         fps=30.0, num_objects=(3, 5)))
        with tempfile.TemporaryDirectory() as tmp:
            write_clip(clip, Path(tmp) / 'clip')
            m = evaluate('rgbd', Path(tmp) / 'clip', width=0, progress=False).metrics
        cells = [f"{m[f'apd3d_{g}']:.1f}" + _count(m, g) for g in GROUPS]
        print(f'| {seed} | ' + ' | '.join(cells)
              + f" | {m['apd3d_dynamic']:.1f} | {m['ate_m'] * 1e3:.2f} |", flush=True)


if __name__ == '__main__':
    main()
