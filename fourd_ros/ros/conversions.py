"""numpy <-> ROS 2 message conversions (no rclpy node here; message packages only).

Frames: the core's world is the first camera's optical frame (OpenCV axes). `FrameTransforms`
holds the fixed transforms that place it in the ROS tree (REP-105 map -> odom -> base -> camera):
odom is the base frame's pose at the first image, so T_odom_world = T_base_cam.
"""

from __future__ import annotations

import array
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, TransformStamped, Vector3
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from fourd_ros.core.geometry import R_BODY_FROM_OPTICAL, invert_pose, make_pose, transform_points


# ---------------------------------------------------------------------------- time
def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(seconds: float) -> Time:
    """float seconds -> builtin_interfaces/Time (nanoseconds rounded)."""
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# ---------------------------------------------------------------------------- poses
def transform_to_matrix(t) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4."""
    q = t.rotation
    R = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    return make_pose(R, [t.translation.x, t.translation.y, t.translation.z])


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4."""
    q = pose.orientation
    R = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    return make_pose(R, [pose.position.x, pose.position.y, pose.position.z])


def matrix_to_pose(T: np.ndarray) -> Pose:
    """4x4 -> geometry_msgs/Pose."""
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    return Pose(position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                       w=float(q[3])))


def matrix_to_transform(T: np.ndarray, parent: str, child: str, stamp: Time) -> TransformStamped:
    """4x4 T_parent_child -> TransformStamped."""
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    pose = matrix_to_pose(T)
    msg.transform.translation = Vector3(x=pose.position.x, y=pose.position.y, z=pose.position.z)
    msg.transform.rotation = pose.orientation
    return msg


# Standard REP-103 mounting of an optical frame under its body-axes camera link.
T_LINK_FROM_OPTICAL = make_pose(R_BODY_FROM_OPTICAL, np.zeros(3))


@dataclass
class FrameTransforms:
    """Fixed transforms between the core's world and the ROS frames.

    Attributes:
        T_base_cam: 4x4 pose of the camera optical frame in the base frame.
    """

    T_base_cam: np.ndarray

    @property
    def T_odom_world(self) -> np.ndarray:
        """The core's world (first camera optical frame) expressed in odom (= first base pose)."""
        return self.T_base_cam

    def odom_from_base(self, T_wc: np.ndarray) -> np.ndarray:
        """Base pose in odom from the core's camera-to-world pose."""
        return self.T_base_cam @ T_wc @ invert_pose(self.T_base_cam)

    def world_to_odom_points(self, points: np.ndarray) -> np.ndarray:
        return transform_points(self.T_odom_world, points)

    def odom_to_world_points(self, points: np.ndarray) -> np.ndarray:
        return transform_points(invert_pose(self.T_odom_world), points)


# ---------------------------------------------------------------------------- clouds
_CLOUD_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('rgb', '<f4'),
                         ('confidence', '<f4')])
_CLOUD_FIELDS = [PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
                 PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1),
                 PointField(name='z', offset=8, datatype=PointField.FLOAT32, count=1),
                 PointField(name='rgb', offset=12, datatype=PointField.FLOAT32, count=1),
                 PointField(name='confidence', offset=16, datatype=PointField.FLOAT32, count=1)]


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """N x 3 (or H x W x 3) uint8 RGB -> float32 holding the bits of uint32 0x00RRGGBB (PCL)."""
    c = colors.astype(np.uint32)
    return ((c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]).view(np.float32)


def points_to_cloud(points: np.ndarray, colors: np.ndarray, confidence: np.ndarray,
                    header: Header) -> PointCloud2:
    """PointCloud2 with fields x, y, z, rgb, confidence (float32, 20 bytes per point).

    `points` H x W x 3 gives an organized cloud (height H, width W; NaN = invalid, is_dense
    False); N x 3 gives an unorganized one (height 1). Units of `points`, frame of `header`.
    """
    if points.ndim == 3:
        height, width = points.shape[:2]
    else:
        height, width = 1, points.shape[0]
    n = height * width
    arr = np.empty(n, _CLOUD_DTYPE)
    xyz = points.reshape(n, 3)
    arr['x'], arr['y'], arr['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    arr['rgb'] = pack_rgb(colors.reshape(n, 3))
    arr['confidence'] = confidence.reshape(n)
    msg = PointCloud2(header=header, height=height, width=width, fields=_CLOUD_FIELDS,
                      is_bigendian=False, point_step=_CLOUD_DTYPE.itemsize,
                      row_step=_CLOUD_DTYPE.itemsize * width,
                      is_dense=bool(np.isfinite(xyz).all()))
    msg.data = arr.tobytes()
    return msg


def cloud_to_array(msg: PointCloud2) -> np.ndarray:
    """Structured array (height x width) of a cloud written by `points_to_cloud`."""
    arr = np.frombuffer(bytes(msg.data), _CLOUD_DTYPE)
    return arr.reshape(msg.height, msg.width)


# ---------------------------------------------------------------------------- paths, markers
def make_pose_stamped(T: np.ndarray, frame_id: str, stamp: Time) -> PoseStamped:
    return PoseStamped(header=Header(stamp=stamp, frame_id=frame_id), pose=matrix_to_pose(T))


def make_path(poses: list[tuple[Time, np.ndarray]], frame_id: str, stamp: Time) -> Path:
    """nav_msgs/Path of (stamp, 4x4) poses in `frame_id`."""
    return Path(header=Header(stamp=stamp, frame_id=frame_id),
                poses=[make_pose_stamped(T, frame_id, s) for s, T in poses])


def make_odometry(T: np.ndarray, T_prev: np.ndarray | None, dt: float, odom_frame: str,
                  base_frame: str, stamp: Time) -> Odometry:
    """nav_msgs/Odometry: pose in odom, twist in the base frame by finite differences."""
    msg = Odometry(header=Header(stamp=stamp, frame_id=odom_frame), child_frame_id=base_frame)
    msg.pose.pose = matrix_to_pose(T)
    if T_prev is not None and dt > 0:
        delta = invert_pose(T_prev) @ T  # motion in the previous base frame
        v = delta[:3, 3] / dt
        w = Rotation.from_matrix(delta[:3, :3]).as_rotvec() / dt
        msg.twist.twist.linear = Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2]))
        msg.twist.twist.angular = Vector3(x=float(w[0]), y=float(w[1]), z=float(w[2]))
    return msg


