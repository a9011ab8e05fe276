"""What the rgbd backend keeps of a processed frame: its cached latent (`RgbdLatent`), the view of
a frame that segment tracking and queries read (`RgbdView`), and the segments' rigid motions
between two frames (`SegmentMotions`). Arrays at the processing resolution; lengths in metres;
motions are world-frame rigid transforms ``M`` with ``X_world(t) = M @ X_world(t - 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fourd_ros.core.engine.backend import CacheEntry
from fourd_ros.core.flow import FlowLink


@dataclass
class RgbdView:
    """What segment tracking needs of one processed frame (processing resolution).

    Attributes:
        gray: H x W uint8 intensity.
        depth: H x W float32 metres, NaN = missing.
        T_wc: 4x4 camera-to-world pose.
        points_world: H x W x 3 float32 world points (NaN without depth).
        dynamic: H x W bool dynamic mask.
    """

    gray: np.ndarray
    depth: np.ndarray
    T_wc: np.ndarray
    points_world: np.ndarray
    dynamic: np.ndarray

    @classmethod
    def of(cls, entry: CacheEntry) -> RgbdView:
        """A cached frame as segment tracking sees it."""
        latent: RgbdLatent = entry.latent
        return cls(latent.gray, latent.depth, entry.T_wc, entry.points_world, entry.dynamic_mask)


@dataclass
class SegmentMotions:
    """Rigid motions of one frame's moving segments from the previous frame to the current.

    Attributes:
        labels: H x W uint8 segment labels on the previous frame's pixel grid (0 = none), or
            uint16 labels on the current frame's grid (`SegmentMotionTracker.current_segments`).
        motions: (n + 1) x 4 x 4 float32 world-frame motions, row k for label k (row 0 unused).
    """

    labels: np.ndarray
    motions: np.ndarray


@dataclass
class RgbdLatent(FlowLink):
    """The rgbd backend's cached record of one frame (the engine stores pose, intrinsics, world
    points and masks beside it). Its `FlowLink` flow is the rigid motion's flow on tracked
    objects, None when tracking was lost.

    Attributes:
        gray: H x W uint8 intensity.
        depth: H x W float32 metres, NaN = missing.
        segments_from_prev: the previous frame's moving segments (labels on its pixel grid)
            with their rigid motions to this frame; None when not estimated.
    """

    gray: np.ndarray
    depth: np.ndarray
    segments_from_prev: SegmentMotions | None = None
