"""RGB-D backend: metric depth from the sensor, pose by RGB-D odometry on static pixels, motion by
dense optical flow (OpenCV DIS) lifted to 3D with depth (Track4World's "2D flow + depth" hybrid),
and a rigid motion per moving object estimated frame to frame. The frame's moving segments are
the previous segments moved into it by those motions (plus slow objects found by a rigid fit to
their flow); their scene flow is the rigid motion's velocity at each point.

The package, one job per module:

- ``config.py``: settings of every part;
- ``aligner.py``: stateless RGB-D alignment (ICP + photometric), shared by the parts below;
- ``odometry.py``: the camera tracker (keyframe model, fusion, relocalisation via
  ``relocalize.py``);
- ``flow.py``: optical-flow utilities; ``segmentation.py``: dynamic masks and segment labels;
- ``motion_scoring.py`` (stateless) and ``segment_motion.py`` (the frame-to-frame tracker):
  rigid motion of each moving segment;
- ``queries.py``: motion queries between cached frames;
- ``align_kernels.py``, ``mask_kernels.py``: compiled (numba) inner loops of the alignment
  and of the per-pixel motion masks and motion costs;
- ``latent.py``: what is cached per frame (`RgbdLatent`);
- ``backend.py``: this module, the per-frame path that ties them together.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from fourd_ros.core.backends.rgbd.config import RgbdConfig
from fourd_ros.core.backends.rgbd.flow import (rigid_flow_of_segments, rigid_flow_outliers,
                                               splat_mask)
from fourd_ros.core.backends.rgbd.latent import RgbdLatent, RgbdView
from fourd_ros.core.backends.rgbd.odometry import RgbdOdometry
from fourd_ros.core.backends.rgbd.queries import QueryDecoder
from fourd_ros.core.backends.rgbd.segment_motion import SegmentMotionTracker
from fourd_ros.core.backends.rgbd.segmentation import MotionSegmenter
from fourd_ros.core.engine.backend import CacheEntry, MotionEstimate, scaled_size
from fourd_ros.core.engine.objects import rigid_scene_flow
from fourd_ros.core.flow import DisFlow, half_flow
from fourd_ros.core.geometry import invert_pose, nan_to_zero, transform_points, unproject_depth
from fourd_ros.core.types import Frame, FrameResult


class RgbdBackend:
    """Backend for cameras with registered metric depth (see module docstring)."""

    name = 'rgbd'
    metric = True

    def __init__(self, config: RgbdConfig | None = None) -> None:
        self.config = config or RgbdConfig()
        self._dis = DisFlow(self.config.flow_preset, self.config.flow_smoothness,
                            self.config.flow_gradient_weight)
        self._queries = QueryDecoder(self.config, self._dis)
        self.reset()

    def reset(self) -> None:
        self._close('_odometry', '_segments', '_segmenter')
        self._odometry: RgbdOdometry | None = None
        self._segments: SegmentMotionTracker | None = None
        self._prev: RgbdView | None = None
        # the previous frame's dynamic mask with the parts staying still explains kept: the
        # camera tracking stays off all of it (measured: off the dynamic mask alone, seed 8's
        # camera error went from 2.9 to 4.4 mm)
        self._prev_flagged: np.ndarray | None = None
        self._prev_stamp = 0.0
        self._poses: list[np.ndarray] = []
        self._segmenter: MotionSegmenter | None = None
        self._queries.clear()

    # ------------------------------------------------------------------ per frame
    def close(self) -> None:
        """Stop the trackers' worker threads; the rest is host arrays, dropped with the
        backend."""
        self._close('_odometry', '_segments', '_segmenter')

    def _close(self, *names: str) -> None:
        """Close the named parts (each stops its worker thread) and drop them."""
        for name in names:
            if getattr(self, name, None) is not None:
                getattr(self, name).close()
                setattr(self, name, None)

    def processing_size(self, width: int, height: int, requested_width: int
                        ) -> tuple[int, int]:
        return scaled_size(width, height, requested_width, 8)

    def process(self, frame: Frame, context: list[CacheEntry] | None = None
                ) -> tuple[FrameResult, RgbdLatent]:
        if frame.depth is None:
            raise ValueError('the rgbd backend needs a registered depth image with every frame')
        cfg = self.config
        h, w = frame.rgb.shape[:2]
        gray = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
        depth = frame.depth.astype(np.float32, copy=True)
        depth[~((depth >= cfg.min_depth) & (depth <= cfg.max_depth))] = np.nan
        if self._segmenter is None:  # (after `reset` or `close`: the parts hold threads)
            self._segmenter = MotionSegmenter(cfg.segmentation_gaps, cfg.dynamic_rel,
                                              cfg.dynamic_abs, cfg.still_photo_max,
                                              cfg.still_min_unexplained)
        if self._odometry is None or self._odometry.K.shape != (3, 3) \
                or not np.allclose(self._odometry.K, frame.K):
            self._close('_odometry', '_segments')
            self._odometry = RgbdOdometry(frame.K, w, h, cfg.odometry)
            self._segments = SegmentMotionTracker(frame.K, w, h, cfg.segments)
            self._prev = None
            self._segmenter.clear()
        if cfg.segment_motion:
            self._segments.prefetch(gray, depth)
        flow = None
        static_hint = None
        if self._prev is not None:
            # the pose is not known yet: predict it with constant velocity for the flow prior
            flow = self._dis.from_static(self._prev.gray, gray, self._prev.points_world,
                                         self._predict_pose(), frame.K)
            # objects the segmentation has not caught yet (at stream start it has no history;
            # later, slow or partly textureless ones) would drag the camera: keep the flow's
            # outliers to the dominant rigid motion (PnP RANSAC) out of this frame's odometry too
            known = self._prev_flagged | rigid_flow_outliers(
                self._prev.points_world, flow, depth, frame.K, cfg.flow_outlier_px,
                cfg.dynamic_rel, cfg.dynamic_abs, cfg.flow_outlier_step_px)
            static_hint = ~splat_mask(known, flow)
        odo = self._odometry.track(gray, depth, static_hint)
        T_wc = odo.T_wc
        if flow is not None and odo.relocalized:
            # the flow followed the constant-velocity guess that failed: follow the found pose
            flow = self._dis.from_static(self._prev.gray, gray, self._prev.points_world, T_wc,
                                         frame.K)
        if not odo.ok:
            # lost: world motion since the last frame is unknown, so is what moved in it
            self._segmenter.clear()
            flow = None
        self._poses = [self._poses[-1] if self._poses else T_wc, T_wc]
        points_cam = unproject_depth(depth, frame.K)
        points_world = transform_points(T_wc, points_cam).astype(np.float32)
        depth_or_zero = nan_to_zero(depth)
        confidence = _depth_confidence(depth_or_zero)
        dynamic = flagged = np.zeros((h, w), bool)
        segments = None
        current = np.zeros((h, w), np.uint16)
        motions = np.zeros((1, 4, 4), np.float32)
        if flow is not None:
            if cfg.segment_motion:
                segments = self._segments.estimate(
                    self._prev, RgbdView(gray, depth, T_wc, points_world, dynamic), flow)
                flow = rigid_flow_of_segments(segments, self._prev, T_wc, frame.K, flow)
            dynamic, flagged = self._segmenter.dynamic_mask(points_world, flow, gray, depth,
                                                            T_wc, frame.K)
            if segments is not None:
                now = self._segments.current_segments(
                    self._prev, RgbdView(gray, depth, T_wc, points_world, dynamic), segments,
                    dynamic, flow)
                current, motions = now.labels, now.motions
        self._segmenter.push(points_world, gray)
        dt = frame.stamp - self._prev_stamp if self._prev is not None else 1.0
        result = FrameResult(
            stamp=frame.stamp, colors=frame.rgb, depth=depth_or_zero,
            points_cam=points_cam, points_world=points_world, confidence=confidence,
            K=frame.K.copy(), T_wc=T_wc, dynamic_mask=dynamic, segments=current,
            scene_flow=rigid_scene_flow(points_world, current, motions, dt, dynamic),
            metric=True,
            extras={'keyframe': bool(odo.is_keyframe), 'tracking_ok': bool(odo.ok),
                    'tracking_relocalized': bool(odo.relocalized),
                    'odometry_inliers': int(odo.num_inliers)})
        self._prev = RgbdView(gray, depth, T_wc, points_world, dynamic)
        self._prev_flagged = flagged
        self._prev_stamp = frame.stamp
        latent = RgbdLatent(gray, depth, segments, prev_index=frame.index - 1,
                            flow_from_prev=None if flow is None else half_flow(flow))
        return result, latent

    def _predict_pose(self) -> np.ndarray:
        """Constant-velocity guess of the current camera-to-world pose."""
        older, last = self._poses
        return last @ invert_pose(older) @ last

    # ------------------------------------------------------------------ motion decoding
    def motion(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
               via: list[CacheEntry] | None = None) -> MotionEstimate:
        """Positions at ``target`` of the points seen at ``pixels`` of ``source``
        (`queries.QueryDecoder`; may run while a frame is processed)."""
        return self._queries.motion(source, target, pixels, via)


def _depth_confidence(z: np.ndarray) -> np.ndarray:
    """Confidence in [0, 1] of depth ``z`` (metres, 0 = none): 0 without depth, low at depth
    discontinuities (mixed pixels)."""
    gx = cv2.Sobel(z, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(z, cv2.CV_32F, 0, 1, ksize=3)
    return np.exp(_confidence_exponent(z, gx, gy))


@numba.njit(cache=True, nogil=True)
def _confidence_exponent(z: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """-(|gx| + |gy|) / max(z, 1 mm) / 8 / 0.05 (float32; -inf where z <= 0: confidence 0)."""
    out = np.empty(z.shape, np.float32)
    floor, eighth, width = np.float32(1e-3), np.float32(8.0), np.float32(0.05)
    for v in range(z.shape[0]):
        for u in range(z.shape[1]):
            if z[v, u] <= 0:
                out[v, u] = -np.inf
                continue
            rel = (abs(gx[v, u]) + abs(gy[v, u])) / max(z[v, u], floor) / eighth
            out[v, u] = -rel / width
    return out
