"""The S-4RC streaming model: causal encoder, geometry head, camera head and motion head.

Units and frames: images are RGB in [0, 1]; lengths are *normalised* (the caller divides by a
scene scale so that the median depth is about 1, and multiplies outputs back); poses map camera
coordinates (OpenCV axes) to the anchor camera's; times are seconds from the stream's anchor.

Per frame, ``encode`` computes patch tokens Z (one per 16 x 16 pixels), a camera token and a time
token; blocks alternate frame-wise self-attention and *causal* global attention in which the
frame attends to itself and to cached keys/values of the context frames given by the caller.
Nothing of a past frame is recomputed: its keys/values per layer are part of its `FrameLatent`.
``motion`` decodes where the points of a source frame are at a target frame's time,
``dP = D_m(Z_q, T_tau, Z_tau)``, as displacements in the source camera's axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fourd_ros.core.model.config import ModelConfig
from fourd_ros.core.model.cost_volume import depth_planes, matching_gray, ncc_cost_volume
from fourd_ros.core.model.scene_flow import MotionGeometry, PRIOR_CHANNELS, scene_flow_prior
from fourd_ros.core.model.layers import (AdaLN, Attention, conv_block, CrossAttention, Mlp,
                                         sincos_2d, time_embedding)


@dataclass
class SourceViews:
    """Cached frames matched against the current one (normalised units).

    Attributes:
        gray: B x S x 1 x H/2 x W/2 source luminance in [0, 1] (`FrameLatent.gray`).
        T_src_ref: B x S x 4 x 4 current-camera -> source-camera transforms.
    """

    gray: torch.Tensor
    T_src_ref: torch.Tensor


@dataclass
class FrameLatent:
    """What a frame leaves in the cache (all tensors on the inference device).

    Attributes:
        tokens: B x M x D final patch tokens Z.
        camera: B x D final camera token.
        time: B x D time token T (embedding of the frame's time).
        feat8: B x C x H/8 x W/8 features for the motion head's dense upsampling.
        keys, values: per global-attention layer, B x heads x (M + 2) x D/heads.
        gray: B x 1 x H/2 x W/2 luminance (a cost-volume source for later frames).
        t: B frame times in seconds.
    """

    tokens: torch.Tensor
    camera: torch.Tensor
    time: torch.Tensor
    feat8: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    gray: torch.Tensor
    t: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the latent holds (for memory accounting and release)."""
        return [self.tokens, self.camera, self.time, self.feat8, self.gray, self.t,
                *self.keys, *self.values]


@dataclass
class FrameOutput:
    """Geometry of one frame (normalised units).

    Attributes:
        depth: B x 1 x H x W depth along the optical axis.
        confidence: B x 1 x H x W aleatoric confidence, >= 1 (1 = no confidence).
        T_anchor_cam: B x 4 x 4 camera-to-anchor pose from the camera head.
        focal: B focal length in pixels predicted by the camera head (fx = fy).
        latent: the record to cache.
        attended_tokens: keys/values attended by each global-attention query (context + own).
    """

    depth: torch.Tensor
    confidence: torch.Tensor
    T_anchor_cam: torch.Tensor
    focal: torch.Tensor
    latent: FrameLatent
    attended_tokens: int


def half_resolution_intrinsics(K: torch.Tensor) -> torch.Tensor:
    """B x 3 x 3 intrinsics of an image 2x2-average-pooled (pixel centres at integers)."""
    Kh = K.clone()
    Kh[:, :2, :2] = K[:, :2, :2] / 2
    Kh[:, :2, 2] = (K[:, :2, 2] + 0.5) / 2 - 0.5
    return Kh


def rotation_from_6d(x: torch.Tensor) -> torch.Tensor:
    """B x 6 -> B x 3 x 3 rotation (Gram-Schmidt of two columns, Zhou et al. 2019)."""
    a, b = x[:, :3], x[:, 3:]
    c1 = F.normalize(a, dim=1)
    c2 = F.normalize(b - (c1 * b).sum(1, keepdim=True) * c1, dim=1)
    c3 = torch.cross(c1, c2, dim=1)
    return torch.stack([c1, c2, c3], dim=2)


class EncoderBlock(nn.Module):
    """Frame-wise self-attention, then causal global attention over cached context."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.frame_attn = Attention(dim, heads)
        self.n2 = nn.LayerNorm(dim)
        self.global_attn = Attention(dim, heads)
        self.n3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor, context: list[tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = x + self.frame_attn(self.n1(x))[0]
        out, kv = self.global_attn(self.n2(x), context)
        x = x + out
        return x + self.mlp(self.n3(x)), kv


class MotionLayer(nn.Module):
    """AdaLN(time)-conditioned self-attention over source tokens, cross-attention to target."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.n1 = AdaLN(dim, dim)
        self.self_attn = Attention(dim, heads)
        self.n2 = nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, heads)
        self.n3 = AdaLN(dim, dim)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor, target: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.n1(x, cond))[0]
        x = x + self.cross(self.n2(x), target)
        return x + self.mlp(self.n3(x, cond))


