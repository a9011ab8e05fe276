"""numpy <-> ROS 2 message conversions (no rclpy node here; message packages only).

Frames: the core's world is the first camera's optical frame (OpenCV axes) of a stream.
`FrameTransforms` holds the fixed transforms that place it in the ROS tree (REP-105 map -> odom
-> base -> camera): odom is the base frame's pose at the node's first image, and each later
stream (after a reset) starts where the last one left the base, so odom stays continuous:
T_odom_world = T_odom_start @ T_base_cam.
"""

from __future__ import annotations

import array
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation
from sensor_msgs_py import point_cloud2

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, TransformStamped, Vector3
from fourd_ros_msgs.msg import MovingObject, MovingObjects
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from fourd_ros.core.engine.objects import MovingObject as MovingObjectCore
from fourd_ros.core.frame_tree import FrameTree
from fourd_ros.core.geometry import R_BODY_FROM_OPTICAL, invert_pose, make_pose, transform_points


# ---------------------------------------------------------------------------- time
def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def stamp_or_latest(stamp: Time) -> float | None:
    """A request's target stamp in seconds, None for the zero stamp (= the latest frame)."""
    return None if stamp.sec == 0 and stamp.nanosec == 0 else stamp_to_sec(stamp)


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
        T_odom_start: 4x4 pose of the base frame in odom at the stream's first image: the
            identity for the node's first stream, then where the previous stream left the
            base (REP-105: odom is continuous; a reset does not jump the robot back).
    """

    T_base_cam: np.ndarray
    T_odom_start: np.ndarray = field(default_factory=lambda: np.eye(4))

    @property
    def T_odom_world(self) -> np.ndarray:
        """The core's world (the stream's first camera optical frame) expressed in odom."""
        return self.T_odom_start @ self.T_base_cam

    def up_in_camera(self) -> np.ndarray:
        """The base frame's z axis (up, REP-103) in the camera optical frame."""
        return self.T_base_cam[:3, :3].T @ np.array([0.0, 0.0, 1.0])

    def odom_from_base(self, T_wc: np.ndarray) -> np.ndarray:
        """Base pose in odom from the core's camera-to-world pose."""
        return self.T_odom_world @ T_wc @ invert_pose(self.T_base_cam)

    def world_to_odom_points(self, points: np.ndarray) -> np.ndarray:
        return transform_points(self.T_odom_world, points)

    def odom_to_world_points(self, points: np.ndarray) -> np.ndarray:
        return transform_points(invert_pose(self.T_odom_world), points)


def add_transforms(tree: FrameTree, msg: Any, timed: bool) -> list[str]:
    """Each transform of a tf2_msgs/TFMessage into `tree`: at its stamp (`timed`: /tf) or
    fixed (/tf_static); the problems (a frame given as its own parent), one line each, for the
    caller to report."""
    problems = []
    for t in msg.transforms:
        try:
            tree.set(t.header.frame_id, t.child_frame_id, transform_to_matrix(t.transform),
                     stamp_to_sec(t.header.stamp) if timed else None)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


# ---------------------------------------------------------------------------- clouds
_FLOAT32 = PointField.FLOAT32
_CLOUD_LAYOUT = (('x', _FLOAT32), ('y', _FLOAT32), ('z', _FLOAT32), ('rgb', _FLOAT32),
                 ('confidence', _FLOAT32))
# the per-frame cloud also says what moves: object id and scene flow of each point
_MOTION_LAYOUT = (('segment', PointField.UINT32), ('vx', _FLOAT32), ('vy', _FLOAT32),
                  ('vz', _FLOAT32))
_NUMPY_TYPES = {PointField.INT8: '<i1', PointField.UINT8: '<u1', PointField.INT16: '<i2',
                PointField.UINT16: '<u2', PointField.INT32: '<i4', PointField.UINT32: '<u4',
                PointField.FLOAT32: '<f4', PointField.FLOAT64: '<f8'}


@functools.lru_cache(maxsize=4)
def _cloud_layout(with_motion: bool) -> tuple[np.dtype, tuple[PointField, ...]]:
    """The numpy dtype and PointFields (standard types, packed offsets) of a cloud."""
    layout = _CLOUD_LAYOUT + (_MOTION_LAYOUT if with_motion else ())
    dtype = np.dtype([(name, _NUMPY_TYPES[kind]) for name, kind in layout])
    fields = tuple(PointField(name=name, offset=dtype.fields[name][1], datatype=kind, count=1)
                   for name, kind in layout)
    return dtype, fields


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """N x 3 (or H x W x 3) uint8 RGB -> float32 holding the bits of uint32 0x00RRGGBB (PCL)."""
    c = colors.astype(np.uint32)
    return ((c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]).view(np.float32)


