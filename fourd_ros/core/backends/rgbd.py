"""RGB-D backend: metric depth from the sensor, pose by RGB-D odometry on static pixels, motion by
dense optical flow (OpenCV DIS) lifted to 3D with depth (Track4World's "2D flow + depth" hybrid),
and a rigid motion per moving object estimated frame to frame (``segment_motion.py``). The
frame's moving segments are the previous segments moved into it by those motions (plus slow
objects found by a rigid fit to their flow); their scene flow is the rigid motion's velocity at
each point.

Per-frame cached record (the "latent"): grey image (uint8), depth (float32 metres), the optical
flow from the previous frame (float16 pixels; rigid-motion flow on tracked objects) and the
previous frame's object segments (uint8 labels) with their rigid motions to this frame, at the
processing resolution, plus the pose and intrinsics the engine stores beside them. Motion
between cached frames follows the stored per-frame object motions and flows when every frame in
between is cached (the most accurate), and otherwise computes flow directly between cached
frames, hopping through keyframes.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from fourd_ros.core.backends.rgbd_odometry import OdometryConfig, RgbdOdometry
from fourd_ros.core.backends.segment_motion import (RgbdView, SegmentMotionConfig,
                                                    SegmentMotionTracker, attach_to_segments,
                                                    fit_rigid_to_flow, rigid_flow_of_segments)
from fourd_ros.core.engine.backend import CacheEntry, MotionEstimate, scaled_size
from fourd_ros.core.engine.objects import rigid_scene_flow
from fourd_ros.core.flow import DisFlow, rigid_flow
from fourd_ros.core.geometry import (inside_image, invert_pose, make_pose, project,
                                     sample_bilinear, sample_depth, transform_points,
                                     unproject_depth, unproject_pixels)
from fourd_ros.core.types import Frame, FrameResult, PointStatus


@dataclass
class RgbdConfig:
    """RGB-D backend settings (lengths in metres).

    Attributes:
        min_depth, max_depth: valid sensor range; depth outside is treated as missing.
        flow_preset: DIS optical-flow preset ('ultrafast', 'fast', 'medium').
        flow_smoothness, flow_gradient_weight: DIS variational refinement alpha (smoothness) and
            gamma (gradient constancy) weights.
        dynamic_rel, dynamic_abs: a point moves if its world displacement exceeds
            max(dynamic_rel * depth, dynamic_abs) (DPM-style scale-relative threshold).
        occlusion_rel, occlusion_abs: a point is hidden if the sensor sees something closer than
            its predicted depth by more than max(occlusion_rel * depth, occlusion_abs).
        photo_max: grey-level difference (0-255) between a moving point's source and target
            pixels above which it counts as occluded.
        max_hop: largest frame-index gap decoded with one optical flow; longer gaps chain
            through cached frames.
        lk_window, lk_max_px: Lucas-Kanade window (pixels) and largest accepted correction
            (pixels) when refining chained moving points.
        segmentation_gap: frames back that motion segmentation also compares with.
        rigid_*: rigid motion of moving segments: smallest segment (pixels), points sampled
            per segment, RANSAC iterations, smallest inlier share, inlier distance
            max(rigid_tol_abs, rigid_tol_rel * depth) in metres, and the most hops in a row
            a segment without an estimated motion keeps its previous motion;
            rigid_attach_px: largest distance (pixels) from a moving query pixel outside
            every segment to a segment it joins (same surface in depth).
        flow_outlier_px, flow_outlier_step_px: pixels whose flow misses the dominant rigid
            motion by more than flow_outlier_px are kept out of the camera tracking (they may
            move unsegmented); tested on a grid of this step, each point standing for its
            step x step block.
        segment_motion: estimate each moving segment's rigid motion from frame to frame
            (``segment_motion.py``); chained queries then follow those motions and the stored
            flow on the segments is the rigid one.
        segments: settings of that estimate.
        odometry: camera tracker settings.
    """

    min_depth: float = 0.1
    max_depth: float = 10.0
    flow_preset: str = 'medium'
    flow_smoothness: float = 10.0
    flow_gradient_weight: float = 20.0
    dynamic_rel: float = 0.03
    dynamic_abs: float = 0.02
    occlusion_rel: float = 0.03
    occlusion_abs: float = 0.03
    photo_max: float = 30.0
    max_hop: int = 15
    segmentation_gap: int = 5
    rigid_min_pixels: int = 30
    rigid_max_points: int = 400
    rigid_ransac_iters: int = 64
    rigid_min_inliers: float = 0.3
    rigid_tol_abs: float = 0.01
    rigid_tol_rel: float = 0.01
    rigid_max_coast: int = 2
    rigid_attach_px: float = 6.0
    lk_window: int = 9
    lk_max_px: float = 4.0
    flow_outlier_px: float = 1.5
    flow_outlier_step_px: int = 8
    segment_motion: bool = True
    segments: SegmentMotionConfig = field(default_factory=SegmentMotionConfig)
    odometry: OdometryConfig = field(default_factory=OdometryConfig)


class RgbdBackend:
    """Backend for cameras with registered metric depth (see module docstring)."""

    name = 'rgbd'
    metric = True

    def __init__(self, config: RgbdConfig | None = None) -> None:
        self.config = config or RgbdConfig()
        self._dis = DisFlow(self.config.flow_preset, self.config.flow_smoothness,
                            self.config.flow_gradient_weight)
        self._flow_memo: dict[tuple[float, float], np.ndarray] = {}
        # (chain stamps, segment id) -> world motion (None = lost) of queried segments
        self._segment_memo: dict[tuple[tuple[float, ...], int], np.ndarray | None] = {}
        self._memo_lock = threading.Lock()
        self._query_lock = threading.Lock()
        self._query_tracker: SegmentMotionTracker | None = None
        self.reset()

    def reset(self) -> None:
        self._odometry: RgbdOdometry | None = None
        self._segments: SegmentMotionTracker | None = None
        self._prev: RgbdView | None = None
        self._prev_stamp = 0.0
        self._poses: list[np.ndarray] = []
        # recent frames' world points and flows to their successor, for motion segmentation
        self._history: deque[dict[str, Any]] = deque(maxlen=self.config.segmentation_gap + 1)
        with self._memo_lock:
            self._flow_memo.clear()
            self._segment_memo.clear()

    # ------------------------------------------------------------------ per frame
    def close(self) -> None:
        """Nothing to release: the state is host arrays, dropped with the backend."""

    def processing_size(self, width: int, height: int, requested_width: int
                        ) -> tuple[int, int]:
        return scaled_size(width, height, requested_width, 8)

    def process(self, frame: Frame, context: list[CacheEntry] | None = None
                ) -> tuple[FrameResult, dict[str, Any]]:
        if frame.depth is None:
            raise ValueError('the rgbd backend needs a registered depth image with every frame')
        cfg = self.config
        h, w = frame.rgb.shape[:2]
        gray = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
        depth = frame.depth.astype(np.float32, copy=True)
        depth[~((depth >= cfg.min_depth) & (depth <= cfg.max_depth))] = np.nan
        if self._odometry is None or self._odometry.K.shape != (3, 3) \
                or not np.allclose(self._odometry.K, frame.K):
            self._odometry = RgbdOdometry(frame.K, w, h, cfg.odometry)
            self._segments = SegmentMotionTracker(frame.K, w, h, cfg.segments)
            self._prev = None
            self._history.clear()
        flow = None
        static_hint = None
        if self._prev is not None:
            # the pose is not known yet: predict it with constant velocity for the flow prior
            init = rigid_flow(self._prev.points_world, self._predict_pose(), frame.K)
            flow = self._dis(self._prev.gray, gray, init)
            # objects the segmentation has not caught yet (at stream start it has no history;
            # later, slow or partly textureless ones) would drag the camera: keep the flow's
            # outliers to the dominant rigid motion (PnP RANSAC) out of this frame's odometry too
            known = self._prev.dynamic | _rigid_flow_outliers(
                self._prev.points_world, flow, depth, frame.K, cfg.flow_outlier_px,
                cfg.dynamic_rel, cfg.dynamic_abs, cfg.flow_outlier_step_px)
            static_hint = ~_splat_mask(known, flow)
        odo = self._odometry.track(gray, depth, static_hint)
        T_wc = odo.T_wc
        if flow is not None and odo.relocalized:
            # the flow followed the constant-velocity guess that failed: follow the found pose
            flow = self._dis(self._prev.gray, gray,
                             rigid_flow(self._prev.points_world, T_wc, frame.K))
        if not odo.ok:
            # lost: world motion since the last frame is unknown, so is what moved in it
            self._history.clear()
            flow = None
        self._poses = [self._poses[-1] if self._poses else T_wc, T_wc]
        points_cam = unproject_depth(depth, frame.K)
        points_world = transform_points(T_wc, points_cam).astype(np.float32)
        confidence = _depth_confidence(depth)
        dynamic = np.zeros((h, w), bool)
        segments = None
        current = np.zeros((h, w), np.uint16)
        motions = np.zeros((1, 4, 4), np.float32)
        if flow is not None:
            if cfg.segment_motion:
                segments = self._segments.estimate(
                    self._prev, RgbdView(gray, depth, T_wc, points_world, dynamic), flow)
                flow = rigid_flow_of_segments(segments, self._prev, T_wc, frame.K, flow)
            self._history[-1]['flow'] = flow
            dynamic = self._motion_segmentation(points_world)
            if segments is not None:
                now = self._segments.current_segments(
                    self._prev, RgbdView(gray, depth, T_wc, points_world, dynamic), segments,
                    dynamic, flow)
                current, motions = now.labels, now.motions
        self._history.append({'points_world': points_world, 'flow': None})
        dt = frame.stamp - self._prev_stamp if self._prev is not None else 1.0
        result = FrameResult(
            stamp=frame.stamp, colors=frame.rgb, depth=np.nan_to_num(depth, nan=0.0),
            points_cam=points_cam, points_world=points_world, confidence=confidence,
            K=frame.K.copy(), T_wc=T_wc, dynamic_mask=dynamic, segments=current,
            scene_flow=rigid_scene_flow(points_world, current, motions, dt, dynamic),
            metric=True,
            extras={'keyframe': bool(odo.is_keyframe), 'tracking_ok': bool(odo.ok),
                    'tracking_relocalized': bool(odo.relocalized),
                    'odometry_inliers': int(odo.num_inliers)})
        self._prev = RgbdView(gray, depth, T_wc, points_world, dynamic)
        self._prev_stamp = frame.stamp
        latent = {'gray': gray, 'depth': depth, 'prev_index': frame.index - 1}
        if flow is not None:
            latent['flow_from_prev'] = flow.astype(np.float16)
        if segments is not None:
            latent['prev_segments'] = segments.labels
            latent['prev_segment_motions'] = segments.motions
        return result, latent

    def _predict_pose(self) -> np.ndarray:
        """Constant-velocity guess of the current camera-to-world pose."""
        older, last = self._poses
        return last @ invert_pose(older) @ last

    def _motion_segmentation(self, cur_world: np.ndarray) -> np.ndarray:
        """Dynamic mask of the current frame (DPM-style: world displacement vs depth).

        Displacements are measured against the previous frame and against the oldest frame of
        a short history (`segmentation_gap` frames, flows composed): slow objects move too
        little in one frame to stand out of the depth noise.
        """
        frames = list(self._history)
        dynamic = np.zeros(cur_world.shape[:2], bool)
        for old in {len(frames) - 1, 0}:
            flows = [f['flow'] for f in frames[old:]]
            flow = flows[0] if len(flows) == 1 else _compose_flows(flows)
            moved = self._moved_prev_pixels(frames[old]['points_world'], cur_world, flow)
            # isolated "moving" pixels are depth noise or mixed pixels at depth edges
            moved = cv2.morphologyEx(moved.astype(np.uint8), cv2.MORPH_OPEN,
                                     np.ones((3, 3), np.uint8)).astype(bool)
            dynamic |= _splat_mask(moved, flow)
        return dynamic

    def _moved_prev_pixels(self, prev_world: np.ndarray, cur_world: np.ndarray,
                           flow: np.ndarray) -> np.ndarray:
        """Which earlier-frame pixels moved in the world (mask in that frame's coordinates)."""
        h, w = flow.shape[:2]
        v, u = np.mgrid[0:h, 0:w].astype(np.float32)
        map_u = u + flow[..., 0]
        map_v = v + flow[..., 1]
        warped = cv2.remap(cur_world, map_u, map_v, cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(np.nan,) * 3)
        disp = np.linalg.norm(warped - prev_world, axis=-1)
        thresh = np.maximum(self.config.dynamic_rel * np.abs(prev_world[..., 2]),
                            self.config.dynamic_abs)
        # distance from the camera, not world z, sets the noise level; prev_world z is close
        # enough at the scale of this threshold for the first camera's neighbourhood
        return np.nan_to_num(disp, nan=0.0) > thresh

    # ------------------------------------------------------------------ motion decoding
    def motion(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
               via: list[CacheEntry] | None = None) -> MotionEstimate:
        cfg = self.config
        pixels = np.asarray(pixels, np.float32).reshape(-1, 2)
        n = len(pixels)
        h, w = source.dynamic_mask.shape
        status = np.full(n, PointStatus.VALID, np.uint8)
        conf = np.ones(n, np.float32)
        src_world = sample_bilinear(source.points_world, pixels)
        moving_src = sample_bilinear(source.dynamic_mask.astype(np.float32), pixels) > 0.5
        if source is target:
            return MotionEstimate(src_world, pixels.copy(), conf * np.isfinite(src_world[:, 2]),
                                  np.where(np.isfinite(src_world[:, 2]), status,
                                           PointStatus.INVALID).astype(np.uint8))
        # follow the pixels with optical flow, hop by hop through cached frames
        chain = _consecutive(source, target, via or [])
        p = pixels.copy()
        lost = np.zeros(n, bool)
        f = None
        if chain is not None:
            # every frame in between is cached: compose the stored frame-to-frame flows (small
            # motions, the most accurate; refining the composite with one direct DIS pass
            # between source and target measured worse on moving objects)
            hops = [source, target]
            f = self._composed_flow(chain)
        else:
            hops = _hops(source, target, via or [], cfg.max_hop)
        for a, b in zip(hops[:-1], hops[1:]):
            p = p + sample_bilinear(f if f is not None else self._flow(a, b), p)
            lost |= ~inside_image(p, w, h)
        # positions from flow + target depth (valid for moving and static points)
        z_t = sample_depth(target.latent['depth'], p)
        flow_world = transform_points(target.T_wc, unproject_pixels(p, z_t, target.K))
        # static prediction: the source point does not move in the world
        cam_t = transform_points(invert_pose(target.T_wc), src_world.astype(np.float64))
        p_static, z_static = project(cam_t, target.K)
        disp = np.linalg.norm(flow_world - src_world, axis=1)
        thresh = np.maximum(cfg.dynamic_rel * np.abs(z_static), cfg.dynamic_abs)
        moving = np.where(np.isfinite(disp), disp > thresh, moving_src)
        if len(hops) > 2 or chain is not None:
            # chained flows drift by a fraction of a pixel per frame on moving objects; a small
            # Lucas-Kanade step from the source patch straight to the target removes the drift
            p, z_t, flow_world = self._refine_moving(source, target, pixels, p, z_t, flow_world,
                                                     moving)
        use = np.zeros(n, bool)  # points placed by their segment's rigid motion
        if chain is not None:
            # rigid objects: one motion per moving segment, fitted hop by hop, replaces the
            # per-point estimates (outlier flows cannot drag single points away), and places
            # the segment's points that are hidden or out of view at the target as well
            rigid = self._rigid_object_positions(chain, pixels, src_world)
            use = moving & np.isfinite(rigid).all(axis=1)
            flow_world[use] = rigid[use]
            p[use], _ = project(transform_points(invert_pose(target.T_wc), rigid[use]),
                                target.K)
        # brightness constancy catches moving points that became hidden (the flow then follows
        # the occluder, whose appearance differs); cheaper than a backward flow per frame
        photo_err = np.abs(sample_bilinear(target.latent['gray'].astype(np.float32), p)
                           - sample_bilinear(source.latent['gray'].astype(np.float32), pixels))
        positions = np.where(moving[:, None], flow_world, src_world).astype(np.float32)
        pix_out = np.where(moving[:, None], p, p_static).astype(np.float32)
        # static points: visibility from their predicted projection and the target depth
        static_in = inside_image(p_static, w, h) & (z_static > 0)
        z_seen = sample_depth(target.latent['depth'], p_static)
        hidden = z_seen < z_static - np.maximum(cfg.occlusion_rel * z_static, cfg.occlusion_abs)
        st = ~moving
        status[st & ~static_in] = PointStatus.OUT_OF_VIEW
        status[st & static_in & hidden] = PointStatus.OCCLUDED
        # moving points: visibility from the flow (out of view, appearance disagreement)
        mv = moving
        out = lost | ~inside_image(p, w, h)
        status[mv & out] = PointStatus.OUT_OF_VIEW
        status[mv & ~out & ~(photo_err <= cfg.photo_max)] = PointStatus.OCCLUDED
        no_depth = mv & ~out & ~np.isfinite(z_t)
        status[no_depth] = PointStatus.OCCLUDED
        # a moving point out of view or without target depth and without a rigid segment
        # motion has no measured position at the target: its source position, low confidence
        unknown = mv & (out | no_depth) & ~use
        positions[unknown] = src_world[unknown]
        invalid = ~np.isfinite(src_world).all(axis=1)
        status[invalid] = PointStatus.INVALID
        positions[invalid] = np.nan
        conf = np.where(status == PointStatus.VALID,
                        np.exp(-np.nan_to_num(photo_err, nan=255.0) / cfg.photo_max), 0.2)
        conf[invalid] = 0.0
        return MotionEstimate(positions, pix_out, conf.astype(np.float32), status)

    def _compose(self, chain: list[CacheEntry]) -> np.ndarray:
        """Flow from chain[0] to chain[-1] by composing the flows of consecutive frames."""
        return _compose_flows([self._flow(a, b) for a, b in zip(chain[:-1], chain[1:])])

    def _refine_moving(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
                       p: np.ndarray, z_t: np.ndarray, flow_world: np.ndarray,
                       moving: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refine moving points' target pixels with LK (source patch -> target image)."""
        sel = np.flatnonzero(moving & np.isfinite(p).all(axis=1))
        if not len(sel):
            return p, z_t, flow_world
        cfg = self.config
        start = p[sel].reshape(-1, 1, 2).astype(np.float32)
        refined, ok, _ = cv2.calcOpticalFlowPyrLK(
            source.latent['gray'], target.latent['gray'],
            pixels[sel].reshape(-1, 1, 2).astype(np.float32), start.copy(),
            winSize=(cfg.lk_window, cfg.lk_window), maxLevel=0,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
            criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01))
        refined = refined.reshape(-1, 2)
        # accept small corrections only: a large jump means LK locked onto something else
        keep = (ok.ravel() == 1) & (np.linalg.norm(refined - p[sel], axis=1) < cfg.lk_max_px)
        sel = sel[keep]
        p = p.copy()
        p[sel] = refined[keep]
        z_t = z_t.copy()
        z_t[sel] = sample_depth(target.latent['depth'], p[sel])
        flow_world = flow_world.copy()
        flow_world[sel] = transform_points(target.T_wc,
                                           unproject_pixels(p[sel], z_t[sel], target.K))
        return p, z_t, flow_world

    def _rigid_object_positions(self, chain: list[CacheEntry], pixels: np.ndarray,
                                src_world: np.ndarray) -> np.ndarray:
        """Target-time positions of query points on moving segments, from rigid object motion.

        Segments are the ones whose motion to the next frame was estimated while processing
        it (objects only, see ``segment_motion.py``), else the connected parts of the source's
        dynamic mask. Each is followed through the chain hop by hop: with the motion stored
        for that hop when the segment has one, else its points are projected into frame a with
        the current rigid estimate (so pixels never drift), moved to frame b by the stored
        flow, lifted with b's depth, and a RANSAC rigid fit to those 3D correspondences gives
        the step. Over more than one hop, the composed motion and a constant-velocity one are
        then refined by aligning the source and target frames directly
        (``SegmentMotionTracker.refine``), which removes the error the steps gather. Segments
        that get lost in any hop are left out (NaN rows), as are points off the segments.
        """
        source = chain[0]
        labels = chain[1].latent.get('prev_segments')
        if labels is None or chain[1].latent.get('prev_index') != source.index:
            _, labels = cv2.connectedComponents(source.dynamic_mask.astype(np.uint8),
                                                connectivity=8)
        h, w = labels.shape
        iu = np.clip(np.round(pixels[:, 0]).astype(np.int64), 0, w - 1)
        iv = np.clip(np.round(pixels[:, 1]).astype(np.int64), 0, h - 1)
        cfg = self.config
        query_seg = attach_to_segments(labels, source.dynamic_mask, source.latent['depth'], iu,
                                       iv, cfg.rigid_attach_px, cfg.dynamic_abs,
                                       cfg.dynamic_rel)
        out = np.full((len(pixels), 3), np.nan, np.float64)
        chain_key = tuple(e.stamp for e in chain)
        for seg in np.unique(query_seg):
            if seg == 0:
                continue
            # a segment's motion over a chain does not depend on the pixels queried: planners
            # query the same frames again and again (measured: 100-140 ms per query 2 frames
            # back at 320x240, the refinement recomputed each time)
            key = (chain_key, int(seg))
            with self._memo_lock:
                T = self._segment_memo.get(key, False)
            if T is False:
                T = self._segment_motion(chain, labels, int(seg))
                with self._memo_lock:
                    if len(self._segment_memo) > 64:
                        self._segment_memo.clear()
                    self._segment_memo[key] = T
            if T is None:
                continue
            rows = query_seg == seg
            out[rows] = transform_points(T, src_world[rows].astype(np.float64))
        return out

    def _segment_motion(self, chain: list[CacheEntry], labels: np.ndarray,
                        seg: int) -> np.ndarray | None:
        """4x4 world motion of segment `seg` of the source frame over the chain, or None."""
        cfg = self.config
        source = chain[0]
        rng = np.random.default_rng(seg)  # the same answer whatever else is queried
        ys, xs = np.nonzero(labels == seg)
        P = source.points_world[ys, xs].astype(np.float64)
        P = P[np.isfinite(P).all(axis=1)]
        if len(P) < cfg.rigid_min_pixels:
            return None
        if len(P) > cfg.rigid_max_points:
            P = P[rng.choice(len(P), cfg.rigid_max_points, replace=False)]
        steps = self._track_rigid_segment(chain, P, rng)
        if steps is None:
            return None
        T = functools.reduce(lambda acc, step: step @ acc, steps, np.eye(4))
        if len(steps) > 1 and cfg.segment_motion:
            # the chained motion and a constant-velocity one (the median step repeated:
            # robust to a few aliased steps), each refined across the whole gap
            with self._query_lock:
                T = self._query_segments(source).refine(
                    _view(source), _view(chain[-1]), labels == seg,
                    [T, _constant_velocity(steps, P.mean(axis=0), T)])
        return T

    def _query_segments(self, entry: CacheEntry) -> SegmentMotionTracker:
        """The segment tracker that refines queries (call under ``_query_lock``): one for all
        query threads, apart from the one processing frames (a query may run meanwhile), so
        its buffers are allocated once."""
        h, w = entry.dynamic_mask.shape
        tracker = self._query_tracker
        if tracker is None or not np.array_equal(tracker.K, entry.K) \
                or tracker.size != (w, h):
            tracker = SegmentMotionTracker(entry.K, w, h, self.config.segments)
            self._query_tracker = tracker
        return tracker

    def _track_rigid_segment(self, chain: list[CacheEntry], P: np.ndarray,
                             rng: np.random.Generator) -> list[np.ndarray] | None:
        """World-frame rigid motions of points P (world, chain[0] time), one per hop of the
        chain, or None.

        Per hop: the motion estimated while processing (``segment_motion.py``), else, for at
        most ``rigid_max_coast`` hops in a row, the previous hop's motion (an object's motion
        changes little in one frame, while a flow that lost it is no better), else a RANSAC
        fit to the stored flow lifted to 3D.
        """
        cfg = self.config
        steps: list[np.ndarray] = []
        last, coasted = None, 0
        for a, b in zip(chain[:-1], chain[1:]):
            h, w = a.dynamic_mask.shape
            uv, z = project(transform_points(invert_pose(a.T_wc), P), a.K)
            seen = inside_image(uv, w, h) & (z > 0)
            step = _stored_segment_motion(a, b, uv[seen])
            if step is not None:
                coasted = 0
            elif last is not None and coasted < cfg.rigid_max_coast:
                step, coasted = last, coasted + 1
            else:
                step = self._flow_rigid_step(a, b, P[seen], uv[seen], rng)
                if step is None:
                    return None
            P = transform_points(step, P)
            steps.append(step)
            last = step
        return steps

    def _flow_rigid_step(self, a: CacheEntry, b: CacheEntry, P: np.ndarray, uv: np.ndarray,
                         rng: np.random.Generator) -> np.ndarray | None:
        """Rigid world motion a -> b of points P (seen at pixels uv of a) from the flow a -> b."""
        cfg = self.config
        uv_b = uv + sample_bilinear(self._flow(a, b), uv.astype(np.float32))
        return fit_rigid_to_flow(P, uv_b, b.latent['depth'], b.T_wc, b.K, rng,
                                 cfg.rigid_tol_abs, cfg.rigid_tol_rel, cfg.rigid_ransac_iters,
                                 cfg.rigid_min_inliers, cfg.rigid_min_pixels)

    def _composed_flow(self, chain: list[CacheEntry]) -> np.ndarray:
        key = (chain[0].stamp, chain[-1].stamp)
        with self._memo_lock:
            cached = self._flow_memo.get(key)
        if cached is None:
            cached = self._compose(chain)
            self._remember(key, cached)
        return cached

    def _remember(self, key: tuple[float, float], flow: np.ndarray) -> None:
        with self._memo_lock:
            if len(self._flow_memo) > 8:
                self._flow_memo.clear()
            self._flow_memo[key] = flow

    def _flow(self, a: CacheEntry, b: CacheEntry) -> np.ndarray:
        stored = b.latent.get('flow_from_prev')
        if stored is not None and b.latent.get('prev_index') == a.index:
            return stored.astype(np.float32)
        key = (a.stamp, b.stamp)
        with self._memo_lock:
            cached = self._flow_memo.get(key)
        if cached is not None:
            return cached
        # DIS starts from a given flow of the right size: start from the flow the camera motion
        # alone causes (exact for the static scene), so DIS only finds objects' own motion
        flow = self._dis(a.latent['gray'], b.latent['gray'],
                         rigid_flow(a.points_world, b.T_wc, b.K))
        self._remember(key, flow)
        return flow


def _compose_flows(flows: list[np.ndarray]) -> np.ndarray:
    """One H x W x 2 flow equivalent to following `flows` one after the other."""
    h, w = flows[0].shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    pu, pv = u.copy(), v.copy()
    for f in flows:
        step = cv2.remap(f, pu, pv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        pu += step[..., 0]
        pv += step[..., 1]
    return np.stack([pu - u, pv - v], axis=-1)


def _consecutive(source: CacheEntry, target: CacheEntry,
                 via: list[CacheEntry]) -> list[CacheEntry] | None:
    """Source, every frame in between and target, if all are cached and forward in time."""
    gap = target.index - source.index
    if gap < 2 or len(via) != gap - 1:
        return None
    return [source, *sorted(via, key=lambda e: e.index), target]


def _hops(source: CacheEntry, target: CacheEntry, via: list[CacheEntry],
          max_hop: int) -> list[CacheEntry]:
    """Frames to chain optical flow through: direct when close, else greedy longest hops."""
    if abs(target.index - source.index) <= max_hop or not via:
        return [source, target]
    forward = target.index > source.index
    candidates = sorted(via, key=lambda e: e.index, reverse=not forward)
    path = [source]
    i = 0
    while abs(target.index - path[-1].index) > max_hop:
        best = None
        while i < len(candidates) and abs(candidates[i].index - path[-1].index) <= max_hop:
            best = candidates[i]
            i += 1
        if best is None:  # gap with nothing cached inside: take the next frame available
            if i >= len(candidates):
                break
            best = candidates[i]
            i += 1
        path.append(best)
    path.append(target)
    return path


def _rigid_flow_outliers(points_world: np.ndarray, flow: np.ndarray, depth: np.ndarray,
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
    ok = np.isfinite(X).all(axis=1)
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
    blocks = np.zeros(((h + step - 1) // step, (w + step - 1) // step), np.uint8)
    blocks[ys[bad] // step, xs[bad] // step] = 1
    return np.kron(blocks, np.ones((step, step), np.uint8))[:h, :w].astype(bool)


def _splat_mask(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Move a boolean mask along a forward flow field (nearest pixel), then close small holes."""
    h, w = mask.shape
    out = np.zeros((h, w), np.uint8)
    v, u = np.nonzero(mask)
    if len(v):
        tu = np.round(u + flow[v, u, 0]).astype(np.int64)
        tv = np.round(v + flow[v, u, 1]).astype(np.int64)
        ok = (tu >= 0) & (tu < w) & (tv >= 0) & (tv < h)
        out[tv[ok], tu[ok]] = 1
        kernel = np.ones((3, 3), np.uint8)
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, kernel)
    return out.astype(bool)


def _depth_confidence(depth: np.ndarray) -> np.ndarray:
    """Confidence in [0, 1]: 0 without depth, low at depth discontinuities (mixed pixels)."""
    z = np.nan_to_num(depth, nan=0.0)
    gx = np.abs(cv2.Sobel(z, cv2.CV_32F, 1, 0, ksize=3))
    gy = np.abs(cv2.Sobel(z, cv2.CV_32F, 0, 1, ksize=3))
    with np.errstate(divide='ignore', invalid='ignore'):
        rel = (gx + gy) / np.maximum(z, 1e-3) / 8.0
    conf = np.exp(-rel / 0.05).astype(np.float32)
    conf[z <= 0] = 0.0
    return conf


def _constant_velocity(steps: list[np.ndarray], centroid: np.ndarray, chained: np.ndarray
                       ) -> np.ndarray:
    """World motion over all ``steps`` at constant angular velocity: the median step rotation
    repeated, about ``centroid`` (world, start time), which moves as ``chained`` moves it."""
    rotvec = np.median([Rotation.from_matrix(M[:3, :3]).as_rotvec() for M in steps], axis=0)
    R = Rotation.from_rotvec(rotvec * len(steps)).as_matrix()
    return make_pose(R, transform_points(chained, centroid[None])[0] - R @ centroid)


def _view(entry: CacheEntry) -> RgbdView:
    """A cached frame as segment tracking sees it."""
    return RgbdView(entry.latent['gray'], entry.latent['depth'], entry.T_wc,
                    entry.points_world, entry.dynamic_mask)


def _stored_segment_motion(a: CacheEntry, b: CacheEntry, uv: np.ndarray) -> np.ndarray | None:
    """The rigid motion a -> b estimated while processing b for the segment of frame a that
    most of the pixels ``uv`` (frame a) lie on; None when there is none."""
    labels = b.latent.get('prev_segments')
    if labels is None or b.latent.get('prev_index') != a.index or not len(uv):
        return None
    h, w = labels.shape
    iu = np.clip(np.round(uv[:, 0]).astype(np.int64), 0, w - 1)
    iv = np.clip(np.round(uv[:, 1]).astype(np.int64), 0, h - 1)
    votes = np.bincount(labels[iv, iu], minlength=2)
    k = int(np.argmax(votes[1:])) + 1
    # the segment must hold most of the points (not the background or another object)
    if votes[k] < 0.5 * len(uv):
        return None
    M = b.latent['prev_segment_motions'][k].astype(np.float64)
    return M if np.isfinite(M).all() else None
