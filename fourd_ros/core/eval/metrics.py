"""Evaluation metrics: depth, camera trajectory, scene flow, 3D tracking.

All functions take numpy arrays and return plain ``dict``s of Python floats. Lengths are in the
units of the inputs (metres for metric data). Poses are 4x4 camera-to-world matrices ``T_wc``
(see ``fourd_ros.core.types``), so camera centres are ``T_wc[:3, 3]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fourd_ros.core.geometry import (  # noqa: F401 (rotation_angle_deg, umeyama: metrics API)
    invert_pose, rotation_angle_deg, umeyama)

APD_THRESHOLDS_PX = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Pixel thresholds of APD3D (TAPVid-3D), scaled to metres by ``z* / f``."""


# ----------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------

def _as_frames(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(x, np.ndarray):
        return [x]
    return [np.asarray(f) for f in x]


def depth_metrics(pred: np.ndarray | Sequence[np.ndarray],
                  gt: np.ndarray | Sequence[np.ndarray],
                  valid_mask: np.ndarray | Sequence[np.ndarray] | None = None,
                  align: str = 'median') -> dict[str, float]:
    """AbsRel and delta<1.25 of predicted depth against ground truth.

    Args:
        pred: H x W predicted depth, or a list of them (one sequence).
        gt: ground-truth depth of the same shape(s) (metres).
        valid_mask: optional H x W bool mask(s) of pixels to evaluate.
        align: ``'median'`` scales the prediction by ``median(gt) / median(pred)`` computed once
            over all valid pixels of the whole sequence (monocular); ``'none'`` uses it as is.

    Pixels where GT or prediction is non-finite or <= 0 are ignored.

    Returns:
        ``absrel`` = mean(|s d - d*| / d*), ``delta125`` = fraction of max(s d / d*, d* / s d)
        < 1.25, ``scale`` = s (1.0 for ``align='none'``). NaN metrics when no pixel is valid.
    """
    if align not in ('median', 'none'):
        raise ValueError(f"depth_metrics: align must be 'median' or 'none', got {align!r}")
    preds = _as_frames(pred)
    gts = _as_frames(gt)
    masks = _as_frames(valid_mask) if valid_mask is not None else [None] * len(preds)
    if not (len(preds) == len(gts) == len(masks)):
        raise ValueError('depth_metrics: pred, gt and valid_mask must have the same length')
    d_all = []
    g_all = []
    for p, g, m in zip(preds, gts, masks):
        if p.shape != g.shape:
            raise ValueError(f'depth_metrics: shape mismatch {p.shape} vs {g.shape}')
        p = p.astype(np.float64)
        g = g.astype(np.float64)
        ok = np.isfinite(p) & np.isfinite(g) & (p > 0) & (g > 0)
        if m is not None:
            ok &= np.asarray(m, dtype=bool)
        d_all.append(p[ok])
        g_all.append(g[ok])
    d = np.concatenate(d_all) if d_all else np.zeros(0)
    g = np.concatenate(g_all) if g_all else np.zeros(0)
    if d.size == 0:
        return {'absrel': float('nan'), 'delta125': float('nan'), 'scale': float('nan')}
    scale = float(np.median(g) / np.median(d)) if align == 'median' else 1.0
    d = d * scale
    absrel = float(np.mean(np.abs(d - g) / g))
    delta = float(np.mean(np.maximum(d / g, g / d) < 1.25))
    return {'absrel': absrel, 'delta125': delta, 'scale': scale}


# ----------------------------------------------------------------------------------------------
# Camera trajectory
# ----------------------------------------------------------------------------------------------

def _check_poses(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    T_est = np.asarray(T_est, dtype=np.float64)
    T_gt = np.asarray(T_gt, dtype=np.float64)
    if T_est.shape != T_gt.shape or T_est.ndim != 3 or T_est.shape[1:] != (4, 4):
        raise ValueError(f'expected two F x 4 x 4 pose arrays, got {T_est.shape}, {T_gt.shape}')
    return T_est, T_gt


def ate(T_est: np.ndarray, T_gt: np.ndarray, align: str = 'sim3') -> dict[str, float]:
    """Absolute trajectory error: RMSE of camera centres after Umeyama alignment.

    Args:
        T_est: F x 4 x 4 estimated camera-to-world poses.
        T_gt: F x 4 x 4 ground-truth camera-to-world poses (metres).
        align: ``'sim3'`` (monocular, estimates a scale), ``'se3'`` (metric) or ``'none'``.

    Returns:
        ``ate_m``: RMSE in GT units of ``|c_gt - (s R c_est + t)|``; ``scale``: s.
    """
    T_est, T_gt = _check_poses(T_est, T_gt)
    c_est = T_est[:, :3, 3]
    c_gt = T_gt[:, :3, 3]
    if align == 'sim3':
        s, rot, t = umeyama(c_est, c_gt, with_scale=True)
    elif align == 'se3':
        s, rot, t = umeyama(c_est, c_gt, with_scale=False)
    elif align == 'none':
        s, rot, t = 1.0, np.eye(3), np.zeros(3)
    else:
        raise ValueError(f"ate: align must be 'sim3', 'se3' or 'none', got {align!r}")
    aligned = s * c_est @ rot.T + t
    err = np.linalg.norm(c_gt - aligned, axis=1)
    return {'ate_m': float(np.sqrt(np.mean(err ** 2))), 'scale': float(s)}


def rpe(T_est: np.ndarray, T_gt: np.ndarray, delta: int = 1,
        scale: float | None = None) -> dict[str, float]:
    """Relative pose error between frames ``i`` and ``i + delta`` (RMSE over all pairs).

    For each pair the relative motions ``P = inv(T_i) T_{i+delta}`` (estimate, its translation
    multiplied by ``scale``) and ``Q`` (GT) give the error ``E = inv(Q) P``; the translation error
    is ``|t(E)|`` (GT units), the rotation error is the angle of ``R(E)`` (degrees). This equals
    evo's RPE with ``delta`` frames. A global rigid alignment does not change relative motions,
    so only the scale matters (pass ``ate(...)['scale']`` for monocular estimates).

    Args:
        T_est: F x 4 x 4 estimated camera-to-world poses.
        T_gt: F x 4 x 4 ground-truth camera-to-world poses.
        delta: frame offset (>= 1).
        scale: optional factor applied to the estimated translations (default 1).

    Returns:
        ``rpe_trans_m`` and ``rpe_rot_deg`` (NaN when fewer than ``delta + 1`` frames).
    """
    T_est, T_gt = _check_poses(T_est, T_gt)
    if delta < 1:
        raise ValueError(f'rpe: delta must be >= 1, got {delta}')
    if T_est.shape[0] <= delta:
        return {'rpe_trans_m': float('nan'), 'rpe_rot_deg': float('nan')}
    T_est = T_est.copy()
    if scale is not None:
        T_est[:, :3, 3] *= scale
    P = invert_pose(T_est[:-delta]) @ T_est[delta:]
    Q = invert_pose(T_gt[:-delta]) @ T_gt[delta:]
    E = invert_pose(Q) @ P
    t_err = np.linalg.norm(E[:, :3, 3], axis=1)
    r_err = rotation_angle_deg(E[:, :3, :3])
    return {'rpe_trans_m': float(np.sqrt(np.mean(t_err ** 2))),
            'rpe_rot_deg': float(np.sqrt(np.mean(r_err ** 2)))}


# ----------------------------------------------------------------------------------------------
# Scene flow
# ----------------------------------------------------------------------------------------------

def scene_flow_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """EPE3D, AccS and AccR of predicted 3D scene flow (FlowNet3D-style definitions).

    Args:
        pred: N x 3 predicted flow vectors (metres).
        gt: N x 3 ground-truth flow vectors (metres).

    Rows where either vector is non-finite are ignored. With ``e = |pred - gt|`` and
    ``r = e / |gt|``: AccS = fraction with ``e < 0.05 or r < 0.05``, AccR = fraction with
    ``e < 0.1 or r < 0.1``.

    Returns:
        ``epe3d`` (mean e, metres), ``acc_s`` and ``acc_r`` (fractions in [0, 1]); NaN if empty.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 3)
    if pred.shape != gt.shape:
        raise ValueError(f'scene_flow_metrics: shape mismatch {pred.shape} vs {gt.shape}')
    ok = np.isfinite(pred).all(axis=1) & np.isfinite(gt).all(axis=1)
    if not ok.any():
        return {'epe3d': float('nan'), 'acc_s': float('nan'), 'acc_r': float('nan')}
    err = np.linalg.norm(pred[ok] - gt[ok], axis=1)
    gt_norm = np.linalg.norm(gt[ok], axis=1)
    with np.errstate(divide='ignore', invalid='ignore'):
        rel = np.where(gt_norm > 0, err / np.where(gt_norm > 0, gt_norm, 1.0), np.inf)
    acc_s = (err < 0.05) | (rel < 0.05)
    acc_r = (err < 0.1) | (rel < 0.1)
    return {'epe3d': float(err.mean()), 'acc_s': float(acc_s.mean()),
            'acc_r': float(acc_r.mean())}


# ----------------------------------------------------------------------------------------------
# 3D point tracking
# ----------------------------------------------------------------------------------------------

def tracking_metrics(pred: np.ndarray, gt: np.ndarray, gt_depth_z: np.ndarray, focal: float,
                     visible: np.ndarray | None = None, dynamic: np.ndarray | None = None,
                     scale_align: bool = True) -> dict[str, float]:
    """3D tracking EPE and APD3D (TAPVid-3D) with global median scale alignment.

    Args:
        pred: N x 3 (or T x N x 3) predicted positions in the target camera frame (OpenCV axes,
            origin at the camera centre), metres or model units.
        gt: ground-truth positions of the same shape and frame (metres).
        gt_depth_z: N (or T x N) camera-z depth of each GT point in the target camera (metres).
        focal: focal length in pixels used to turn pixel thresholds into metres.
        visible: optional N (or T x N) bool; only visible GT points are evaluated (default all).
        dynamic: optional N (or T x N) bool; True for points on moving objects.
        scale_align: multiply the prediction by the global scale
            ``s = median(|gt|) / median(|pred|)`` over all evaluated points of the clip (norms of
            the camera-frame positions, i.e. distances from the camera, as in TAPVid-3D's
            median scaling). With False, s = 1 (metric predictions).

    Points with non-finite GT or ``z* <= 0`` are not evaluated. Evaluated points whose prediction
    is non-finite count as misses in APD3D and are left out of EPE and of the scale.

    Returns:
        ``epe`` (mean |s p - g|, GT units), ``apd3d`` (percent: 100 * mean over
        delta in {1, 2, 4, 8, 16} px of the fraction with error < delta * z* / f),
        ``epe_dynamic`` and ``apd3d_dynamic`` (same over dynamic points, NaN if none),
        ``scale`` (s) and ``coverage`` (fraction of evaluated points with a finite prediction).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f'tracking_metrics: shape mismatch {pred.shape} vs {gt.shape}')
    lead = gt.shape[:-1]
    z = np.broadcast_to(np.asarray(gt_depth_z, dtype=np.float64), lead)
    if focal <= 0:
        raise ValueError(f'tracking_metrics: focal must be > 0, got {focal}')
    evaluated = np.isfinite(gt).all(axis=-1) & np.isfinite(z) & (z > 0)
    if visible is not None:
        evaluated &= np.broadcast_to(np.asarray(visible, dtype=bool), lead)
    dyn = (np.broadcast_to(np.asarray(dynamic, dtype=bool), lead) if dynamic is not None
           else np.zeros(lead, dtype=bool))
    pred_ok = np.isfinite(pred).all(axis=-1)
    both = evaluated & pred_ok

    scale = 1.0
    if scale_align and both.any():
        pn = np.median(np.linalg.norm(pred[both], axis=-1))
        gn = np.median(np.linalg.norm(gt[both], axis=-1))
        scale = float(gn / pn) if pn > 0 else float('nan')

    err = np.full(lead, np.inf)
    err[both] = np.linalg.norm(scale * pred[both] - gt[both], axis=-1)

    def _summary(sel: np.ndarray) -> tuple[float, float]:
        if not sel.any():
            return float('nan'), float('nan')
        e = err[sel]
        finite = np.isfinite(e)
        epe = float(e[finite].mean()) if finite.any() else float('nan')
        zs = z[sel]
        fracs = [np.mean(e < d * zs / focal) for d in APD_THRESHOLDS_PX]
        return epe, float(100.0 * np.mean(fracs))

    epe, apd = _summary(evaluated)
    epe_dyn, apd_dyn = _summary(evaluated & dyn)
    coverage = float(both.sum() / evaluated.sum()) if evaluated.any() else float('nan')
    return {'epe': epe, 'apd3d': apd, 'epe_dynamic': epe_dyn, 'apd3d_dynamic': apd_dyn,
            'scale': scale, 'coverage': coverage}