def points_to_cloud(points: np.ndarray, colors: np.ndarray, confidence: np.ndarray,
                    header: Header, segments: np.ndarray | None = None,
                    velocities: np.ndarray | None = None) -> PointCloud2:
    """PointCloud2 with fields x, y, z, rgb, confidence (float32, 20 bytes per point), and with
    `segments` and `velocities` also segment (uint32 object id, 0 = static) and vx, vy, vz
    (float32 scene flow, units/s; 36 bytes per point).

    `points` H x W x 3 gives an organized cloud (height H, width W; NaN = invalid, is_dense
    False); N x 3 gives an unorganized one (height 1). Units of `points`, frame of `header`
    (also the axes of `velocities`). Standard PointField types at packed offsets, so any
    reader that follows the fields (sensor_msgs_py's read_points, PCL, RViz) reads it.
    """
    if points.ndim == 3:
        height, width = points.shape[:2]
    else:
        height, width = 1, points.shape[0]
    n = height * width
    dtype, fields = _cloud_layout(segments is not None)
    arr = np.empty(n, dtype)
    xyz = points.reshape(n, 3)
    arr['x'], arr['y'], arr['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    arr['rgb'] = pack_rgb(colors.reshape(n, 3))
    arr['confidence'] = confidence.reshape(n)
    if segments is not None:
        arr['segment'] = segments.reshape(n)
        v = velocities.reshape(n, 3)
        arr['vx'], arr['vy'], arr['vz'] = v[:, 0], v[:, 1], v[:, 2]
    msg = PointCloud2(header=header, height=height, width=width, fields=list(fields),
                      is_bigendian=False, point_step=dtype.itemsize,
                      row_step=dtype.itemsize * width,
                      is_dense=bool(np.isfinite(xyz).all()))
    msg.data = arr.tobytes()
    return msg


def cloud_to_array(msg: PointCloud2) -> np.ndarray:
    """Structured array (height x width) of a cloud, one field per PointField, as ROS 2's own
    reader (`sensor_msgs_py.point_cloud2.read_points`) reads it. Its `reshape_organized_cloud`
    swaps width and height (ros2/common_interfaces), so the reshape is done here."""
    return point_cloud2.read_points(msg).reshape(msg.height, msg.width)


def wrap_object_ids(ids: np.ndarray) -> np.ndarray:
    """Object ids (0 = static) as the uint16 values of ~/motion_mask: ids above 65535 wrap
    around (1 ... 65535, never 0), so an id and its value agree for the first 65535 objects of a
    stream."""
    ids = np.asarray(ids, np.uint64)
    return np.where(ids > 0, (ids - 1) % 65535 + 1, 0).astype(np.uint16)


def pinhole_camera_info(K: np.ndarray, width: int, height: int, header: Header) -> CameraInfo:
    """sensor_msgs/CameraInfo of a distortion-free pinhole camera (3x3 K in pixels, its image
    width x height): what image_geometry needs to project onto the node's pixel outputs."""
    k = [float(v) for v in np.asarray(K, np.float64).reshape(-1)]
    return CameraInfo(header=header, width=int(width), height=int(height),
                      distortion_model='plumb_bob', d=[0.0] * 5, k=k,
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=k[0:3] + [0.0] + k[3:6] + [0.0] + k[6:9] + [0.0])


def motion_mask_image(ids: np.ndarray, header: Header) -> Image:
    """sensor_msgs/Image mono16 of H x W object ids (0 = static; see `wrap_object_ids`)."""
    mask = wrap_object_ids(ids)
    h, w = mask.shape
    return Image(header=header, height=h, width=w, encoding='mono16', is_bigendian=0,
                 step=2 * w, data=mask.astype('<u2').tobytes())


# ---------------------------------------------------------------------------- paths, markers
def make_pose_stamped(T: np.ndarray, frame_id: str, stamp: Time) -> PoseStamped:
    return PoseStamped(header=Header(stamp=stamp, frame_id=frame_id), pose=matrix_to_pose(T))


def make_path(poses: list[tuple[Time, np.ndarray]], frame_id: str, stamp: Time) -> Path:
    """nav_msgs/Path of (stamp, 4x4) poses in `frame_id`."""
    return Path(header=Header(stamp=stamp, frame_id=frame_id),
                poses=[make_pose_stamped(T, frame_id, s) for s, T in poses])


# Odometry variance (m^2, rad^2) of what is not known: a twist before the second frame, a pose
# held while tracking is lost (a fusing filter then ignores it; rtabmap's odometry does alike)
UNKNOWN_VARIANCE = 1e6


def make_odometry(T: np.ndarray, T_prev: np.ndarray | None, dt: float, odom_frame: str,
                  base_frame: str, stamp: Time, position_variance: float = 0.0,
                  orientation_variance: float = 0.0) -> Odometry:
    """nav_msgs/Odometry: pose in odom, twist in the base frame by finite differences.

    The covariances are diagonal: the pose's the given variances (m^2 for x y z, rad^2 for the
    rotation about x y z), the twist's the same over dt^2 (a difference of two poses), or
    `UNKNOWN_VARIANCE` without a previous pose."""
    msg = Odometry(header=Header(stamp=stamp, frame_id=odom_frame), child_frame_id=base_frame)
    msg.pose.pose = matrix_to_pose(T)
    pose_var = np.repeat([position_variance, orientation_variance], 3)
    msg.pose.covariance = np.diag(pose_var).ravel().tolist()
    msg.twist.covariance = np.diag(np.full(6, UNKNOWN_VARIANCE)).ravel().tolist()
    if T_prev is not None and dt > 0:
        delta = invert_pose(T_prev) @ T  # motion in the previous base frame
        v = delta[:3, 3] / dt
        w = Rotation.from_matrix(delta[:3, :3]).as_rotvec() / dt
        msg.twist.twist.linear = Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2]))
        msg.twist.twist.angular = Vector3(x=float(w[0]), y=float(w[1]), z=float(w[2]))
        msg.twist.covariance = np.diag(pose_var / dt ** 2).ravel().tolist()
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
    r, g, b = id_rgb(hue_index)
    out: list[ColorRGBA] = []
    for k in range(n - 1):
        c = ColorRGBA(r=r, g=g, b=b, a=0.2 + 0.8 * (k + 1) / max(n - 1, 1))
        out += (c, c)
    out.append(ColorRGBA(r=r, g=g, b=b, a=1.0))
    return tuple(out)


