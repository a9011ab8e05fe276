"""Tests of fourd_ros.core.eval.metrics against hand-computed cases and evo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fourd_ros.core.eval.metrics import (
    ate,
    depth_metrics,
    rotation_angle_deg,
    rpe,
    scene_flow_metrics,
    tracking_metrics,
    umeyama,
)


def _random_trajectory(rng: np.random.Generator, n: int = 50) -> np.ndarray:
    """N x 4 x 4 smooth-ish camera-to-world poses."""
    T = np.tile(np.eye(4), (n, 1, 1))
    rotvecs = np.cumsum(rng.normal(scale=0.05, size=(n, 3)), axis=0)
    T[:, :3, :3] = Rotation.from_rotvec(rotvecs).as_matrix()
    T[:, :3, 3] = np.cumsum(rng.normal(scale=0.1, size=(n, 3)), axis=0)
    return T


def _sim3_apply(T: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Apply the world similarity x -> s R x + t to camera-to-world poses."""
    out = T.copy()
    out[:, :3, :3] = R @ T[:, :3, :3]
    out[:, :3, 3] = s * T[:, :3, 3] @ R.T + t
    return out


# --- umeyama ----------------------------------------------------------------------------------

def test_umeyama_recovers_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3))
    R = Rotation.from_euler('xyz', [10, -20, 30], degrees=True).as_matrix()
    t = np.array([1.0, -2.0, 0.5])
    dst = 2.5 * src @ R.T + t
    s, R_est, t_est = umeyama(src, dst, with_scale=True)
    assert s == pytest.approx(2.5, abs=1e-12)
    np.testing.assert_allclose(R_est, R, atol=1e-12)
    np.testing.assert_allclose(t_est, t, atol=1e-12)
    s, R_est, t_est = umeyama(src, 2.5 * src @ R.T + t, with_scale=False)
    assert s == 1.0
    assert np.linalg.det(R_est) == pytest.approx(1.0)


def test_umeyama_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        umeyama(np.zeros((5, 3)), np.zeros((4, 3)), True)
    with pytest.raises(ValueError):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)), True)


# --- depth ------------------------------------------------------------------------------------

def test_depth_identity_and_known_scale() -> None:
    gt = np.array([[1.0, 2.0], [3.0, 4.0]])
    r = depth_metrics(gt, gt, align='none')
    assert r == {'absrel': 0.0, 'delta125': 1.0, 'scale': 1.0}
    r = depth_metrics(gt / 3.0, gt)
    assert r['scale'] == pytest.approx(3.0)
    assert r['absrel'] == pytest.approx(0.0, abs=1e-12)
    assert r['delta125'] == 1.0


def test_depth_hand_computed() -> None:
    gt = np.array([1.0, 2.0, 4.0, 5.0, 0.0, np.nan])
    pred = np.array([1.1, 1.0, 4.0, 7.0, 3.0, 2.0])  # last two: invalid GT, ignored
    r = depth_metrics(pred, gt, align='none')
    # |d - d*| / d* = 0.1, 0.5, 0, 0.4 -> mean 0.25; ratios 1.1, 2, 1, 1.4 -> 2 of 4 < 1.25
    assert r['absrel'] == pytest.approx(0.25)
    assert r['delta125'] == pytest.approx(0.5)
    # valid_mask removes the second pixel: mean(0.1, 0, 0.4) and 2 of 3
    mask = np.array([True, False, True, True, True, True])
    r = depth_metrics(pred, gt, valid_mask=mask, align='none')
    assert r['absrel'] == pytest.approx(0.5 / 3)
    assert r['delta125'] == pytest.approx(2 / 3)


def test_depth_sequence_median_scale_is_global() -> None:
    gts = [np.full((2, 2), 1.0), np.full((2, 2), 3.0)]
    preds = [np.full((2, 2), 2.0), np.full((2, 2), 6.0), ]
    preds[1][0, 0] = 0.0  # invalid prediction, ignored
    r = depth_metrics(preds, gts)
    # one scale for the sequence: median(gt) / median(pred) over the 7 valid pixels = 3 / 6
    assert r['scale'] == pytest.approx(0.5)
    assert r['absrel'] == pytest.approx(0.0)


def test_depth_empty_is_nan() -> None:
    r = depth_metrics(np.zeros((3, 3)), np.zeros((3, 3)))
    assert math.isnan(r['absrel']) and math.isnan(r['delta125'])


# --- ATE / RPE --------------------------------------------------------------------------------

