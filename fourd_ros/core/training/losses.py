"""Losses of the design brief (docs/learned-model.md, "Training") and the module that runs the
model over one training batch.

- depth: aleatoric confidence-weighted (``C * err - alpha * log C``) log-depth error plus a
  spatial-gradient term;
- camera: translation L1 + rotation matrix L1 relative to the anchor (no confidence), and the
  focal length's log error;
- motion: confidence-weighted displacement error plus a temporal-gradient (velocity) term; in
  most iterations only on the 25 % of points that move most, so static points do not drown it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fourd_ros.core.model.cost_volume import matching_gray, to_gray
from fourd_ros.core.model.scene_flow import motion_geometry
from fourd_ros.core.model.s4rc import S4RC, SourceViews
from fourd_ros.core.training.data import Batch


@dataclass(frozen=True)
class LossConfig:
    """Loss weights.

    Attributes:
        alpha: weight of ``-log C`` in the aleatoric terms.
        camera: weight of the camera term.
        focal: weight of the focal-length term (|log f / f*|).
        motion: weight of the motion term.
        top_moving_frac: share of most-moving points supervised in `top_moving_prob` of steps.
        top_moving_prob: share of steps that supervise only the most-moving points.
        min_moving: a point counts among the most-moving only if it moves at least this much
            (normalised units): in a scene where few points move, the top share is otherwise
            mostly static points, and an L1-type error is then minimised by predicting no
            motion anywhere (what the first checkpoints' motion head learned).
    """

    alpha: float = 0.2
    camera: float = 0.5
    focal: float = 0.5
    motion: float = 2.0
    top_moving_frac: float = 0.25
    top_moving_prob: float = 0.8
    min_moving: float = 0.01


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def depth_loss(depth: torch.Tensor, conf: torch.Tensor, gt: torch.Tensor, alpha: float
               ) -> torch.Tensor:
    err = (torch.log(depth) - torch.log(gt)).abs()
    gx, gy = _grad(torch.log(depth) - torch.log(gt))
    return (conf * err - alpha * torch.log(conf)).mean() + gx.abs().mean() + gy.abs().mean()


def camera_loss(T: torch.Tensor, T_gt: torch.Tensor) -> torch.Tensor:
    return ((T[:, :3, 3] - T_gt[:, :3, 3]).abs().mean()
            + (T[:, :3, :3] - T_gt[:, :3, :3]).abs().mean())


def sample_to_grid(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Values at the centres of stride x stride cells (B x C x H x W -> H/stride x W/stride)."""
    o = stride // 2
    return x[..., o::stride, o::stride]


def motion_loss(dP: list[torch.Tensor], conf: list[torch.Tensor], gt: list[torch.Tensor],
                cfg: LossConfig, top_only: bool) -> torch.Tensor:
    """dP, conf, gt: per target tau, B x 3 (1) x h x w; errors in normalised units."""
    gt_s = torch.stack(gt, 1)                     # B T 3 h w
    pred = torch.stack(dP, 1)
    c = torch.stack(conf, 1)[:, :, 0]
    err = (pred - gt_s).norm(dim=2)               # B T h w
    if top_only:
        mag = gt_s.norm(dim=2).amax(dim=1)        # B h w: how far each point moves at most
        thr = torch.quantile(mag.flatten(1), 1.0 - cfg.top_moving_frac, dim=1)
        top = (mag >= thr[:, None, None]) & (mag >= cfg.min_moving)
        # a sample with nothing moving is supervised everywhere (its points must stay put)
        top |= ~top.flatten(1).any(1)[:, None, None]
        mask = top.float()[:, None].expand_as(err)
    else:
        mask = torch.ones_like(err)
    aleatoric = (c * err - cfg.alpha * torch.log(c)) * mask
    loss = aleatoric.sum() / mask.sum().clamp(min=1)
    if pred.shape[1] > 1:
        vel = ((pred[:, 1:] - pred[:, :-1]) - (gt_s[:, 1:] - gt_s[:, :-1])).norm(dim=2)
        loss = loss + (vel * mask[:, 1:]).sum() / mask[:, 1:].sum().clamp(min=1)
    return loss


def relative_transform(T_anchor_src: torch.Tensor, T_anchor_ref: torch.Tensor) -> torch.Tensor:
    """B x 4 x 4 reference-camera -> source-camera from two camera-to-anchor poses."""
    return torch.linalg.inv(T_anchor_src) @ T_anchor_ref


class TrainingStep(nn.Module):
    """Runs the model causally over a batch of sub-clips and returns the losses (DDP-wrappable).

    Frame k attends to the cached latents of the last ``context_frames`` frames before it (the
    backend's window) and matches against the last ``max_sources`` of them through the noisy
    poses, or, when the batch has far sources, against its far source and the previous frame
    (as the backend does); view ``batch.query`` is decoded to every frame's time.
    """

    def __init__(self, model: S4RC, cfg: LossConfig, context_frames: int = 3) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.context_frames = context_frames

    def forward(self, batch: Batch, top_only: bool) -> dict[str, torch.Tensor]:
        m = self.model
        n = batch.rgb.shape[1]
        latents, depths = [], []
        ld, lc, lf = [], [], []
        for k in range(n):
            # (gray image, noisy camera-to-anchor pose) of each cost-volume source
            views = [(latents[i].gray, batch.T_noisy[:, i])
                     for i in range(max(0, k - m.config.max_sources), k)]
            if views and batch.far_rgb is not None:
                # as at run time: the far source the backend's rule picks, and the previous
                # frame (the same frame twice when it is the far one: the cost volume averages
                # over its sources, so that equals one source)
                views = [(matching_gray(batch.far_rgb[:, k]), batch.T_far[:, k]), views[-1]]
            sources = None
            if views:
                sources = SourceViews(
                    gray=torch.stack([g for g, _ in views], 1),
                    T_src_ref=torch.stack([relative_transform(T, batch.T_noisy[:, k])
                                           for _, T in views], 1))
            out = m.encode(batch.rgb[:, k], batch.K, batch.t[:, k],
                           latents[-self.context_frames:], sources, is_anchor=k == 0)
            lf.append((torch.log(out.focal) - torch.log(batch.K[:, 0, 0])).abs().mean())
            ld.append(depth_loss(out.depth, out.confidence, batch.depth[:, k], self.cfg.alpha))
            if k > 0:
                lc.append(camera_loss(out.T_anchor_cam, batch.T_anchor_cam[:, k]))
            latents.append(out.latent)
            depths.append(out.depth.detach())
        q = batch.query
        preds, confs, gts = [], [], []
        if m.config.motion_prior:
            gray = (to_gray(batch.rgb.flatten(0, 1)) * 255).round().clamp(0, 255)
            gray = gray.to(torch.uint8).reshape(*batch.rgb.shape[:2], *batch.rgb.shape[-2:])
            gray = gray.cpu().numpy()
        for tau in range(n):
            geometry = None
            if m.config.motion_prior:
                # the scene-flow prior sees what the backend gives it: predicted depths (here
                # without the backend's scale-to-map step) and noisy poses
                geometry = motion_geometry(
                    gray[:, q], gray[:, tau], depths[q], depths[tau], batch.K,
                    relative_transform(batch.T_noisy[:, tau], batch.T_noisy[:, q]))
            dP, conf = m.motion(latents[q], latents[tau], geometry)
            preds.append(dP)
            confs.append(conf)
            gts.append(sample_to_grid(batch.dP[:, tau], 8))
        lm = motion_loss(preds, confs, gts, self.cfg, top_only)
        l_depth = torch.stack(ld).mean()
        l_cam = torch.stack(lc).mean() if lc else l_depth * 0
        l_focal = torch.stack(lf).mean()
        total = (l_depth + self.cfg.camera * l_cam + self.cfg.focal * l_focal
                 + self.cfg.motion * lm)
        with torch.no_grad():
            d, g = out.depth, batch.depth[:, -1]
            s = torch.median(g.flatten(1), 1).values / torch.median(d.flatten(1), 1).values
            absrel = ((d * s[:, None, None, None] - g).abs() / g).mean()
            epe = (torch.stack(preds, 1) - torch.stack(gts, 1)).norm(dim=2).mean()
        return {'loss': total, 'depth': l_depth.detach(), 'camera': l_cam.detach(),
                'focal': l_focal.detach(),
                'motion': lm.detach(), 'absrel_last': absrel, 'epe': epe}