def objects_to_msg(objects: Sequence[MovingObjectCore], T_frame_world: np.ndarray,
                   header: Header, dt: float) -> MovingObjects:
    """fourd_ros_msgs/MovingObjects of the engine's objects (core world) in header.frame_id,
    whose pose of the core's world is `T_frame_world` (4x4)."""
    R = T_frame_world[:3, :3]
    msg = MovingObjects(header=header, dt=float(dt))
    for obj in objects:
        out = MovingObject(id=int(obj.id), num_points=int(obj.num_points),
                           confidence=float(obj.confidence), age=int(obj.age))
        out.centroid = to_points(transform_points(T_frame_world, obj.centroid[None]))[0]
        out.box_pose = matrix_to_pose(T_frame_world @ make_pose(obj.box_rotation,
                                                                obj.box_center))
        out.box_size = to_vectors(obj.box_size[None])[0]
        out.velocity = to_vectors((R @ obj.velocity)[None])[0]
        out.angular_velocity = to_vectors((R @ obj.angular_velocity)[None])[0]
        moved = T_frame_world @ obj.motion @ invert_pose(T_frame_world)
        out.motion = matrix_to_transform(moved, '', '', header.stamp).transform
        msg.objects.append(out)
    return msg


def object_markers(msg: MovingObjects) -> MarkerArray:
    """RViz markers of a MovingObjects message: per object its box (translucent, the id's
    colour), a velocity arrow (from the centroid, one second of motion) and its id and speed
    as text; the array starts with a DELETEALL, so objects no longer seen disappear."""
    markers = [Marker(header=msg.header, action=Marker.DELETEALL)]
    for obj in msg.objects:
        r, g, b = id_rgb(obj.id)
        box = Marker(header=msg.header, ns='object_boxes', id=int(obj.id) % 2**31,
                     type=Marker.CUBE, action=Marker.ADD, pose=obj.box_pose,
                     color=ColorRGBA(r=r, g=g, b=b, a=0.35))
        box.scale = obj.box_size
        velocity = np.array([obj.velocity.x, obj.velocity.y, obj.velocity.z])
        speed = float(np.linalg.norm(velocity))
        arrow = Marker(header=msg.header, ns='object_velocity', id=int(obj.id) % 2**31,
                       type=Marker.ARROW, action=Marker.ADD,
                       color=ColorRGBA(r=r, g=g, b=b, a=1.0))
        arrow.pose.orientation.w = 1.0
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.02, 0.04, 0.06
        c = obj.centroid
        if np.isfinite(speed):
            arrow.points = [c, Point(x=c.x + velocity[0], y=c.y + velocity[1],
                                     z=c.z + velocity[2])]
        text = Marker(header=msg.header, ns='object_ids', id=int(obj.id) % 2**31,
                      type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                      text=f'{obj.id}  {speed:.2f}/s', color=ColorRGBA(r=r, g=g, b=b, a=1.0))
        size = obj.box_size
        text.pose.position = Point(x=c.x, y=c.y, z=c.z + 0.6 * max(size.x, size.y, size.z))
        text.pose.orientation.w = 1.0
        text.scale.z = 0.08
        markers += [box, arrow, text] if arrow.points else [box, text]
    return MarkerArray(markers=markers)


def delete_all_markers(frame_id: str, stamp: Time) -> MarkerArray:
    return MarkerArray(markers=[Marker(header=Header(stamp=stamp, frame_id=frame_id),
                                       action=Marker.DELETEALL)])


def id_rgb(object_id: int) -> tuple[float, float, float]:
    """The colour (r, g, b in [0, 1]) of a track or object id in the RViz markers:
    golden-ratio hues, so neighbouring ids differ."""
    return _hue_to_rgb((int(object_id) * 0.618034) % 1.0)


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
    per-element conversion ('d' float64[], 'f' float32[], 'B' uint8[], 'Q' uint64[])."""
    dtype = {'d': np.float64, 'f': np.float32, 'B': np.uint8, 'Q': np.uint64}[typecode]
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
