"""Learned monocular backend: the S-4RC model behind the streaming engine.

Per frame (`process`):
1. pose from geometry (`mono_pose.LandmarkTracker`: persistent landmarks tracked by KLT, PnP,
   re-triangulated once they have parallax, seeded on static and confident pixels only; constant
   velocity when tracking fails);
2. the model encodes the frame attending to the cached context frames' keys/values and matches
   it against up to ``max_sources`` cached frames through that pose (plane-sweep cost volume);
3. depth = model depth x the stream scale (the previous frame's median depth: the model works
   at unit median depth, so the scale carries over from frame to frame); frame 0 sets scale 1;
   then brought to the map's landmarks at the PnP inliers: their median ratio (the map's
   scale) and a smooth correction towards them (`landmark_depth`);
4. dynamic mask from the decoded motion to an earlier cached frame (|dP| > reported_rel x z;
   no landmark is seeded where |dP| > dynamic_rel x z),
   its connected parts as the moving segments, and the scene flow: the displacement across
   the view ray that the optical flow to that frame shows, over the time between them;
5. with the floor given (`Frame.ground`, a ground robot), the map scaled to metres from the
   floor's image motion and the camera's known height (`ground_scale`); with a depth sensor
   (`LearnedConfig.scale_from_depth`), the landmarks start at its points (metres from the
   first frame) and the depth is brought to its scale.

Outputs are up to an unknown scale (``metric`` False) unless the floor or a depth sensor makes
them metres.
Cached latent per frame: the model's `FrameLatent` (tokens, keys/values per layer, 1/8
features, half-resolution grey) on the inference device, plus a uint8 grey image, the scale and
the depth map on the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from fourd_ros.core.backends.landmark_depth import (fit_to_landmarks, LandmarkDepthConfig,
                                                    LandmarkDepthFit, NO_FIT)
from fourd_ros.core.backends.ground_scale import fit_floor, floor_pixels, GroundScaleConfig
from fourd_ros.core.backends.metric_scale import MetricScale, MetricScaleConfig, depth_sensor_scale
from fourd_ros.core.backends.mono_pose import LandmarkTracker, MonoPoseConfig, PoseEstimate
from fourd_ros.core.engine.backend import BackendError, CacheEntry, MotionEstimate
from fourd_ros.core.engine.objects import label_moving_segments
from fourd_ros.core.flow import CachedFlows, FlowLink, half_flow
from fourd_ros.core.geometry import (finite_rows, invert_pose, project, sample_bilinear,
                                     sample_depth, transform_points, unproject_depth,
                                     unproject_pixels, vector_norm)
from fourd_ros.core.model.checkpoint import load_model
from fourd_ros.core.model.cost_volume import far_source
from fourd_ros.core.model.s4rc import FrameLatent, S4RC, SourceViews
from fourd_ros.core.model.scene_flow import motion_geometry, MotionGeometry, PRIOR_DIS
from fourd_ros.core.types import Frame, FrameResult, GroundPlane, PointStatus


@dataclass(frozen=True)
class LearnedConfig:
    """Learned backend settings (lengths relative to the scene depth: the output is up to scale).

    Attributes:
        width: processing width in pixels (0 = the width in the model's config).
        context_frames: most recent cached frames the encoder attends to ...
        context_keyframes: ... besides the newest this many older keyframes ...
        context_anchor: ... and the stream's first frame while it is cached. Off by default:
            the model is trained on short sub-clips (each frame attends to the 3 before it),
            and the anchor with 2 keyframes made the camera path worse on 7-Scenes and a
            held-out seed (docs/history.md, session 28).
        source_baseline: a cost-volume source should be at least this far from the current
            camera, as a fraction of the median depth ...
        source_search: ... the newest such among the last this many cached frames (else the
            oldest of them), besides the previous frame.
        dynamic_rel: a point moves if |dP| > dynamic_rel x its depth (DPM-style threshold):
            queries keep displacements above it, and no landmark is seeded on such pixels.
        reported_rel: the published motion (dynamic mask, segments, objects, scene flow) needs
            |dP| > reported_rel x depth: on a static room (7-Scenes) the monocular depth's
            errors make 3 % of the pixels exceed 0.02 and put an object on 29 % of the frames
            (0.1: 3 %; docs/history.md).
        max_moving_share: when more than this share of a frame's pixels exceed
            ``dynamic_rel``, they do not stop landmarks from being seeded there.
        occlusion_rel: a point is hidden if the target depth is closer than its own by this
            fraction.
        keyframe_baseline: a frame is a keyframe when it is this far (fraction of median
            depth) from the last keyframe.
        pose_pixel_share: share of a frame's pixels, most confident first, where new
            landmarks of the geometric pose may be seeded (static pixels only).
        min_segment_pixels: smallest moving segment (pixels) reported in ``segments``.
        pose: geometric pose settings.
        landmark_depth: how each depth map is brought to the landmarks (scale + smooth
            correction).
        ground: how a frame's ground plane (`Frame.ground`) measures the map's scale.
        scale: how the floor's per-frame scale estimates make the map metric and keep it so.
        sensor_min_pixels: fewest pixels with both a sensor depth and a static map depth that
            a depth sensor's estimate needs.
        scale_from_depth: frames that carry a registered depth image (`Frame.depth`: an RGB-D
            camera) make the output metric with it (new landmarks start at the sensor's
            points and each frame's learned depth is brought to the sensor's scale); False:
            the depth is ignored (a monocular evaluation on RGB-D data).
        rescale_epoch_log: a scale correction larger than this (log) starts a new "epoch":
            cost-volume sources and the motion decoder's reference are taken only from the
            frames since (earlier poses are in the old units).
    """

    width: int = 0
    context_frames: int = 3
    context_keyframes: int = 0
    context_anchor: bool = False
    source_baseline: float = 0.03
    source_search: int = 8
    dynamic_rel: float = 0.02
    reported_rel: float = 0.1
    max_moving_share: float = 0.5
    occlusion_rel: float = 0.1
    keyframe_baseline: float = 0.05
    pose_pixel_share: float = 0.7
    min_segment_pixels: int = 64
    pose: MonoPoseConfig = MonoPoseConfig()
    landmark_depth: LandmarkDepthConfig = LandmarkDepthConfig()
    ground: GroundScaleConfig = GroundScaleConfig()
    scale: MetricScaleConfig = MetricScaleConfig()
    sensor_min_pixels: int = 300
    scale_from_depth: bool = False
    rescale_epoch_log: float = 0.05


@dataclass
class LearnedLatent(FlowLink):
    """The learned backend's cached record of one frame; its `FlowLink` flow (from the frame
    before, DIS started from the static flow) is what queries over several frames follow.

    Attributes:
        model: the model's latent (tokens, keys/values per layer, 1/8 features, half-resolution
            grey) on the inference device.
        gray: H x W uint8 intensity (host).
        depth: H x W float32 depth in map units (host).
        scale: model units -> map units of this frame (the median factor; ``depth`` also
            carries the smooth correction towards the landmarks).
        scale_next: the scale the next frame starts from (this frame's median static depth).
    """

    model: FrameLatent
    gray: np.ndarray
    depth: np.ndarray
    scale: float
    scale_next: float


def _relative_confidence(aleatoric: np.ndarray) -> np.ndarray:
    """H x W confidence in [0, 1] from the model's aleatoric confidence (>= 1), relative to the
    frame: 0 at its 5th percentile, 1 at its 95th. The aleatoric value only ranks pixels within
    a frame (its level follows the training's weighting), while tracks and the map cloud select
    pixels by fixed thresholds on [0, 1] (0.2 and 0.5): with 1 - 1/C no pixel passed them on
    7-Scenes and the stream had no tracks."""
    lo, hi = np.percentile(aleatoric, [5.0, 95.0])
    return np.clip((aleatoric - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)


def lateral_displacement(depth: np.ndarray, K: np.ndarray, T_ref_cur: np.ndarray,
                         flow: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """H x W x 3 float32 displacement (reference camera axes, depth units) of each pixel's
    point from now to the reference frame, across the reference view ray only: the point
    carried into the reference camera as if static (``T_ref_cur``, 4x4) is moved, at its own
    depth there, to where the optical flow ``flow`` (H x W x 2, current -> reference pixels)
    sees it. ``depth`` is H x W (NaN / 0 = none: zero displacement), ``K`` the intrinsics of
    both frames; only the pixels of ``where`` (H x W bool, None = all) are computed, the
    others are zero."""
    out = np.zeros((*depth.shape, 3), np.float32)
    v, u = np.nonzero(np.ones(depth.shape, bool) if where is None else where)
    z = depth[v, u]
    ok = z > 0
    v, u = v[ok], u[ok]
    pixels = np.stack([u, v], axis=-1).astype(np.float32)
    static = transform_points(T_ref_cur, unproject_pixels(pixels, z[ok], K).astype(np.float32))
    seen = unproject_pixels(pixels + flow[v, u], static[:, 2], K)
    out[v, u] = seen - static
    return out


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class LearnedBackend:
    """S-4RC monocular backend (see the module docstring). Thread safety: `motion` may run in
    other threads while `process` runs (the model is only read; torch inference is
    re-entrant); `reset` must not run concurrently with `process` (the engine serialises).
    Running out of device memory raises `BackendError` naming the device and what to lower;
    the frame or query is dropped and the stream goes on."""

    name = 'learned'

    def __init__(self, checkpoint: str | None = None, device: str = 'cpu',
                 config: LearnedConfig | None = None, model: S4RC | None = None) -> None:
        self.device = torch.device(device)
        if model is None:
            model, self.meta = load_model(checkpoint, self.device)
        else:
            self.meta = {}
        self.model = model.eval()
        # checkpoints trained before the focal loss existed predict an unsupervised focal
        self._focal_trained = 'focal' in self.meta.get('train', {}).get('loss', {})
        self.config = config or LearnedConfig()
        self._landmarks = LandmarkTracker(self.config.pose)
        self._scale = MetricScale(self.config.scale)
        self._flows = CachedFlows(PRIOR_DIS)
        self.reset()

    @property
    def metric(self) -> bool:
        """True once a depth sensor (`LearnedConfig.scale_from_depth`) or the frames' ground
        plane has set the map's scale (metres); up to scale before, and without either."""
        return self._sensor_metric or self._scale.metric

    # ------------------------------------------------------------------ stream
    def reset(self) -> None:
        self._velocity = np.eye(4)
        self._last_keyframe: np.ndarray | None = None
        self._K: np.ndarray | None = None
        self._t0 = 0.0
        self._landmarks.reset()
        self._scale.reset()
        self._sensor_metric = False
        self._scale_epoch = -np.inf  # frames before it are in older map units
        self._flows.clear()

    def processing_size(self, width: int, height: int, requested_width: int
                        ) -> tuple[int, int]:
        """`LearnedConfig.width` or the model's width (whatever the engine asks), or the
        input's when smaller (never upsampled); height keeps the aspect ratio; both multiples
        of the 16-pixel patches."""
        target = self.config.width or self.model.config.width
        pw = max(16, min(target, width - width % 16))
        return pw, max(16, int(round(height * pw / width / 16.0)) * 16)

    def close(self) -> None:
        """Drop the model and return its device memory to the driver."""
        self.reset()
        self.model = None  # type: ignore[assignment]
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()

    def process(self, frame: Frame, context: list[CacheEntry]
                ) -> tuple[FrameResult, LearnedLatent]:
        with self._device_memory('encoding a frame'):
            return self._process(frame, context)

    def motion(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
               via: list[CacheEntry] | None = None) -> MotionEstimate:
        with self._device_memory('decoding motion'):
            return self._motion(source, target, pixels, via)

    @contextmanager
    def _device_memory(self, what: str) -> Iterator[None]:
        """Turn the device running out of memory into one clear `BackendError`."""
        if self.model is None:
            raise BackendError(f'the learned backend is closed: not {what}')
        try:
            yield
        except torch.OutOfMemoryError as exc:
            if self.device.type == 'cuda':
                torch.cuda.empty_cache()
            raise BackendError(
                f'{self.device} ran out of memory while {what} ({str(exc).splitlines()[0]}); '
                'dropped, the stream goes on: lower cache_device_budget_mb or use a smaller '
                'image, or device cpu') from exc

    def _process(self, frame: Frame, context: list[CacheEntry]
                 ) -> tuple[FrameResult, LearnedLatent]:
        cfg = self.config
        clock = [time.perf_counter()]
        h, w = frame.rgb.shape[:2]
        gray = _to_gray(frame.rgb)
        rgb_t = torch.from_numpy(frame.rgb).to(self.device).permute(2, 0, 1)[None].float() / 255
        K = self._intrinsics(frame, rgb_t, context)
        K_t = torch.from_numpy(K).float().to(self.device)[None]
        prev = context[-1] if context else None
        extras: dict[str, Any] = {}
        est = None
        if prev is None:
            T_wc, scale = np.eye(4), 1.0
        else:
            est = self._landmarks.track(gray, K, prev.T_wc @ self._velocity)
            T_wc = est.T_wc
            scale = float(prev.latent.scale_next)
            extras.update(pnp_inliers=est.inliers, tracking_ok=est.ok)
        clock.append(time.perf_counter())
        # frames whose poses are in this map's units (all but those before a large rescale)
        posed = [e for e in context if e.stamp >= self._scale_epoch]
        sources = self._sources(posed, T_wc, scale)
        attend = self._attention_context(context)
        if prev is None:
            self._t0 = frame.stamp
        with torch.inference_mode():
            src = None
            if sources:
                T_rel = []
                for e in sources:
                    T = invert_pose(e.T_wc) @ T_wc
                    T[:3, 3] /= scale
                    T_rel.append(T)
                src = SourceViews(
                    gray=torch.stack([e.latent.model.gray for e in sources], 1),
                    T_src_ref=torch.from_numpy(np.stack(T_rel)).float().to(self.device)[None])
            t = torch.tensor([frame.stamp - self._t0], device=self.device)
            out = self.model.encode(rgb_t, K_t, t, [e.latent.model for e in attend], src,
                                    is_anchor=prev is None)
            depth = (out.depth[0, 0] * scale).float().cpu().numpy()
            # from here on `scale` is the factor from model units to the map's units
            fit = self._fit_to_map(depth, est, T_wc)
            scale *= fit.scale
            depth = fit.apply(depth)
            conf = _relative_confidence(out.confidence[0, 0].float().cpu().numpy())
            latent = out.latent
            clock.append(time.perf_counter())
            moved, velocity = self._decoded_motion(latent, posed, frame.stamp, gray, depth,
                                                   scale, T_wc, K)
        # the flow from the previous frame, for queries over several frames (one DIS pass
        # across a 10-frame gap missed fast objects by 25-60 px on the DDS test's clip)
        flow_from_prev = None
        if prev is not None and self.model.config.motion_prior:
            flow_from_prev = half_flow(PRIOR_DIS.from_static(prev.latent.gray, gray,
                                                             prev.points_world, T_wc, K))
        moving = moved > cfg.dynamic_rel
        if moving.mean() > cfg.max_moving_share:
            # a mask over most of the image is the pose's error, not the scene's motion; had it
            # stopped the seeding, it would have taken the landmarks and then the pose down
            # with it (the DDS test's scene, docs/history.md)
            moving[:] = False
        dynamic = moved > cfg.reported_rel
        scene_flow = velocity  # float32, this frame's own: zeroed in place off the mask
        scene_flow[~dynamic] = 0.0
        clock.append(time.perf_counter())
        # rescale: this frame's depth (and everything in its units); map_rescale: the map
        rescale, map_rescale, points_cam = 1.0, 1.0, None
        sensor = frame.depth is not None and cfg.scale_from_depth
        if sensor:
            # a depth sensor: the map is in metres already (its landmarks start at the
            # sensor's points, below), so only this frame's depth is brought to the sensor's
            # scale (its median ratio); rescaling the map by it as well moved the landmarks
            # off the sensor's metres by the learned depth's shape error (docs/history.md)
            ratio = depth_sensor_scale(frame.depth, depth, ~moving, cfg.sensor_min_pixels)
            if ratio is not None:
                rescale, self._sensor_metric = ratio, True
        elif frame.ground is not None and not self._sensor_metric:
            # (a frame without depth in a depth sensor's stream: its map is in metres already)
            points_cam = unproject_depth(depth, K)
            # the pose of a frame whose tracking failed is a guess: no floor estimate from it
            rescale = map_rescale = self._ground_step(
                frame.ground, gray, points_cam, ~moving, T_wc, K, posed) \
                if est is not None and est.ok else self._scale.step(None)
        extras['scale_rescale'] = rescale
        if rescale != 1.0:
            depth = depth * np.float32(rescale)
            points_cam = None if points_cam is None else points_cam * np.float32(rescale)
            scale *= rescale
            scene_flow *= np.float32(rescale)
        if map_rescale != 1.0:
            # the map scaled about this camera: its pose stays, lengths change
            self._landmarks.rescale(T_wc[:3, 3], map_rescale)
            if abs(np.log(map_rescale)) > cfg.rescale_epoch_log:
                self._scale_epoch = frame.stamp
        clock.append(time.perf_counter())
        if points_cam is None:
            points_cam = unproject_depth(depth, K)
        points_world = transform_points(T_wc, points_cam).astype(np.float32)
        # landmarks start on the most confident share of the static pixels, and leave
        # low-confidence pixels (keeping them measured worse: 7-Scenes ATE 6.4 vs 3.7 cm,
        # docs/history.md) but not the dynamic mask, which PnP's outlier rejection covers: a
        # mask gone wrong (poses off -> everything "moves") must not take the landmarks, and
        # with them the pose, down with it
        confident = conf >= np.quantile(conf, 1.0 - cfg.pose_pixel_share)
        # with a depth sensor the landmarks start at its points (where it has depth, unless it
        # sees too little to track on), so the map the pose follows is in metres from the first
        # frame, and those are not re-triangulated (7-Scenes: ATE Sim(3) 7.6 cm seeded from the
        # learned depth, 4.2 from the sensor's, 1.9-2.1 without the re-triangulation;
        # docs/history.md, session 29)
        self._landmarks.update(gray, points_world, confident & ~moving, ~confident, K, T_wc,
                               frame.depth if sensor else None)
        extras['landmarks'] = len(self._landmarks)
        keyframe = self._is_keyframe(T_wc, float(np.median(depth)))
        self._velocity = (invert_pose(prev.T_wc) @ T_wc) if prev is not None else np.eye(4)
        self._velocity[:3, 3] *= map_rescale
        static = ~moving
        scale_next = float(np.median(depth[static] if static.any() else depth))
        clock.append(time.perf_counter())
        # wall time per stage (ms): pose = landmark tracking; encode = the model's encoder,
        # geometry head and the fit to the landmarks; motion = the decoder pass behind the
        # dynamic mask and scene flow; ground = the map's scale from the floor or a depth
        # sensor (0 without either); map = landmark upkeep
        stage_ms = np.diff(clock) * 1e3
        extras.update(keyframe=keyframe, attended_tokens=out.attended_tokens,
                      sources=len(sources), scale=scale,
                      **{f'time_{name}_ms': float(ms) for name, ms in
                         zip(('pose', 'encode', 'motion', 'ground', 'map'), stage_ms)})
        result = FrameResult(stamp=frame.stamp, colors=frame.rgb, depth=depth,
                             points_cam=points_cam, points_world=points_world, confidence=conf,
                             K=K, T_wc=T_wc, dynamic_mask=dynamic,
                             segments=label_moving_segments(dynamic, depth,
                                                            cfg.min_segment_pixels),
                             scene_flow=scene_flow, metric=self.metric, extras=extras)
        return result, LearnedLatent(latent, gray, depth, scale, scale_next,
                                     prev_index=-1 if prev is None else prev.index,
                                     flow_from_prev=flow_from_prev)

    # ------------------------------------------------------------------ motion
    def _motion(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
                via: list[CacheEntry] | None) -> MotionEstimate:
        n = len(pixels)
        if n == 0:
            empty = np.zeros((0, 3), np.float32)
            return MotionEstimate(empty, np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                                  np.zeros(0, np.uint8))
        with torch.inference_mode():
            geometry = self._geometry(source.latent.gray, source.latent.depth, source.T_wc,
                                      float(source.latent.scale), target.latent.gray,
                                      target.latent.depth, target.T_wc, source.K,
                                      lambda: self._flows.between(source, target, via))
            dP, conf = self.model.motion(source.latent.model, target.latent.model,
                                         geometry)
            h, w = source.dynamic_mask.shape
            grid = torch.from_numpy(np.asarray(pixels, np.float32)).to(self.device)
            # pixel centres -> [-1, 1] (align_corners=False convention of the 1/8 map)
            g = torch.stack([(grid[:, 0] + 0.5) / w * 2 - 1, (grid[:, 1] + 0.5) / h * 2 - 1],
                            dim=-1)[None, None]
            d = F.grid_sample(dP, g, mode='bilinear', align_corners=False,
                              padding_mode='border')[0, :, 0].T.cpu().numpy()
            c = F.grid_sample(conf, g, mode='bilinear', align_corners=False,
                              padding_mode='border')[0, 0, 0].cpu().numpy()
        P = sample_bilinear(source.points_world, pixels).astype(np.float64)
        z = sample_depth(source.latent.depth, pixels)
        disp_cam = d.astype(np.float64) * float(source.latent.scale)
        static = np.linalg.norm(disp_cam, axis=1) <= self.config.dynamic_rel * z
        disp_cam[static] = 0.0  # DPM: static points do not move in the world
        positions = P + disp_cam @ source.T_wc[:3, :3].T
        cam = transform_points(invert_pose(target.T_wc), positions)
        px, zt = project(cam, target.K)
        th, tw = target.dynamic_mask.shape
        status = np.full(n, PointStatus.VALID, np.uint8)
        bad = ~finite_rows(positions)
        outside = ~bad & ~((px[:, 0] >= -0.5) & (px[:, 0] <= tw - 0.5) & (px[:, 1] >= -0.5)
                           & (px[:, 1] <= th - 0.5) & (zt > 0))
        seen = sample_depth(target.latent.depth, px)
        hidden = ~bad & ~outside & np.isfinite(seen) & (
            seen < zt * (1.0 - self.config.occlusion_rel))
        status[hidden] = PointStatus.OCCLUDED
        status[outside] = PointStatus.OUT_OF_VIEW
        status[bad] = PointStatus.INVALID
        return MotionEstimate(positions=positions.astype(np.float32),
                              pixels=px.astype(np.float32),
                              confidence=(1.0 - 1.0 / c).astype(np.float32), status=status)

    # ------------------------------------------------------------------ internals
    def _intrinsics(self, frame: Frame, rgb_t: torch.Tensor,
                    context: list[CacheEntry]) -> np.ndarray:
        """Given intrinsics win; otherwise the camera head's focal of the stream's first frame
        when the checkpoint's training supervised it, else the engine's default."""
        if frame.intrinsics_known or not self._focal_trained:
            return np.asarray(frame.K, np.float64)
        if self._K is None or not context:
            h, w = frame.rgb.shape[:2]
            with torch.inference_mode():
                K0 = torch.from_numpy(np.asarray(frame.K, np.float32)).to(self.device)[None]
                f = float(self.model.encode(rgb_t, K0, torch.zeros(1, device=self.device), [],
                                            None, is_anchor=True).focal[0])
            self._K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
        return self._K.copy()

    def _attention_context(self, context: list[CacheEntry]) -> list[CacheEntry]:
        """The frames whose cached keys/values the encoder attends to: the stream's anchor
        (while cached), the newest `context_keyframes` keyframes and the last `context_frames`
        frames, oldest first. Bounded, so frame 10,000 costs what frame 10 costs."""
        cfg = self.config
        recent = context[-cfg.context_frames:] if cfg.context_frames else []
        older = context[:len(context) - len(recent)]
        anchor = [e for e in older[:1] if e.index == 0 and cfg.context_anchor]
        keyframes = [e for e in older if e.keyframe and e.index != 0]
        return anchor + (keyframes[-cfg.context_keyframes:] if cfg.context_keyframes else []) \
            + recent

    def _sources(self, context: list[CacheEntry], T_wc: np.ndarray,
                 scale: float) -> list[CacheEntry]:
        """The newest cached frame with enough baseline, plus the previous frame."""
        if not context:
            return []
        k = self.model.config.max_sources
        recent = context[-self.config.source_search:]
        picked = [recent[far_source(np.stack([e.T_wc[:3, 3] for e in recent]), T_wc[:3, 3],
                                    self.config.source_baseline * scale)]]
        if context[-1] is not picked[0]:
            picked.append(context[-1])
        return sorted(picked[:k], key=lambda e: e.stamp)

    def _fit_to_map(self, depth: np.ndarray, est: PoseEstimate | None, T_wc: np.ndarray
                    ) -> LandmarkDepthFit:
        """The map's scale (the median ratio, at the PnP inliers, of their landmark depth to the
        predicted depth) and the smooth correction towards the landmarks (`landmark_depth`).
        Without the scale the model's small bias in its unit-median depth would feed back
        through the next pose: a scale drift. (Using only the triangulated landmarks for the
        scale was tried: 7-Scenes ATE 12.7 vs 9.8 cm, docs/history.md.)"""
        if est is None or not est.ok:
            return NO_FIT
        return fit_to_landmarks(depth, est.pixels, est.points_world, T_wc,
                                self.config.landmark_depth)

    def _geometry(self, src_gray: np.ndarray, src_depth: np.ndarray, src_T_wc: np.ndarray,
                  src_scale: float, tgt_gray: np.ndarray, tgt_depth: np.ndarray,
                  tgt_T_wc: np.ndarray, K: np.ndarray,
                  flow: Callable[[], np.ndarray] | None = None) -> MotionGeometry | None:
        """Two frames' images, depths (map units) and poses, in the source's model units, for
        the motion decoder's scene-flow prior (None for models without one); ``flow`` gives
        the source -> target optical flow when it is known (else DIS across the pair)."""
        if not self.model.config.motion_prior:
            return None

        def depth_t(d: np.ndarray) -> torch.Tensor:
            d = np.nan_to_num(d / np.float32(src_scale), nan=0.0)
            return torch.from_numpy(d.astype(np.float32)).to(self.device)[None, None]
        T = invert_pose(tgt_T_wc) @ src_T_wc
        T[:3, 3] /= src_scale
        return motion_geometry(
            src_gray[None], tgt_gray[None], depth_t(src_depth), depth_t(tgt_depth),
            torch.from_numpy(np.asarray(K, np.float32)).to(self.device)[None],
            torch.from_numpy(T.astype(np.float32)).to(self.device)[None],
            None if flow is None else flow()[None])

    def _decoded_motion(self, latent: FrameLatent, context: list[CacheEntry], stamp: float,
                        gray: np.ndarray, depth: np.ndarray, scale: float, T_wc: np.ndarray,
                        K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel, the decoded displacement dP to the cached frame 3 back as a share of the
        pixel's depth (H x W), and the velocity (H x W x 3 world, map units/s): the
        displacement across the view ray that the scene-flow prior's optical flow shows
        (`lateral_displacement`), over the time between the frames (-dP / time for models
        without the prior); zeros without a cached frame."""
        h, w = depth.shape
        if not context:
            return np.zeros((h, w), np.float32), np.zeros((h, w, 3), np.float32)
        ref = context[max(0, len(context) - 3)]
        geometry = self._geometry(gray, depth, T_wc, scale, ref.latent.gray,
                                  ref.latent.depth, ref.T_wc, K)
        dP, _ = self.model.motion(latent, ref.latent.model, geometry)
        disp = F.interpolate(dP, size=(h, w), mode='bilinear', align_corners=False
                             )[0].permute(1, 2, 0).cpu().numpy() * np.float32(scale)
        with np.errstate(divide='ignore', invalid='ignore'):
            moved = np.nan_to_num(vector_norm(disp) / depth, nan=0.0)
        if geometry is not None:
            # across the view ray only: dP's component along it is the difference of two
            # monocular depths and made the scene flow 2.5-6 times the true speed (median),
            # the lateral one from the flow 0.6-1.0 (docs/history.md, session 18)
            disp_ref = lateral_displacement(depth, K, invert_pose(ref.T_wc) @ T_wc,
                                            geometry.flow[0].permute(1, 2, 0).cpu().numpy(),
                                            where=moved > self.config.reported_rel)
            return moved.astype(np.float32), disp_ref @ (
                ref.T_wc[:3, :3].T / (ref.stamp - stamp)).astype(np.float32)
        # dP is the displacement from now back to the reference frame, in this camera's axes
        velocity = disp @ (T_wc[:3, :3].T / (ref.stamp - stamp)).astype(np.float32)
        return moved.astype(np.float32), velocity

    def _ground_step(self, ground: GroundPlane, gray: np.ndarray, points: np.ndarray,
                     usable: np.ndarray, T_wc: np.ndarray, K: np.ndarray,
                     posed: list[CacheEntry]) -> float:
        """The factor to scale the map by now (`metric_scale.MetricScale`), from the floor's
        flow to the newest cached frame at least ``min_baseline`` of the camera's height away
        (the height as the frame's points, H x W x 3 camera frame, show it) and the known
        height in metres. ``usable``: static pixels."""
        cfg = self.config.ground
        # once metric, the floor is the camera's height below it (in metres = map units),
        # which keeps the foot of walls and table tops out; after a long time without an
        # estimate (the scale may have drifted away from it) the floor is found as at the start
        known = self._scale.metric \
            and self._scale.frames_since_estimate <= self._scale.config.window
        floor = floor_pixels(points, ground.up, usable, cfg.max_tilt_deg,
                             ground.height if known else None)
        if floor.sum() < cfg.min_pixels:
            return self._scale.step(None)
        height = float(np.median(-(points[floor] @ ground.up)))
        ref = next((e for e in reversed(posed[-cfg.max_gap:]) if np.linalg.norm(
            e.T_wc[:3, 3] - T_wc[:3, 3]) >= cfg.min_baseline * height), None)
        if ref is None:
            return self._scale.step(None)
        # plain DIS (not started from the static flow the network's depth predicts, which
        # would pull the estimate towards that depth's scale)
        fit = fit_floor(PRIOR_DIS(gray, ref.latent.gray), K, invert_pose(ref.T_wc) @ T_wc,
                        ground.up, floor, cfg.huber_px)
        ok = (fit is not None and fit.inverse_height > 0 and fit.rel_error <= cfg.max_rel_error
              and fit.inlier_share >= cfg.min_inlier_share)
        return self._scale.step(ground.height * fit.inverse_height if ok else None)

    def _is_keyframe(self, T_wc: np.ndarray, median_depth: float) -> bool:
        if self._last_keyframe is None or np.linalg.norm(
                T_wc[:3, 3] - self._last_keyframe[:3, 3]) > self.config.keyframe_baseline \
                * median_depth:
            self._last_keyframe = T_wc.copy()
            return True
        return False
