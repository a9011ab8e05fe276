"""Tests of the same-run baselines of `evaluate` (constant depth, zero motion)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fourd_ros.cli.main import main
from fourd_ros.core.data.clip_format import write_clip
from fourd_ros.core.data.synthetic import generate_clip, SceneConfig
from fourd_ros.core.eval.evaluate import (BASELINE_KEYS, constant_depth_like,
                                          DepthAccumulator, evaluate)

SEED_WITH_MOVERS = 2  # 64x48 x 10: two moving objects, visible in every frame


@pytest.fixture(scope='module')
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = generate_clip(SceneConfig(frames=10, width=64, height=48, seed=SEED_WITH_MOVERS))
    assert clip.moving.any() and all(clip.dynamic_mask(i).any() for i in range(len(clip)))
    return write_clip(clip, tmp_path_factory.mktemp('clip') / 'clip')


def test_oracle_perfect_and_baselines_worse(clip_dir: Path) -> None:
    m = evaluate('oracle', clip_dir, track_gap=3, track_pairs=3, grid_cols=32,
                 progress=False).metrics
    assert m['metric'] is True and m['frames'] == 10
    # the oracle itself scores perfectly
    assert m['depth_absrel'] == pytest.approx(0.0, abs=1e-9)
    assert m['depth_delta125'] == pytest.approx(1.0)
    assert m['track_points_dynamic'] > 20
    assert m['apd3d'] == pytest.approx(100.0)
    assert m['apd3d_dynamic'] == pytest.approx(100.0)
    assert m['track_epe_m'] < 1e-5
    # baselines are measured and clearly worse where they should be
    assert all(np.isfinite(m[k]) for k in BASELINE_KEYS)
    assert m['baseline_const_depth_absrel'] > 0.05
    assert m['baseline_const_depth_delta125'] < 1.0
    assert m['baseline_zero_motion_apd3d_dynamic'] < m['apd3d_dynamic']
    assert m['baseline_zero_motion_apd3d'] < m['apd3d']
    assert m['baseline_zero_motion_epe_m'] > m['track_epe_m'] + 1e-3
    # static points are unaffected by removing the motion: the overall APD3D stays above the
    # dynamic one
    assert m['baseline_zero_motion_apd3d'] > m['baseline_zero_motion_apd3d_dynamic']


def test_constant_depth_is_scored_on_the_backends_pixels() -> None:
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 5.0, (40, 50))
    pred = gt * 1.7
    pred[:5] = np.nan     # backend holes: not scored for the baseline either
    pred[5:8] = 0.0
    # per_frame above the pixel count: every valid pixel is scored, no sampling
    acc, const = DepthAccumulator(False, per_frame=5000), DepthAccumulator(False, per_frame=5000)
    for _ in range(3):
        acc.add(pred, gt)
        const.add(constant_depth_like(pred), gt)
    assert const.frames == acc.frames == 3
    g = np.tile(gt[8:].ravel(), 3)   # the pixels where the backend has a depth
    med = np.median(g)
    assert const.result()['absrel'] == pytest.approx(float(np.mean(np.abs(med - g) / g)),
                                                     rel=1e-5)
    assert acc.result()['absrel'] == pytest.approx(0.0, abs=1e-6)


def test_cli_eval_reports_baselines(clip_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'm.json'
    assert main(['eval', '--backend', 'oracle', '--input', str(clip_dir), '--track-gap', '3',
                 '--json', str(out)]) == 0
    m = json.loads(out.read_text())
    assert all(isinstance(m[k], float) for k in BASELINE_KEYS)
    text = capsys.readouterr().out
    assert 'baseline_const_depth_absrel' in text and 'constant depth AbsRel' in text