def test_ate_identity_and_known_offset() -> None:
    T = _random_trajectory(np.random.default_rng(1))
    assert ate(T, T)['ate_m'] == pytest.approx(0.0, abs=1e-9)
    # a global similarity of the estimate is removed by sim3 alignment
    R = Rotation.from_euler('z', 40, degrees=True).as_matrix()
    T_est = _sim3_apply(T, 0.25, R, np.array([3.0, 1.0, -2.0]))
    r = ate(T_est, T, align='sim3')
    assert r['ate_m'] == pytest.approx(0.0, abs=1e-9)
    assert r['scale'] == pytest.approx(4.0)
    # without alignment, a constant 0.3 m offset of all centres gives ATE 0.3
    T_off = T.copy()
    T_off[:, :3, 3] += np.array([0.0, 0.3, 0.0])
    assert ate(T_off, T, align='none')['ate_m'] == pytest.approx(0.3)
    assert ate(T_off, T, align='se3')['ate_m'] == pytest.approx(0.0, abs=1e-9)


def test_ate_known_residual() -> None:
    # GT centres on a square; the estimate moves two opposite corners outwards along z by
    # +-e (a saddle z = e x y): no rigid motion removes it, so the RMSE stays e.
    T_gt = np.tile(np.eye(4), (4, 1, 1))
    T_gt[:, :3, 3] = [[1, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]]
    T_est = T_gt.copy()
    e = 0.2
    T_est[0, 2, 3] = e
    T_est[2, 2, 3] = e
    T_est[1, 2, 3] = -e
    T_est[3, 2, 3] = -e
    assert ate(T_est, T_gt, align='se3')['ate_m'] == pytest.approx(e, abs=1e-9)


def test_rpe_identity_and_known_step_error() -> None:
    T = _random_trajectory(np.random.default_rng(2), 20)
    r = rpe(T, T)
    assert r['rpe_trans_m'] == pytest.approx(0.0, abs=1e-9)
    assert r['rpe_rot_deg'] == pytest.approx(0.0, abs=1e-6)
    # a pure-translation GT stepping 1 m along x; the estimate steps 0.5 -> scale 2 fixes it
    T_gt = np.tile(np.eye(4), (5, 1, 1))
    T_gt[:, 0, 3] = np.arange(5.0)
    T_est = T_gt.copy()
    T_est[:, 0, 3] *= 0.5
    assert rpe(T_est, T_gt)['rpe_trans_m'] == pytest.approx(0.5)
    assert rpe(T_est, T_gt, scale=2.0)['rpe_trans_m'] == pytest.approx(0.0)
    assert rpe(T_est, T_gt, delta=2)['rpe_trans_m'] == pytest.approx(1.0)
    # a constant 2 degree extra yaw per step
    T_rot = T_gt.copy()
    T_rot[:, :3, :3] = Rotation.from_euler('z', 2.0 * np.arange(5), degrees=True).as_matrix()
    T_rot[:, :3, 3] = 0.0
    T_gt0 = np.tile(np.eye(4), (5, 1, 1))
    assert rpe(T_rot, T_gt0)['rpe_rot_deg'] == pytest.approx(2.0)


def test_rotation_angle_small_and_large() -> None:
    for deg in (1e-6, 0.01, 45.0, 179.0):
        R = Rotation.from_rotvec([0.0, deg * np.pi / 180, 0.0]).as_matrix()
        assert rotation_angle_deg(R) == pytest.approx(deg, rel=1e-6)


def test_ate_and_rpe_match_evo() -> None:
    from evo.core import metrics as evo_metrics
    from evo.core.trajectory import PoseTrajectory3D
    from evo.main_ape import ape
    from evo.main_rpe import rpe as evo_rpe

    rng = np.random.default_rng(3)
    T_gt = _random_trajectory(rng, 60)
    R = Rotation.from_euler('xyz', [5, 60, -20], degrees=True).as_matrix()
    T_est = _sim3_apply(T_gt, 0.7, R, np.array([0.5, -1.0, 2.0]))
    T_est[:, :3, 3] += rng.normal(scale=0.05, size=(60, 3))
    noise = Rotation.from_rotvec(rng.normal(scale=0.01, size=(60, 3))).as_matrix()
    T_est[:, :3, :3] = T_est[:, :3, :3] @ noise
    stamps = np.arange(60) / 30.0

    def traj(T: np.ndarray) -> PoseTrajectory3D:
        return PoseTrajectory3D(poses_se3=list(T.copy()), timestamps=stamps.copy())

    for align, correct_scale in (('sim3', True), ('se3', False)):
        res = ape(traj(T_gt), traj(T_est), evo_metrics.PoseRelation.translation_part,
                  align=True, correct_scale=correct_scale)
        ours = ate(T_est, T_gt, align=align)
        assert ours['ate_m'] == pytest.approx(res.stats['rmse'], abs=1e-6)

    # RPE (no alignment needed for the rotation part; evo's unit is degrees with this flag)
    res = evo_rpe(traj(T_gt), traj(T_est), evo_metrics.PoseRelation.rotation_angle_deg,
                  delta=1, delta_unit=evo_metrics.Unit.frames, all_pairs=False)
    assert rpe(T_est, T_gt)['rpe_rot_deg'] == pytest.approx(res.stats['rmse'], abs=1e-6)
    res = evo_rpe(traj(T_gt), traj(T_est), evo_metrics.PoseRelation.translation_part,
                  delta=1, delta_unit=evo_metrics.Unit.frames, all_pairs=False)
    assert rpe(T_est, T_gt)['rpe_trans_m'] == pytest.approx(res.stats['rmse'], abs=1e-6)


