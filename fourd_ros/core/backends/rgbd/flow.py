"""Optical-flow utilities of the rgbd backend (flows are H x W x 2 float32 pixel offsets from an
earlier frame to a later one, at the processing resolution): moving masks along
them, the flow a segment's rigid motion induces, and the pixels whose flow a single rigid camera
motion does not explain. DIS itself, the camera's rigid flow and composing flows live in
`fourd_ros.core.flow` (shared with the learned backend).
"""

from __future__ import annotations

import cv2
import numpy as np

from fourd_ros.core.backends.rgbd.mask_kernels import splat
from fourd_ros.core.backends.rgbd.latent import RgbdView, SegmentMotions
from fourd_ros.core.geometry import (finite_rows, invert_pose, mask_pixels, project,
                                     sample_depth, transform_points)


def splat_mask(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Move a boolean mask along a forward flow field (nearest pixel), then close small holes."""
    flow = np.asarray(flow, np.float32)
    return _closed(splat(np.ascontiguousarray(mask, bool), flow[..., 0], flow[..., 1], False))


def splat_mask_at(mask: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`splat_mask` by where the mask's pixels are now (``x``, ``y``: H x W positions)."""
    return _closed(splat(np.ascontiguousarray(mask, bool), x, y, True))


def _closed(mask: np.ndarray) -> np.ndarray:
    """A uint8 mask after a 3x3 morphological closing (small holes filled), as bool."""
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)


def rigid_flow_outliers(points_world: np.ndarray, flow: np.ndarray, depth: np.ndarray,
                        K: np.ndarray, max_error_px: float, depth_rel: float,
                        depth_abs: float, step: int) -> np.ndarray:
    """H x W bool: pixels (earlier frame) whose flow disagrees with the dominant rigid motion.

    The camera pose that best explains the flow of a pixel grid is found by PnP RANSAC on the
    earlier frame's 3D points (metres). A grid pixel is an outlier when that pose reprojects it
    farther than ``max_error_px`` from where the flow takes it, or when the current ``depth``
    there differs from its predicted depth by more than max(depth_rel * z, depth_abs) (a flow
    stuck on the camera-motion prior over a moving object); it marks its step x step block.
    """
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step].reshape(2, -1)
    X = points_world[ys, xs].astype(np.float64)
    ok = finite_rows(X)
    out = np.zeros((h, w), bool)
    if ok.sum() < 12:
        return out
    ys, xs, X = ys[ok], xs[ok], X[ok]
    uv = np.stack([xs, ys], axis=1) + flow[ys, xs].astype(np.float64)
    # SQPnP: EPnP and P3P minimal fits were measured to let a moving object into the model
    found, rvec, tvec, _ = cv2.solvePnPRansac(X, uv, K, None, reprojectionError=max_error_px,
                                              iterationsCount=300, confidence=0.999,
                                              flags=cv2.SOLVEPNP_SQPNP)
    if not found:
        return out
    reproj, _ = cv2.projectPoints(X, rvec, tvec, K, None)
    z_pred = (X @ cv2.Rodrigues(rvec)[0].T + tvec.ravel())[:, 2]
    z_seen = sample_depth(depth, uv.astype(np.float32))
    with np.errstate(invalid='ignore'):
        far = np.abs(z_seen - z_pred) > np.maximum(depth_rel * z_pred, depth_abs)
    bad = (np.linalg.norm(reproj.reshape(-1, 2) - uv, axis=1) > max_error_px) | far
    blocks = np.zeros(((h + step - 1) // step, (w + step - 1) // step), bool)
    blocks[ys[bad] // step, xs[bad] // step] = True
    return np.repeat(np.repeat(blocks, step, axis=0), step, axis=1)[:h, :w]


def rigid_flow_of_segments(segments: SegmentMotions, prev: RgbdView, T_wc_cur: np.ndarray,
                           K: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``flow`` (prev -> cur, pixels) with the pixels of segments that have a motion replaced
    by the flow that motion induces (exact for rigid objects, unlike DIS on fast textured ones).
    """
    out = flow.copy()
    T_cw = invert_pose(T_wc_cur)
    for k in range(1, len(segments.motions)):
        M = segments.motions[k].astype(np.float64)
        if not np.isfinite(M).all():
            continue
        ys, xs = mask_pixels((segments.labels == k) & np.isfinite(prev.depth))
        uv, _ = project(transform_points(T_cw @ M, prev.points_world[ys, xs].astype(np.float64)),
                        K)
        out[ys, xs] = uv - np.stack([xs, ys], axis=1)
    return out
