"""Fixed (not learned) scene-flow prior of the motion decoder: where a source pixel went.

Why: trained on its own, the motion head's cross-attention over 16 x 16-pixel tokens did not
resolve the motion of small objects, and it learned to predict no motion anywhere (median |dP|
0.1 % of the truth on a development seed, docs/history.md). Like the plane-sweep cost volume for
depth, this gives it a matching signal that needs no training and transfers to real images:
dense optical flow (DIS) started from the flow a static scene would show (the source depth and
the relative pose), so DIS only has to find the objects' own motion. Where the flow leaves the
static prediction by more than a few pixels the point moved: its displacement is the 3D point of
the target depth at the matched pixel minus its source point. Static points get exactly zero.
The head learns a residual on top (its last layer starts at zero).

Units: lengths in the *source* frame's normalised units; pixels of the full H x W image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fourd_ros.core.flow import DisFlow

PRIOR_CHANNELS = 4  # displacement (3), residual flow length (pixels / 8)
PRIOR_DIS = DisFlow('medium')  # the flow the prior was trained with


@dataclass
class MotionGeometry:
    """Two frames' geometry, for the scene-flow prior (normalised units of the source).

    Attributes:
        src_depth: B x 1 x H x W source depth (0 = invalid).
        tgt_depth: B x 1 x H x W target depth in the source's units (0 = invalid).
        K: B x 3 x 3 intrinsics of both frames, pixels of H x W.
        T_tgt_src: B x 4 x 4 source camera -> target camera.
        flow: B x 2 x H x W where each source pixel is seen in the target (pixel offsets).
        static_flow: B x 2 x H x W the same for a static scene (depth + relative pose).
    """

    src_depth: torch.Tensor
    tgt_depth: torch.Tensor
    K: torch.Tensor
    T_tgt_src: torch.Tensor
    flow: torch.Tensor
    static_flow: torch.Tensor


def _pixels(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(h, device=like.device, dtype=like.dtype),
                          torch.arange(w, device=like.device, dtype=like.dtype), indexing='ij')
    return torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)


@torch.no_grad()
def static_flow(depth: torch.Tensor, K: torch.Tensor, T_tgt_src: torch.Tensor
                ) -> torch.Tensor:
    """B x 2 x H x W flow of a static scene with source `depth` (B x 1 x H x W) seen from a
    camera at `T_tgt_src`; 0 where the depth is invalid or the point falls behind."""
    b, _, h, w = depth.shape
    pix = _pixels(h, w, depth)
    X = (torch.linalg.inv(K) @ pix) * depth.reshape(b, 1, -1)
    q = K @ (T_tgt_src[:, :3, :3] @ X + T_tgt_src[:, :3, 3:])
    ok = (q[:, 2] > 1e-6) & (depth.reshape(b, -1) > 0)
    uv = q[:, :2] / q[:, 2:].clamp(min=1e-6) - pix[None, :2]
    return torch.where(ok[:, None], uv, torch.zeros_like(uv)).reshape(b, 2, h, w)


@torch.no_grad()
def motion_geometry(src_gray: np.ndarray, tgt_gray: np.ndarray, src_depth: torch.Tensor,
                    tgt_depth: torch.Tensor, K: torch.Tensor, T_tgt_src: torch.Tensor,
                    flow: np.ndarray | None = None) -> MotionGeometry:
    """The scene-flow prior's inputs: DIS flow from each source to its target image, started
    from the static flow, unless ``flow`` is given.

    Args:
        src_gray, tgt_gray: B x H x W uint8 grey images.
        src_depth, tgt_depth, K, T_tgt_src: as in `MotionGeometry` (one device).
        flow: B x H x W x 2 float32 source -> target flow already known (e.g. composed from
            frame-to-frame flows over a long gap, where one DIS pass misses fast objects).
    """
    stat = static_flow(src_depth, K, T_tgt_src)
    if flow is None:
        init = stat.permute(0, 2, 3, 1).float().cpu().numpy()
        flow = np.stack([PRIOR_DIS(np.ascontiguousarray(a), np.ascontiguousarray(b), f)
                         for a, b, f in zip(src_gray, tgt_gray, init)])
    return MotionGeometry(src_depth=src_depth, tgt_depth=tgt_depth, K=K, T_tgt_src=T_tgt_src,
                          flow=torch.from_numpy(flow).permute(0, 3, 1, 2).to(stat),
                          static_flow=stat)


@torch.no_grad()
def scene_flow_prior(geo: MotionGeometry, stride: int = 8, min_residual_px: float = 3.0
                     ) -> torch.Tensor:
    """Displacement prior of the source's points at 1 / stride resolution.

    A point moves when its flow leaves the static prediction by more than `min_residual_px`
    (depth and pose errors of a static point stay below it on the 7-Scenes sample's 10-frame
    queries: about 1.5 px); static points get exactly zero.

    Returns:
        B x 4 x H/stride x W/stride: displacement (3, source camera axes) and the residual
        flow length in pixels / 8 (an input feature of about unit size).
    """
    b, _, h, w = geo.src_depth.shape
    pix = _pixels(h, w, geo.src_depth)
    Kinv = torch.linalg.inv(geo.K)
    X = (Kinv @ pix) * geo.src_depth.reshape(b, 1, -1)
    match = pix[None, :2] + geo.flow.reshape(b, 2, -1)
    grid = torch.stack([(match[:, 0] + 0.5) / w * 2 - 1, (match[:, 1] + 0.5) / h * 2 - 1], -1)
    zm = F.grid_sample(geo.tgt_depth, grid[:, None], mode='nearest', padding_mode='zeros',
                       align_corners=False).reshape(b, 1, -1)
    Xm = (Kinv @ torch.cat([match, torch.ones_like(match[:, :1])], 1)) * zm
    R, t = geo.T_tgt_src[:, :3, :3], geo.T_tgt_src[:, :3, 3:]
    disp = R.transpose(1, 2) @ (Xm - t) - X
    residual = (geo.flow - geo.static_flow).norm(dim=1).reshape(b, 1, -1)
    inside = ((match[:, :1] >= 0) & (match[:, :1] <= w - 1) & (match[:, 1:] >= 0)
              & (match[:, 1:] <= h - 1) & (zm > 0) & (geo.src_depth.reshape(b, 1, -1) > 0))
    moving = (residual > min_residual_px) & inside
    disp = torch.where(moving, disp, torch.zeros_like(disp))
    out = torch.cat([disp, residual / 8.0], 1).reshape(b, PRIOR_CHANNELS, h, w)
    return F.avg_pool2d(out, stride)
