"""Plane-sweep ZNCC cost volume between the current frame and cached source frames.

Fixed, not learned: normalised cross-correlation is exposure-invariant and needs no training,
and a soft-argmin over its planes is already a plane-sweep stereo; the network learns to
regularise it, fill low-texture areas and handle moving objects. Depth planes are log-uniform in
the model's normalised units (scene median depth ~ 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def depth_planes(min_depth: float, max_depth: float, planes: int,
                 device: torch.device | None = None) -> torch.Tensor:
    """P log-uniform depth hypotheses (normalised units), near to far."""
    return torch.exp(torch.linspace(math.log(min_depth), math.log(max_depth), planes,
                                    device=device))


def to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W in [0, 1] -> B x 1 x H x W luminance."""
    w = torch.tensor([0.299, 0.587, 0.114], device=rgb.device, dtype=rgb.dtype)
    return (rgb * w[None, :, None, None]).sum(dim=1, keepdim=True)


def matching_gray(rgb: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W in [0, 1] -> B x 1 x H/2 x W/2: the image the cost volume matches (the
    current frame's, and a source's once cached)."""
    return F.avg_pool2d(to_gray(rgb), 2)


def far_source(centres: np.ndarray, centre: np.ndarray, min_baseline: float) -> int:
    """Which earlier frame is the cost volume's far source: the index (into ``centres``, M x 3
    camera centres, oldest first) of the newest one at least ``min_baseline`` from ``centre``,
    else 0 (the oldest: the widest baseline they offer). Any length unit, the same for all.
    The learned backend and training pick by this one rule, so the network is trained on the
    baselines it is given at run time."""
    hits = np.flatnonzero(np.linalg.norm(np.asarray(centres) - centre, axis=1) >= min_baseline)
    return int(hits[-1]) if hits.size else 0


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    # separable box filter: two 1-D passes cost 2k instead of k^2 operations per pixel
    x = F.avg_pool2d(x, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)
    return F.avg_pool2d(x, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)


def local_normalise(gray: torch.Tensor, window: int, floor: float = 0.02) -> torch.Tensor:
    """(I - local mean) / (local std + floor) over window x window pixels.

    The floor keeps flat, textureless areas near zero instead of amplifying their noise.
    """
    mu = _box(gray, window)
    var = (_box(gray * gray, window) - mu * mu).clamp(min=0)
    return (gray - mu) / (var.sqrt() + floor)


@torch.no_grad()
def ncc_cost_volume(ref_gray: torch.Tensor, src_gray: torch.Tensor, T_src_ref: torch.Tensor,
                    K: torch.Tensor, planes: torch.Tensor, window: int = 5, pool: int = 4
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised cross-correlation of the current frame with each source through each plane.

    Both images are locally normalised once (mean and std over ``window``), the source is
    warped through every plane at full resolution (sub-pixel disparities survive), and the
    per-pixel products are averaged over pool x pool blocks: a pooled NCC, exposure-invariant,
    at 1 / pool resolution. This costs one warp and one product per plane and pixel; a per-plane
    ZNCC window cost 10x more (measured, docs/learned-model.md).

    Args:
        ref_gray: B x 1 x H x W reference (current) image in [0, 1].
        src_gray: B x S x 1 x H x W source images.
        T_src_ref: B x S x 4 x 4 reference-camera -> source-camera transforms (normalised units).
        K: B x 3 x 3 intrinsics in pixels of H x W (shared by reference and sources).
        planes: P depth hypotheses (reference camera z, normalised units).
        window: normalisation window side in pixels.
        pool: output stride (H and W must be multiples of it).

    Returns:
        (B x P x H/pool x W/pool correlation, about [-1, 1], averaged over the sources that see
         the pixel; B x 1 x H/pool x W/pool fraction of sources that see it).
    """
    b, s, _, h, w = src_gray.shape
    p = planes.shape[0]
    dev, dt = ref_gray.device, ref_gray.dtype
    v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=dt),
                          torch.arange(w, device=dev, dtype=dt), indexing='ij')
    pix = torch.stack([u, v, torch.ones_like(u)], dim=0).reshape(3, -1)          # 3 x HW
    Kd = K.to(dt)
    rays = torch.linalg.inv(Kd) @ pix                                              # B x 3 x HW
    R = T_src_ref[..., :3, :3].to(dt)
    t = T_src_ref[..., :3, 3].to(dt)
    # project plane points: K (z R r + t) = z (K R r) + K t
    KRr = Kd[:, None] @ (R @ rays[:, None])                                        # B S 3 HW
    Kt = (Kd[:, None] @ t[..., None])                                              # B S 3 1
    pts = planes.to(dt)[None, None, :, None, None] * KRr[:, :, None] + Kt[:, :, None]
    z = pts[:, :, :, 2]
    zc = z.clamp(min=1e-6)
    gx = pts[:, :, :, 0] / zc * (2.0 / (w - 1)) - 1
    gy = pts[:, :, :, 1] / zc * (2.0 / (h - 1)) - 1
    inside = ((gx.abs() <= 1) & (gy.abs() <= 1) & (z > 1e-3)).reshape(b, s, p, h, w)
    grid = torch.stack([gx, gy], dim=-1).reshape(b * s, p * h, w, 2)
    nsrc = local_normalise(src_gray.reshape(b * s, 1, h, w), window)
    warped = F.grid_sample(nsrc, grid, mode='bilinear', padding_mode='zeros',
                           align_corners=True).reshape(b, s, p, h, w)
    nref = local_normalise(ref_gray, window)[:, None]                              # B 1 1 H W
    weight = inside.to(dt)
    prod = (warped * nref * weight).sum(dim=1)                                     # B P H W
    count = weight.sum(dim=1)
    prod4 = F.avg_pool2d(prod, pool)
    count4 = F.avg_pool2d(count, pool)
    cost = prod4 / count4.clamp(min=1e-3)
    seen = count4.amax(dim=1, keepdim=True) / max(1, s)
    return cost, seen
