"""Data types shared by readers, backends, the streaming engine and evaluation.

Conventions (everywhere in the core):
- Camera frame: OpenCV optical axes (x right, y down, z forward), metres (or model units when a
  result says ``metric=False``).
- World frame: the first camera of the stream (OpenCV axes). The ROS layer rotates it to REP-103.
- Poses ``T_wc``: 4x4 float64 camera-to-world (world <- camera), ``p_w = T_wc @ p_c``.
- Intrinsics ``K``: 3x3 float64 pinhole matrix in pixels of the image it belongs to.
- Stamps: float seconds.
- Pixel coordinates (u, v): u = column, v = row, pixel centres at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class PointStatus(IntEnum):
    """Per-point status of a motion query (values match fourd_ros_msgs/srv/QueryMotion)."""

    VALID = 0
    OCCLUDED = 1
    OUT_OF_VIEW = 2
    OUT_OF_WINDOW = 3
    INVALID = 4


class TrackStatus(IntEnum):
    """Status of a persistent track (values match fourd_ros_msgs/msg/TrackedPoints)."""

    TRACKED = 0
    OCCLUDED = 1
    LOST = 2


@dataclass(frozen=True, eq=False)
class GroundPlane:
    """The flat floor a camera moves on (a ground robot's camera): with it a monocular
    backend can give metres (its height, seen in the floor's image motion, sets the scale).

    Attributes:
        up: unit 3-vector in the camera optical frame, pointing away from the floor (the
            robot's z axis, REP-103).
        height: the camera centre's height above the floor, metres (> 0).
    """

    up: np.ndarray
    height: float

    def __post_init__(self) -> None:
        up = np.asarray(self.up, np.float64).reshape(3)
        norm = float(np.linalg.norm(up))
        if not np.isfinite(norm) or norm < 1e-9 or not self.height > 0:
            raise ValueError(f'a ground plane needs a non-zero up vector and a height > 0 m, '
                             f'got up {up.tolist()}, height {self.height}')
        object.__setattr__(self, 'up', up / norm)
        object.__setattr__(self, 'height', float(self.height))

    @classmethod
    def pitched(cls, height: float, pitch_down_deg: float = 0.0) -> GroundPlane:
        """The floor under a camera ``height`` m above it, without roll, its optical axis
        ``pitch_down_deg`` below the horizon."""
        pitch = np.deg2rad(pitch_down_deg)
        return cls(up=np.array([0.0, -np.cos(pitch), -np.sin(pitch)]), height=height)


@dataclass
class Frame:
    """One input frame as read from a camera, a file reader or a ROS topic.

    Attributes:
        stamp: capture time in seconds.
        rgb: H x W x 3 uint8 image, RGB order.
        depth: optional H x W float32 depth in metres registered to ``rgb``; 0 or NaN = invalid.
        K: optional 3x3 intrinsics of ``rgb`` in pixels (None = unknown / uncalibrated).
        T_wc_gt: optional 4x4 ground-truth camera-to-world pose (evaluation only, never used by
            backends for inference).
        name: frame name or index as a string (used for output file names).
        index: running index in the sequence, starting at 0.
        intrinsics_known: False when ``K`` is a default the engine filled in for an
            uncalibrated camera (a backend may then estimate the focal length itself).
        ground: the floor under the camera when it is known (a monocular backend takes
            metres from it; None = up to scale).
    """

    stamp: float
    rgb: np.ndarray
    depth: np.ndarray | None = None
    K: np.ndarray | None = None
    T_wc_gt: np.ndarray | None = None
    name: str = ''
    index: int = 0
    intrinsics_known: bool = True
    ground: GroundPlane | None = None


@dataclass
class FrameResult:
    """What a backend outputs for one frame (all arrays on the CPU, float32 unless noted).

    Attributes:
        stamp: capture time in seconds (same as the input frame).
        colors: H x W x 3 uint8 RGB at the processing resolution.
        depth: H x W depth along the optical axis (metres if ``metric``); 0/NaN = invalid.
        points_cam: H x W x 3 points in the camera optical frame (NaN = invalid).
        points_world: H x W x 3 points in the world frame (first camera, OpenCV axes).
        confidence: H x W in [0, 1].
        K: 3x3 float64 intrinsics at the processing resolution.
        T_wc: 4x4 float64 camera-to-world pose.
        dynamic_mask: H x W bool, True where the scene point moves in the world frame.
        segments: H x W uint16 moving segments (0 = static): label k marks the pixels of the
            frame's k-th moving segment, one rigid part (labels are per frame; the engine
            follows them as objects, ``engine/objects.py``).
        scene_flow: H x W x 3 float32 world-frame velocity of each pixel's scene point at this
            frame's time, metres (or scene units) per second; 0 on static pixels, NaN where
            unknown.
        metric: True when lengths are metres, False when up to an unknown scale.
        extras: backend-specific diagnostics (timings, inlier counts, ...).
    """

    stamp: float
    colors: np.ndarray
    depth: np.ndarray
    points_cam: np.ndarray
    points_world: np.ndarray
    confidence: np.ndarray
    K: np.ndarray
    T_wc: np.ndarray
    dynamic_mask: np.ndarray
    segments: np.ndarray
    scene_flow: np.ndarray
    metric: bool
    extras: dict = field(default_factory=dict)


@dataclass
class QueryResult:
    """Answer to a motion query: where are source points at the target time.

    All arrays have one row per query point, in the order of the request.

    Attributes:
        source_stamp: stamp of the source frame (seconds).
        target_stamp: resolved stamp of the target frame (seconds).
        positions: N x 3 world-frame positions at the target time (NaN where INVALID or
            OUT_OF_WINDOW: OCCLUDED and OUT_OF_VIEW points carry their estimated positions).
        source_positions: N x 3 world-frame positions at the source time (NaN where unknown).
        displacements: N x 3 ``positions - source_positions`` (world frame).
        confidence: N in [0, 1].
        status: N uint8 ``PointStatus`` values.
        object_ids: N uint64 id of the moving object each source point belongs to at the
            source time (0 = static or unknown).
        message: human-readable summary ('' when all is well).
    """

    source_stamp: float
    target_stamp: float
    positions: np.ndarray
    source_positions: np.ndarray
    displacements: np.ndarray
    confidence: np.ndarray
    status: np.ndarray
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    message: str = ''


@dataclass
class ObjectMotionResult:
    """Answer to an object query: the rigid motion of a moving object between two cached frames.

    Attributes:
        object_id: the object asked about.
        source_stamp: stamp of the source frame (seconds).
        target_stamp: resolved stamp of the target frame (seconds; NaN when not cached).
        motion: 4x4 world-frame rigid transform, ``X(target) = motion @ X(source)`` (NaN when
            not found).
        num_points: the object's points in the source frame whose motion was followed.
        confidence: in [0, 1].
        message: why there is no answer, or '' when ``motion`` is valid.
    """

    object_id: int
    source_stamp: float
    target_stamp: float
    motion: np.ndarray
    num_points: int = 0
    confidence: float = 0.0
    message: str = ''

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.motion).all())
