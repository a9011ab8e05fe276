"""Compiled per-pixel loops (numba) of the rgbd backend's motion segmentation and segment
motion: which pixels moved since an earlier frame, which of them staying still explains,
masks moved to where their pixels are now, and the cost of a segment's rigid motion.

Each loop is one pass over an image's pixels (or a segment's points) that numpy did in many
passes; the arithmetic and rounding are numpy's (the results are the same to the bit).
World points in metres (H x W x 3 float32), poses 4x4 float64, images sampled bilinearly with
`geometry.bilinear_at` (H x W x 1 float32, `with_channel`).
"""

from __future__ import annotations

import numba
import numpy as np

from fourd_ros.core.geometry import bilinear_at


def with_channel(image: np.ndarray) -> np.ndarray:
    """An H x W image as H x W x 1 float32 (the layout the kernels sample with
    `geometry.bilinear_at`)."""
    return np.ascontiguousarray(image, np.float32).reshape(*image.shape[:2], 1)


@numba.njit(cache=True, nogil=True)
def motion_costs(points: np.ndarray, T_cw: np.ndarray, K: np.ndarray, depth: np.ndarray,
                 detail: np.ndarray, intensity: np.ndarray, agree_abs: float,
                 agree_rel: float, agree_photo: np.float32, hidden_cost: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-point cost in [0, 1] of world points (N x 3, float64) seen by a camera ``T_cw``
    (world to camera, 4x4; intrinsics ``K``) in a frame with ``depth`` and shading-free
    intensities ``detail`` (H x W x 1 float32): half a truncated depth cost (the difference
    over max(agree_abs, agree_rel * z)) and half a truncated photometric cost against the
    points' own ``intensity`` (over ``agree_photo``); ``hidden_cost`` where a point is out of
    view or something nearer hides it. Returns the costs and whether each point is seen
    (`motion_scoring.MotionScorer.costs_in`)."""
    h, w = depth.shape[0], depth.shape[1]
    n = points.shape[0]
    cost = np.empty(n)
    seen = np.zeros(n, np.bool_)
    d_at = np.empty(1, np.float32)
    g_at = np.empty(1, np.float32)
    one = np.float32(1.0)
    for i in range(n):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        xc = T_cw[0, 0] * x + T_cw[0, 1] * y + T_cw[0, 2] * z + T_cw[0, 3]
        yc = T_cw[1, 0] * x + T_cw[1, 1] * y + T_cw[1, 2] * z + T_cw[1, 3]
        zc = T_cw[2, 0] * x + T_cw[2, 1] * y + T_cw[2, 2] * z + T_cw[2, 3]
        u = K[0, 0] * xc / zc + K[0, 2]
        v = K[1, 1] * yc / zc + K[1, 2]
        if not (np.isfinite(u) and np.isfinite(v) and zc > 0 and u >= 0 and v >= 0
                and u <= w - 1 and v <= h - 1):
            cost[i] = hidden_cost
            continue
        bilinear_at(depth, np.float32(u), np.float32(v), d_at)
        bilinear_at(detail, np.float32(u), np.float32(v), g_at)
        tol = max(agree_abs, agree_rel * zc)
        if d_at[0] < zc - 3.0 * tol:  # something nearer stands in front of the point
            cost[i] = hidden_cost
            continue
        depth_cost = abs(d_at[0] - zc) / tol
        photo_cost = abs(g_at[0] - intensity[i]) / agree_photo
        cost[i] = 0.5 * ((min(depth_cost, 1.0) if np.isfinite(depth_cost) else 1.0)
                         + (min(photo_cost, one) if np.isfinite(photo_cost) else one))
        seen[i] = True
    return cost, seen


@numba.njit(cache=True, nogil=True)
def moved_points(prev_world: np.ndarray, cur_world: np.ndarray, x: np.ndarray, y: np.ndarray,
                 rel: np.float32, floor: np.float32) -> np.ndarray:
    """H x W bool on an earlier frame's grid: its world point (``prev_world``, H x W x 3) is
    farther than max(rel * |z|, floor) from the current frame's point (``cur_world``) at the
    nearest pixel to where it is now (``x``, ``y``: H x W, rounded half to even as OpenCV's
    nearest-neighbour remap does); False where either has no point or it left the view."""
    h, w = x.shape
    hc, wc = cur_world.shape[0], cur_world.shape[1]
    out = np.zeros((h, w), np.bool_)
    for v in range(h):
        for u in range(w):
            xs, ys = x[v, u], y[v, u]
            if not (np.isfinite(xs) and np.isfinite(ys)):
                continue
            xi, yi = int(np.rint(xs)), int(np.rint(ys))
            if xi < 0 or xi >= wc or yi < 0 or yi >= hc:
                continue
            dx = cur_world[yi, xi, 0] - prev_world[v, u, 0]
            dy = cur_world[yi, xi, 1] - prev_world[v, u, 1]
            dz = cur_world[yi, xi, 2] - prev_world[v, u, 2]
            squared = dx * dx
            squared += dy * dy
            squared += dz * dz
            out[v, u] = np.sqrt(squared) > max(rel * abs(prev_world[v, u, 2]), floor)
    return out


@numba.njit(cache=True, nogil=True)
def still_explained(candidates: np.ndarray, prev_world: np.ndarray, prev_gray: np.ndarray,
                    T_cw: np.ndarray, K: np.ndarray, depth: np.ndarray, gray: np.ndarray,
                    rel: float, floor: float, photo_max: float) -> np.ndarray:
    """H x W bool on an earlier frame's grid: the ``candidates`` pixels whose world point
    (``prev_world``), kept in place, projects into the current camera (``T_cw``: world to
    camera, intrinsics ``K``) inside the image onto ``depth`` (H x W x 1 float32, bilinear)
    within max(rel * z, floor) of its own depth and onto a ``gray`` level (H x W x 1 float32)
    within ``photo_max`` of its own (``prev_gray``)."""
    h, w = depth.shape[0], depth.shape[1]
    out = np.zeros(candidates.shape, np.bool_)
    z_at = np.empty(1, np.float32)
    g_at = np.empty(1, np.float32)
    for v in range(candidates.shape[0]):
        for u in range(candidates.shape[1]):
            if not candidates[v, u]:
                continue
            x = np.float64(prev_world[v, u, 0])
            y = np.float64(prev_world[v, u, 1])
            z = np.float64(prev_world[v, u, 2])
            xc = T_cw[0, 0] * x + T_cw[0, 1] * y + T_cw[0, 2] * z + T_cw[0, 3]
            yc = T_cw[1, 0] * x + T_cw[1, 1] * y + T_cw[1, 2] * z + T_cw[1, 3]
            zc = T_cw[2, 0] * x + T_cw[2, 1] * y + T_cw[2, 2] * z + T_cw[2, 3]
            pu = np.float32(K[0, 0] * xc / zc + K[0, 2])
            pv = np.float32(K[1, 1] * yc / zc + K[1, 2])
            if not (pu >= -0.5 and pu < w - 0.5 and pv >= -0.5 and pv < h - 0.5):
                continue
            bilinear_at(depth, pu, pv, z_at)
            bilinear_at(gray, pu, pv, g_at)
            out[v, u] = (abs(z_at[0] - zc) <= max(rel * zc, floor)
                         and abs(g_at[0] - np.float32(prev_gray[v, u])) <= photo_max)
    return out


@numba.njit(cache=True, nogil=True)
def splat(mask: np.ndarray, x: np.ndarray, y: np.ndarray, positions: bool) -> np.ndarray:
    """H x W uint8: 1 at the pixel nearest to where each pixel of ``mask`` is now, inside the
    image: at ``(x, y)`` (H x W each) when ``positions``, else moved by the offsets ``(x, y)``
    (a flow). Positions are rounded (half to even) as the offsets ``x - u``, ``y - v`` would
    be (float32), so that both give the same mask."""
    h, w = mask.shape
    out = np.zeros((h, w), np.uint8)
    for v in range(h):
        for u in range(w):
            if not mask[v, u]:
                continue
            du, dv = x[v, u], y[v, u]
            if positions:
                du, dv = du - np.float32(u), dv - np.float32(v)
            tu = np.rint(u + np.float64(du))
            tv = np.rint(v + np.float64(dv))
            if tu >= 0 and tu < w and tv >= 0 and tv < h:
                out[int(tv), int(tu)] = 1
    return out
