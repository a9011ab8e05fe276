"""Print the table of scripts/eval_learned.sh results (one row per sequence)."""

import json
import sys
from pathlib import Path

KEYS = ('depth_absrel', 'baseline_const_depth_absrel', 'ate_sim3_m', 'apd3d', 'apd3d_dynamic',
        'baseline_zero_motion_apd3d_dynamic', 'track_epe_m', 'fps')


def main(folder: str) -> None:
    root = Path(folder)
    print('| sequence | backend | ' + ' | '.join(KEYS) + ' |')
    print('|' + '---|' * (len(KEYS) + 2))
    for path in sorted(root.glob('*.json'), key=lambda p: (p.stem.split('_')[-1], p.stem)):
        m = json.loads(path.read_text())
        backend, seq = path.stem.split('_', 1)
        cells = []
        for k in KEYS:
            v = m.get(k)
            cells.append('n/a' if v is None else f'{v:.3f}' if abs(v) < 10 else f'{v:.1f}')
        print(f'| {seq} | {backend} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main(sys.argv[1])