class S4RC(nn.Module):
    """Streaming 4D reconstruction model (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.dim
        self.register_buffer('planes', depth_planes(c.min_depth, c.max_depth, c.planes),
                             persistent=False)
        # stem: 1/2 -> 1/4 (+ cost volume) -> 1/8 -> 1/16 tokens
        self.s2 = conv_block(3, 32, 2)
        self.s4 = conv_block(32, 64, 2)
        aggregated = c.planes if c.cost_aggregation > 1 else 0
        self.fuse4 = conv_block(64 + c.planes + aggregated + 1, 64)
        self.s8 = conv_block(64, 96, 2)
        self.s16 = nn.Conv2d(96, d, 3, 2, 1)
        self.anchor_token = nn.Parameter(torch.zeros(1, 1, d))
        self.camera_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.anchor_token, std=0.02)
        nn.init.normal_(self.camera_token, std=0.02)
        self.time_proj = nn.Linear(d, d)
        self.blocks = nn.ModuleList(EncoderBlock(d, c.heads) for _ in range(c.blocks))
        self.norm = nn.LayerNorm(d)
        # geometry head: tokens -> 1/8 (+ stem) -> 1/4 (+ stem, cost) -> plane logits + conf
        self.up8 = conv_block(d + 96, 96)
        self.up4 = conv_block(96 + 64, 48)
        self.depth_out = nn.Conv2d(48, c.planes + 1, 3, 1, 1)
        self.cost_gain = nn.Parameter(torch.tensor(8.0))
        self.feat8_out = nn.Conv2d(96, c.feat8, 1)
        self.camera_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 10))
        # motion head
        self.motion_in = nn.Linear(d, d)
        self.motion_time = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, d))
        self.motion_layers = nn.ModuleList(MotionLayer(d, c.heads)
                                           for _ in range(c.motion_layers))
        self.motion_norm = nn.LayerNorm(d)
        self.motion_tok = nn.Linear(d, 64)
        self.motion_up = conv_block(64 + c.feat8 + (PRIOR_CHANNELS if c.motion_prior else 0), 64)
        self.motion_out = nn.Conv2d(64, 4, 3, 1, 1)
        nn.init.zeros_(self.motion_out.weight)
        nn.init.zeros_(self.motion_out.bias)

    # ------------------------------------------------------------------ encoder + geometry
    def encode(self, rgb: torch.Tensor, K: torch.Tensor, t: torch.Tensor,
               context: list[FrameLatent], sources: SourceViews | None = None,
               is_anchor: bool = False) -> FrameOutput:
        """Encode one frame given the cached context (oldest first) and cost-volume sources.

        Args:
            rgb: B x 3 x H x W in [0, 1], sides multiples of 16 (the config's size is the one
                it is deployed at; training may use smaller images).
            K: B x 3 x 3 intrinsics in pixels of H x W.
            t: B times in seconds since the stream started (kept in the latent for the
                motion head's time differences).
            context: cached latents this frame attends to (bounded by the caller).
            sources: cost-volume sources, or None (no matching: monocular cues only).
            is_anchor: the first frame of the stream (gets the anchor token).
        """
        c = self.config
        b, _, h, w = rgb.shape
        if w % 16 or h % 16:
            raise ValueError(f'image size {w}x{h} must be a multiple of 16')
        # matching runs at half resolution (bilinear warps keep sub-pixel disparities): the
        # full-resolution sweep cost 4x more for the same 1/4-resolution output
        gray = matching_gray(rgb)
        if sources is not None and sources.gray.shape[1] > 0:
            cost4, seen4 = ncc_cost_volume(gray, sources.gray, sources.T_src_ref,
                                           half_resolution_intrinsics(K), self.planes,
                                           c.zncc_window, pool=2)
        else:
            cost4 = rgb.new_zeros(b, c.planes, h // 4, w // 4)
            seen4 = rgb.new_zeros(b, 1, h // 4, w // 4)
        # a pooled NCC over 2 x 2 half-resolution pixels is too noisy to pick a plane from; a
        # 9 x 9 box over it is a usable plane sweep on its own (winner-take-all AbsRel 0.10 vs
        # 0.79 on the Middlebury pair, docs/history.md)
        cost_in = [cost4]
        if c.cost_aggregation > 1:
            k = c.cost_aggregation
            cost4 = F.avg_pool2d(cost4, k, stride=1, padding=k // 2, count_include_pad=False)
            cost_in.append(cost4)
        f2 = self.s2(rgb - 0.5)
        f4 = self.fuse4(torch.cat([self.s4(f2), *cost_in, seen4], dim=1))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        gh, gw = f16.shape[-2:]
        tokens = f16.flatten(2).transpose(1, 2) + sincos_2d(gh, gw, c.dim, rgb.device)[None]
        # the time token embeds time since the oldest attended frame, so it stays in the range
        # seen in training however long the stream runs (latent.t keeps the stream time)
        t_ref = context[0].t if context else t
        time_tok = self.time_proj(time_embedding(t - t_ref, c.dim))[:, None]
        cam = (self.anchor_token if is_anchor else self.camera_token).expand(b, -1, -1)
        x = torch.cat([cam, time_tok, tokens], dim=1)
        keys, values = [], []
        for li, block in enumerate(self.blocks):
            x, (k, v) = block(x, [(e.keys[li], e.values[li]) for e in context])
            keys.append(k)
            values.append(v)
        x = self.norm(x)
        cam_out, time_out, z = x[:, 0], x[:, 1], x[:, 2:]
        zmap = z.transpose(1, 2).reshape(b, c.dim, gh, gw)
        g8 = self.up8(torch.cat([F.interpolate(zmap, scale_factor=2, mode='bilinear',
                                               align_corners=False), f8], dim=1))
        g4 = self.up4(torch.cat([F.interpolate(g8, scale_factor=2, mode='bilinear',
                                               align_corners=False), f4], dim=1))
        out = self.depth_out(g4)
        logits = out[:, :c.planes] + self.cost_gain * cost4
        prob = torch.softmax(logits, dim=1)
        log_depth = (prob * torch.log(self.planes)[None, :, None, None]).sum(1, keepdim=True)
        log_depth = F.interpolate(log_depth, size=(h, w), mode='bilinear', align_corners=False)
        conf = 1.0 + torch.exp(F.interpolate(out[:, c.planes:], size=(h, w), mode='bilinear',
                                             align_corners=False).clamp(max=10.0))
        cam_vec = self.camera_head(cam_out)
        T = torch.eye(4, device=rgb.device, dtype=rgb.dtype).repeat(b, 1, 1)
        eye6 = torch.tensor([1.0, 0, 0, 0, 1.0, 0], device=rgb.device, dtype=rgb.dtype)
        T[:, :3, :3] = rotation_from_6d(cam_vec[:, :6] + eye6)
        T[:, :3, 3] = cam_vec[:, 6:9]
        # focal as a multiple of the image width, around a 60 deg field of view
        focal = w * 0.866 * torch.exp(cam_vec[:, 9])
        latent = FrameLatent(tokens=z, camera=cam_out, time=time_out, feat8=self.feat8_out(g8),
                             keys=keys, values=values, gray=gray, t=t.float())
        attended = x.shape[1] * (1 + len(context))
        return FrameOutput(depth=torch.exp(log_depth), confidence=conf, T_anchor_cam=T,
                           focal=focal, latent=latent, attended_tokens=attended)

    # ------------------------------------------------------------------ motion
    def motion(self, source: FrameLatent, target: FrameLatent,
               geometry: MotionGeometry | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense displacement of the source frame's points from its time to the target's.

        Args:
            source, target: the two frames' cached latents.
            geometry: their depths and relative pose, for the scene-flow prior (models with
                ``config.motion_prior``; without it the prior is zero: no motion known).

        Returns:
            (B x 3 x H/8 x W/8 displacement in the source camera's axes, normalised units;
             B x 1 x H/8 x W/8 aleatoric confidence >= 1).
        """
        c = self.config
        b = source.tokens.shape[0]
        dt = time_embedding(target.t - source.t, c.dim)
        cond = self.motion_time(torch.cat([target.time, dt], dim=1))
        x = self.motion_in(source.tokens)
        for layer in self.motion_layers:
            x = layer(x, target.tokens, cond)
        gh, gw = source.feat8.shape[-2] // 2, source.feat8.shape[-1] // 2
        m = self.motion_tok(self.motion_norm(x)).transpose(1, 2).reshape(b, 64, gh, gw)
        m = F.interpolate(m, scale_factor=2, mode='bilinear', align_corners=False)
        inputs = [m, source.feat8]
        prior = None
        if c.motion_prior:
            if geometry is not None:
                prior = scene_flow_prior(geometry, stride=8)
            else:
                prior = m.new_zeros(b, PRIOR_CHANNELS, *m.shape[-2:])
            inputs.append(prior)
        out = self.motion_out(self.motion_up(torch.cat(inputs, dim=1)))
        dP = out[:, :3] if prior is None else prior[:, :3] + out[:, :3]
        return dP, 1.0 + torch.exp(out[:, 3:].clamp(max=10.0))