def track_markers(trails: dict[int, Sequence[Point]], frame_id: str, stamp: Time,
                  lifetime_s: float) -> MarkerArray:
    """Track trails as one LINE_LIST (segments with fading alpha) + current heads as POINTS.

    `trails` maps a track id to its positions, oldest first, as `Point` messages: the caller
    keeps the Points it already built for ~/tracks, so a call creates no new ones (building
    thousands of message objects per call was the node's costliest output)."""
    lines = Marker(header=Header(stamp=stamp, frame_id=frame_id), ns='track_trails', id=0,
                   type=Marker.LINE_LIST, action=Marker.ADD)
    heads = Marker(header=Header(stamp=stamp, frame_id=frame_id), ns='track_heads', id=1,
                   type=Marker.POINTS, action=Marker.ADD)
    lines.scale.x = 0.01
    heads.scale.x = heads.scale.y = 0.03
    lines.pose.orientation.w = heads.pose.orientation.w = 1.0
    for marker in (lines, heads):
        marker.lifetime.sec = int(lifetime_s)
        marker.lifetime.nanosec = int((lifetime_s % 1.0) * 1e9)
    line_points: list[Point] = []
    line_colors: list[ColorRGBA] = []
    head_points: list[Point] = []
    head_colors: list[ColorRGBA] = []
    for track_id, trail in trails.items():
        n = len(trail)
        if not n:
            continue
        colors = _trail_colors(int(track_id) % _HUES, n)
        points = list(trail)
        for k in range(n - 1):
            line_points += (points[k], points[k + 1])
        line_colors += colors[:-1]
        head_points.append(points[-1])
        head_colors.append(colors[-1])
    lines.points, lines.colors = line_points, line_colors
    heads.points, heads.colors = head_points, head_colors
    return MarkerArray(markers=[lines, heads])


_HUES = 64  # track colours repeat every 64 ids (golden-ratio hues, so neighbours differ)


@functools.lru_cache(maxsize=_HUES * 32)  # every hue x trail length up to 32
def _trail_colors(hue_index: int, n: int) -> tuple[ColorRGBA, ...]:
    """Colours of a trail of n positions: both ends of each of its n - 1 segments (alpha fading
    from 0.2 at the oldest to 1), then its head (opaque). Shared, read-only messages."""
    r, g, b = _hue_to_rgb((hue_index * 0.618034) % 1.0)
    out: list[ColorRGBA] = []
    for k in range(n - 1):
        c = ColorRGBA(r=r, g=g, b=b, a=0.2 + 0.8 * (k + 1) / max(n - 1, 1))
        out += (c, c)
    out.append(ColorRGBA(r=r, g=g, b=b, a=1.0))
    return tuple(out)


def delete_all_markers(frame_id: str, stamp: Time) -> MarkerArray:
    return MarkerArray(markers=[Marker(header=Header(stamp=stamp, frame_id=frame_id),
                                       action=Marker.DELETEALL)])


def _hue_to_rgb(h: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    q, t = 1.0 - f, f
    return [(1.0, t, 0.0), (q, 1.0, 0.0), (0.0, 1.0, t), (0.0, q, 1.0), (t, 0.0, 1.0),
            (1.0, 0.0, q)][i]


def to_points(arr: np.ndarray) -> list[Point]:
    return [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in arr]


def to_vectors(arr: np.ndarray) -> list[Vector3]:
    return [Vector3(x=float(x), y=float(y), z=float(z)) for x, y, z in arr]


def points_to_array(points: list) -> np.ndarray:
    """N x 3 float64 array of geometry_msgs Points (or anything with x, y, z)."""
    return np.array([[q.x, q.y, q.z] for q in points], dtype=np.float64).reshape(-1, 3)


def pack(values: np.ndarray, typecode: str = 'd') -> array.array:
    """A numpy array as the array.array a ROS primitive sequence field takes without a
    per-element conversion ('d' float64[], 'f' float32[], 'B' uint8[])."""
    dtype = {'d': np.float64, 'f': np.float32, 'B': np.uint8}[typecode]
    return array.array(typecode, np.ascontiguousarray(values, dtype=dtype).tobytes())


def unpack_points(values: Any) -> np.ndarray:
    """N x 3 float64 array of a packed x, y, z sequence (its length a multiple of 3)."""
    flat = np.asarray(values, dtype=np.float64)
    if flat.size % 3:
        raise ValueError(f'a packed point array holds x, y, z per point: its length '
                         f'{flat.size} is not a multiple of 3')
    return flat.reshape(-1, 3)


def fourd_status(msg: Any) -> tuple[dict[str, str], str] | None:
    """(values, message) of fourd_node's status in a diagnostic_msgs/DiagnosticArray (its name
    ends in ': fourd'), or None when the array has none."""
    for status in reversed(msg.status):
        if status.name.endswith(': fourd'):
            return {kv.key: kv.value for kv in status.values}, status.message
    return None
