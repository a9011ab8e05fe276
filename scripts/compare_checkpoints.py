"""Learned-backend checkpoints side by side on synthetic streams (docs/history.md, session 25:
the training's validation sub-clips do not rank checkpoints for the streams; this does).

Per checkpoint and clip (256x192, 48 frames at 30 Hz, `fourd eval --backend learned --width 0`):
depth AbsRel (one median scale per clip) and ATE Sim(3); then the mean AbsRel per checkpoint and
on how many clips each checkpoint is the best. Development seeds 0-11 by default (tuned on);
`--seeds 100 101 102 103 104 105` for the held-out ones, once a choice is made.

Usage: .venv/bin/python scripts/compare_checkpoints.py CKPT [CKPT ...] [--seeds 0 1 2]
(`shipped` names the package's default checkpoint). About 30 s per clip and checkpoint.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from fourd_ros.core.data.clip_format import write_clip
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.eval.evaluate import evaluate
from fourd_ros.core.model.checkpoint import DEFAULT_CHECKPOINT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoints', nargs='+', help="checkpoint files ('shipped' = default)")
    parser.add_argument('--seeds', type=int, nargs='*', default=list(range(12)))
    args = parser.parse_args()
    ckpts = [str(DEFAULT_CHECKPOINT) if c == 'shipped' else c for c in args.checkpoints]
    absrel = np.full((len(args.seeds), len(ckpts)), np.nan)
    names = [f'{Path(c).parent.name}/{Path(c).name}' for c in ckpts]
    print('| seed | ' + ' | '.join(f'{n} AbsRel / ATE Sim(3)' for n in names) + ' |')
    print('|---' * (len(ckpts) + 1) + '|')
    with tempfile.TemporaryDirectory() as tmp:
        for row, seed in enumerate(args.seeds):
            clip = Path(tmp) / f's{seed}'
            write_clip(generate_clip(SceneConfig(frames=48, width=256, height=192, seed=seed,
                                                 fps=30.0)), clip)
            cells = []
            for col, ckpt in enumerate(ckpts):
                m = evaluate('learned', clip, width=0, progress=False, device='cpu',
                             checkpoint=ckpt).metrics
                absrel[row, col] = m['depth_absrel']
                cells.append(f"{m['depth_absrel']:.3f} / {m['ate_sim3_m'] * 100:.1f} cm")
            print(f'| {seed} | ' + ' | '.join(cells) + ' |', flush=True)
    best = np.bincount(np.argmin(absrel, axis=1), minlength=len(ckpts))
    print('| mean AbsRel | ' + ' | '.join(f'{v:.4f}' for v in absrel.mean(axis=0)) + ' |')
    print('| best on clips | ' + ' | '.join(str(b) for b in best) + ' |')


if __name__ == '__main__':
    main()