# --- scene flow -------------------------------------------------------------------------------

def test_scene_flow_thresholds() -> None:
    gt = np.array([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [0.1, 0, 0], [2.0, 0, 0]])
    pred = gt.copy()
    pred[0, 1] = 0.04   # EPE 0.04: AccS and AccR
    pred[1, 1] = 0.07   # EPE 0.07, rel 7 %: AccR only
    pred[2, 1] = 0.2    # EPE 0.2, rel 20 %: neither
    pred[3, 1] = 0.06   # EPE 0.06, rel 60 %: AccR only (absolute)
    pred[4, 1] = 0.09   # EPE 0.09, rel 4.5 %: AccS (relative) and AccR
    r = scene_flow_metrics(pred, gt)
    assert r['epe3d'] == pytest.approx((0.04 + 0.07 + 0.2 + 0.06 + 0.09) / 5)
    assert r['acc_s'] == pytest.approx(2 / 5)
    assert r['acc_r'] == pytest.approx(4 / 5)
    r = scene_flow_metrics(gt, gt)
    assert r == {'epe3d': 0.0, 'acc_s': 1.0, 'acc_r': 1.0}


# --- 3D tracking ------------------------------------------------------------------------------

def test_tracking_identity_and_scale() -> None:
    rng = np.random.default_rng(4)
    gt = rng.uniform([-1, -1, 1], [1, 1, 5], size=(3, 40, 3))
    z = gt[..., 2]
    r = tracking_metrics(gt, gt, z, 500.0)
    assert r['epe'] == pytest.approx(0.0, abs=1e-12)
    assert r['apd3d'] == pytest.approx(100.0)
    assert math.isnan(r['apd3d_dynamic'])
    r = tracking_metrics(gt * 0.2, gt, z, 500.0)
    assert r['scale'] == pytest.approx(5.0)
    assert r['apd3d'] == pytest.approx(100.0)
    r = tracking_metrics(gt * 0.2, gt, z, 500.0, scale_align=False)
    assert r['scale'] == 1.0
    assert r['apd3d'] < 100.0


def test_tracking_apd_known_counts() -> None:
    # 10 points at z* = 2 m, f = 100 px: the thresholds are delta * 0.02 m.
    n = 10
    gt = np.zeros((n, 3))
    gt[:, 2] = 2.0
    z = gt[:, 2].copy()
    errors = np.array([0.0, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, np.nan])
    pred = gt.copy()
    pred[:, 0] = errors  # pred NaN for the last point -> a miss
    dynamic = np.zeros(n, dtype=bool)
    dynamic[[4, 5]] = True
    r = tracking_metrics(pred, gt, z, 100.0, dynamic=dynamic, scale_align=False)
    # thresholds 0.02, 0.04, 0.08, 0.16, 0.32 -> counts (< thr) 2, 3, 4, 5, 7 of 10
    assert r['apd3d'] == pytest.approx(100 * np.mean([0.2, 0.3, 0.4, 0.5, 0.7]))
    assert r['epe'] == pytest.approx(np.nanmean(errors))
    assert r['coverage'] == pytest.approx(0.9)
    # dynamic points have errors 0.1 and 0.2: fractions 0, 0, 0, 0.5, 1
    assert r['apd3d_dynamic'] == pytest.approx(100 * 1.5 / 5)
    assert r['epe_dynamic'] == pytest.approx(0.15)
    # a visibility mask removes points from evaluation
    visible = np.ones(n, dtype=bool)
    visible[[8, 9]] = False
    r = tracking_metrics(pred, gt, z, 100.0, visible=visible, scale_align=False)
    assert r['apd3d'] == pytest.approx(100 * np.mean([2, 3, 4, 5, 7]) / 8)
    assert r['coverage'] == 1.0
