"""Metres for a monocular camera on a ground robot: the scale from the floor's image motion and
the camera's known height above it.

A flat floor seen from two camera poses moves in the image by the homography
``K (R - t n^T / h) K^-1`` (``R``, ``t``: the relative pose, ``n``: the floor's up vector in the
camera, ``h``: the camera's height above the floor). With ``R`` and ``t`` from the monocular
pose (map units) and ``n`` from the robot's mounting, the optical flow on the floor pixels gives
``1 / h`` in map units by linear least squares (one unknown); the known height in metres then
gives metres per map unit. This is geometry (the classic ground-plane scale recovery of
monocular driving odometry): the network's depth only picks which pixels are floor, so the
scale does not inherit the network's depth error (docs/learned-model.md).

`metric_scale.MetricScale` turns the per-frame estimates into corrections of the map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroundScaleConfig:
    """Settings of the floor-based scale.

    Attributes:
        max_tilt_deg: floor pixels: their surface normal (from the depth) within this angle of
            the up vector, and below the camera.
        min_pixels: fewest floor pixels a frame's estimate needs.
        min_baseline: the reference frame's camera at least this far (share of the height)
            from the current one: the floor's flow must show the translation.
        max_gap: the reference is one of the last this many cached frames.
        huber_px: Huber threshold of the flow residual, pixels.
        max_rel_error: an estimate whose standard error is more than this share of its value
            is not used.
        min_inlier_share: nor one whose floor pixels follow the fitted plane's motion less
            often than this.
    """

    max_tilt_deg: float = 25.0
    min_pixels: int = 300
    min_baseline: float = 0.1
    max_gap: int = 30
    huber_px: float = 1.0
    max_rel_error: float = 0.1
    min_inlier_share: float = 0.6


def surface_normals(points_cam: np.ndarray, step: int = 4) -> np.ndarray:
    """H x W x 3 unit normals of an organised point map (camera frame) from central differences
    ``step`` pixels apart (the border, and pixels without points, get NaN)."""
    dx = np.full_like(points_cam, np.nan)
    dy = np.full_like(points_cam, np.nan)
    dx[:, step:-step] = points_cam[:, 2 * step:] - points_cam[:, :-2 * step]
    dy[step:-step] = points_cam[2 * step:] - points_cam[:-2 * step]
    n = np.cross(dx, dy)
    with np.errstate(invalid='ignore', divide='ignore'):
        return n / np.linalg.norm(n, axis=-1, keepdims=True)


def floor_pixels(points_cam: np.ndarray, up: np.ndarray, usable: np.ndarray,
                 max_tilt_deg: float, height: float | None = None,
                 height_tol: float = 0.25) -> np.ndarray:
    """H x W bool: ``usable`` pixels whose viewing ray points below the horizon and whose
    point (camera frame, any scale) lies on a surface facing ``up`` within ``max_tilt_deg``,
    at a depth below the camera within ``height_tol`` (share) of ``height`` (the floor's
    expected depth below the camera in the points' units; None: of the median of such
    pixels, which drops table tops and the foot of walls when most of them are floor)."""
    normals = surface_normals(points_cam)
    with np.errstate(invalid='ignore'):
        facing = np.abs(normals @ up) >= np.cos(np.deg2rad(max_tilt_deg))
        below = -(points_cam @ up)
        # the ray at least 1.7 deg under the horizon (the point's own direction, any depth)
        rays_down = below > 0.03 * np.linalg.norm(points_cam, axis=-1)
        candidates = usable & facing & rays_down
        if height is None:
            if not candidates.any():
                return candidates
            height = float(np.median(below[candidates]))
        return candidates & (np.abs(below - height) <= height_tol * height)


@dataclass(frozen=True)
class FloorFit:
    """One frame's floor estimate.

    Attributes:
        inverse_height: 1 / (the camera's height above the floor), per map unit.
        rel_error: its standard error as a share of it.
        pixels: floor pixels used.
        inlier_share: share of the flow components within twice the Huber threshold of
            the fitted plane's (low: the pixels were not one plane).
    """

    inverse_height: float
    rel_error: float
    pixels: int
    inlier_share: float


def fit_floor(flow: np.ndarray, K: np.ndarray, T_ref_cur: np.ndarray, up: np.ndarray,
              floor: np.ndarray, huber_px: float = 1.0) -> FloorFit | None:
    """The floor's inverse height in the current camera from the optical flow to a reference
    view.

    Args:
        flow: H x W x 2 flow from the current image to the reference image, pixels.
        K: 3x3 intrinsics of both.
        T_ref_cur: 4x4 current camera -> reference camera (map units).
        up: the floor's up vector in the current camera frame (unit).
        floor: H x W bool, the floor pixels to fit.
        huber_px: Huber threshold of the residual, pixels.

    Returns None when there is nothing to fit (no floor pixel, no translation)."""
    v, u = np.nonzero(floor)
    if len(u) == 0:
        return None
    rays = np.linalg.solve(K, np.stack([u, v, np.ones(len(u))]).astype(np.float64))
    R, t = T_ref_cur[:3, :3], T_ref_cur[:3, 3]
    # a floor point X = ray * s with up . X = -h maps to R X + t = s (R ray - t (up . ray) / h)
    a = K @ R @ rays
    b = -(K @ t)[:, None] * (up @ rays)[None]
    x_ref = u + flow[v, u, 0]
    y_ref = v + flow[v, u, 1]
    # x_ref = (a_x + w b_x) / (a_z + w b_z), w = 1 / h: linear in w; rows divided by a_z are
    # about pixels (exactly where the floor's flow is small against its depth)
    coeff = np.concatenate([b[0] - x_ref * b[2], b[1] - y_ref * b[2]]) / np.tile(a[2], 2)
    rhs = np.concatenate([x_ref * a[2] - a[0], y_ref * a[2] - a[1]]) / np.tile(a[2], 2)
    ok = np.isfinite(coeff) & np.isfinite(rhs)
    coeff, rhs = coeff[ok], rhs[ok]
    info = float(coeff @ coeff)
    if info <= 0.0:
        return None
    w = float(coeff @ rhs) / info
    weight = np.ones_like(coeff)
    for _ in range(5):  # iteratively reweighted least squares, Huber
        res = np.abs(coeff * w - rhs)
        weight = np.where(res <= huber_px, 1.0, huber_px / np.maximum(res, 1e-12))
        info = float((weight * coeff) @ coeff)
        w = float((weight * coeff) @ rhs) / info
    res = coeff * w - rhs
    sigma2 = float((weight * res) @ res) / max(len(res) - 1, 1)
    return FloorFit(w, float(np.sqrt(sigma2 / info)) / abs(w) if w != 0 else np.inf,
                    int(len(u)), float(np.mean(np.abs(res) <= 2.0 * huber_px)))
