"""Oracle backend: replays a sequence's own ground truth through the streaming engine.

NOT a perception backend. It reads the answers from the input (GT depth, GT pose and, when given,
GT motion), so it scores perfectly by construction. It exists to test the evaluation code and the
pipeline end to end (reader -> engine -> cache -> queries -> metrics): any error it shows is a bug
in that plumbing, never a property of a method. Never present its numbers as results.

Conventions as in ``fourd_ros.core.types``: world = the first camera of the stream (OpenCV axes,
metres), poses camera-to-world.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fourd_ros.core.engine.backend import CacheEntry, MotionEstimate, scaled_size
from fourd_ros.core.engine.objects import label_moving_segments
from fourd_ros.core.geometry import (finite_rows, invert_pose, project, sample_bilinear,
                                     transform_points, unproject_depth)
from fourd_ros.core.types import Frame, FrameResult, PointStatus

MotionGT = Callable[[int, int], tuple[np.ndarray, np.ndarray]]
"""(source index, target index) -> (H x W x 3 GT-world positions at the target time of the source
frame's pixels, H x W bool visible in the target frame), e.g. ``SyntheticClip.points_at``."""

DynamicGT = Callable[[int], np.ndarray]
"""frame index -> H x W bool mask of moving scene points, e.g. ``SyntheticClip.dynamic_mask``."""


@dataclass
class OracleLatent:
    """The oracle's cached record of one frame: its ground-truth depth (H x W float32 metres,
    NaN = invalid) and its index in the sequence (where its ground truth is looked up)."""

    depth: np.ndarray
    frame_index: int


class OracleBackend:
    """Ground-truth replay backend (testing only; see the module docstring).

    Depth comes from ``frame.depth``, the pose from ``frame.T_wc_gt`` re-expressed relative to the
    first frame's GT pose (world = first camera). Motion comes from ``motion_gt`` when given;
    without it the scene is taken as static: a source point stays where it is in the world, and
    it is visible in the target when it projects inside the target image in front of the camera
    and the target depth there agrees within ``max(occlusion_abs, occlusion_rel * z)`` metres.

    Frame indices passed to ``motion_gt``/``dynamic_gt`` are the engine's stream indices, which
    equal the sequence indices when the stream starts at the sequence's first frame. The oracle
    runs at the input resolution only (``EngineConfig(width=0)``) because the GT arrays are at
    that resolution.

    Latent record per frame: `OracleLatent`.
    """

    name = 'oracle'
    metric = True

    def __init__(self, motion_gt: MotionGT | None = None, dynamic_gt: DynamicGT | None = None,
                 occlusion_abs: float = 0.03, occlusion_rel: float = 0.0,
                 keyframe_every: int = 10, memo_size: int = 4,
                 min_segment_pixels: int = 64) -> None:
        self.motion_gt = motion_gt
        self.dynamic_gt = dynamic_gt
        self.occlusion_abs = float(occlusion_abs)
        self.occlusion_rel = float(occlusion_rel)
        self.keyframe_every = max(1, int(keyframe_every))
        self.min_segment_pixels = int(min_segment_pixels)
        self._memo_size = max(1, int(memo_size))
        self.reset()

    def reset(self) -> None:
        self._T_first_inv: np.ndarray | None = None
        self._last_T = np.eye(4)
        self._last_stamp: float | None = None
        self._memo: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    # ------------------------------------------------------------------ per frame
    def close(self) -> None:
        """Nothing to release: the state is host arrays, dropped with the backend."""

    def processing_size(self, width: int, height: int, requested_width: int
                        ) -> tuple[int, int]:
        return scaled_size(width, height, requested_width, 8)

    def process(self, frame: Frame, context: list[CacheEntry] | None = None
                ) -> tuple[FrameResult, OracleLatent]:
        if frame.depth is None:
            raise ValueError('the oracle backend needs ground-truth depth with every frame')
        h, w = frame.rgb.shape[:2]
        depth = frame.depth.astype(np.float32, copy=True)
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
        pose_ok = frame.T_wc_gt is not None and bool(np.all(np.isfinite(frame.T_wc_gt)))
        if pose_ok:
            T_gt = np.asarray(frame.T_wc_gt, np.float64)
            if self._T_first_inv is None:
                self._T_first_inv = invert_pose(T_gt)
            T_wc = self._T_first_inv @ T_gt
        elif self._T_first_inv is None:
            raise ValueError('the oracle backend needs a ground-truth pose on the first frame')
        else:
            T_wc = self._last_T.copy()  # GT pose missing: hold the last one
        self._last_T = T_wc
        points_cam = unproject_depth(depth, frame.K)
        points_world = transform_points(T_wc, points_cam).astype(np.float32)
        if self.dynamic_gt is not None:
            dynamic = np.asarray(self.dynamic_gt(frame.index), bool)
            if dynamic.shape != (h, w):
                raise ValueError(_RESOLUTION_MSG)
        else:
            dynamic = np.zeros((h, w), bool)
        valid = np.isfinite(depth)
        result = FrameResult(
            stamp=frame.stamp, colors=frame.rgb, depth=np.nan_to_num(depth, nan=0.0),
            points_cam=points_cam, points_world=points_world,
            confidence=valid.astype(np.float32), K=np.asarray(frame.K, np.float64).copy(),
            T_wc=T_wc, dynamic_mask=dynamic,
            segments=label_moving_segments(dynamic, depth, self.min_segment_pixels),
            scene_flow=self._scene_flow(frame, points_world, dynamic), metric=True,
            extras={'keyframe': frame.index % self.keyframe_every == 0,
                    'tracking_ok': pose_ok, 'oracle': True})
        return result, OracleLatent(depth, int(frame.index))

    def _scene_flow(self, frame: Frame, points_world: np.ndarray, dynamic: np.ndarray
                    ) -> np.ndarray:
        """World velocities of the frame's pixels: from GT motion back to the previous frame
        when given (0 on static pixels), else 0 on static and NaN on moving pixels."""
        flow = np.zeros(points_world.shape, np.float32)
        previous, self._last_stamp = self._last_stamp, frame.stamp
        if self.motion_gt is None or previous is None or frame.index == 0:
            flow[dynamic] = np.nan
            return flow
        P_gt, _ = self._gt_motion(frame.index, frame.index - 1)
        before = transform_points(self._T_first_inv, P_gt)
        velocity = (points_world - before) / (frame.stamp - previous)
        flow[dynamic] = velocity[dynamic]
        flow[~finite_rows(points_world)] = np.nan
        return flow

    # ------------------------------------------------------------------ motion
    def motion(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
               via: list[CacheEntry] | None = None) -> MotionEstimate:
        pixels = np.asarray(pixels, np.float32).reshape(-1, 2)
        n = len(pixels)
        h, w = source.dynamic_mask.shape
        src_world = sample_bilinear(source.points_world, pixels).astype(np.float32)
        if self.motion_gt is not None and self._T_first_inv is not None:
            P_gt, vis_gt = self._gt_motion(source.latent.frame_index, target.latent.frame_index)
            if P_gt.shape[:2] != (h, w):
                raise ValueError(_RESOLUTION_MSG)
            P = transform_points(self._T_first_inv, P_gt).astype(np.float32)
            positions = sample_bilinear(P, pixels).astype(np.float32)
            ui = np.clip(np.rint(pixels[:, 0]).astype(np.int64), 0, w - 1)
            vi = np.clip(np.rint(pixels[:, 1]).astype(np.int64), 0, h - 1)
            visible = np.asarray(vis_gt, bool)[vi, ui]
        else:
            positions = src_world.copy()
            visible = None
        cam = transform_points(invert_pose(target.T_wc), positions.astype(np.float64))
        px, z = project(cam, target.K)
        inside = (finite_rows(px) & (z > 0) & (px[:, 0] >= -0.5)
                  & (px[:, 0] < w - 0.5) & (px[:, 1] >= -0.5) & (px[:, 1] < h - 0.5))
        if visible is None:
            depth_t = target.latent.depth
            ui = np.clip(np.rint(np.nan_to_num(px[:, 0])), 0, w - 1).astype(np.int64)
            vi = np.clip(np.rint(np.nan_to_num(px[:, 1])), 0, h - 1).astype(np.int64)
            z_seen = np.where(inside, depth_t[vi, ui], np.nan)
            tol = np.maximum(self.occlusion_abs, self.occlusion_rel * np.abs(z))
            visible = inside & (np.abs(z_seen - z) <= tol)
        status = np.full(n, PointStatus.VALID, np.uint8)
        status[~visible] = PointStatus.OCCLUDED
        status[~visible & ~inside] = PointStatus.OUT_OF_VIEW
        invalid = ~finite_rows(positions) | ~finite_rows(src_world)
        status[invalid] = PointStatus.INVALID
        positions[invalid] = np.nan
        conf = np.where(invalid, 0.0, 1.0).astype(np.float32)
        return MotionEstimate(positions=positions, pixels=px.astype(np.float32),
                              confidence=conf, status=status)

    def _gt_motion(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """GT motion of frame i's pixels to time j, memoised (tracks ask for it every frame)."""
        key = (int(i), int(j))
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return hit
        P, vis = self.motion_gt(*key)
        hit = (np.asarray(P, np.float64), np.asarray(vis, bool))
        self._memo[key] = hit
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return hit


_RESOLUTION_MSG = ('the oracle backend runs at the input resolution only '
                   '(EngineConfig(width=0) / --width 0)')
