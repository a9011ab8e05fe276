"""Output side of fourd_node: its publishers and the state behind them (path, track trails,
odometry, the map cloud), filled from the engine's per-frame results.

Called from one thread at a time (the node's worker, or a reset that waits for it).
"""

from __future__ import annotations

import dataclasses

from collections import deque
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from fourd_ros_msgs.msg import MovingObjects, TrackedPoints
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from fourd_ros.core.engine.objects import ObjectSnapshot
from fourd_ros.core.engine.tracks import TrackSnapshot
from fourd_ros.core.geometry import invert_pose
from fourd_ros.core.map_cloud import MapAccumulator
from fourd_ros.core.types import FrameResult
from fourd_ros.ros import conversions as conv
from fourd_ros.ros.qos import fresh, LATCHED


# (topic, type, description) of everything the node publishes, for --help and the README
TOPICS = (
    ('~/points', 'sensor_msgs/PointCloud2', 'organized per-frame cloud (x y z rgb confidence '
     'segment vx vy vz: object id, 0 = static, and scene flow), camera optical frame'),
    ('~/motion_mask', 'sensor_msgs/Image', 'mono16 object id of each pixel (0 = static) at the '
     'processing resolution, stamped and framed like the image'),
    ('~/camera_info', 'sensor_msgs/CameraInfo', 'the pinhole camera of ~/points and '
     '~/motion_mask: the processing resolution, intrinsics as used (undistorted; the learned '
     "backend's focal length for an uncalibrated camera), no distortion"),
    ('~/objects', 'fourd_ros_msgs/MovingObjects', 'moving objects: persistent id, box, '
     'velocity, motion since the last frame; map frame (odom without map -> odom)'),
    ('~/object_markers', 'visualization_msgs/MarkerArray', 'object boxes, velocity arrows, ids'),
    ('~/map_points', 'sensor_msgs/PointCloud2', 'accumulated static cloud (points a later '
     'view sees through removed), map frame (odom without map -> odom), reliable + '
     'transient local'),
    ('/tf', 'tf2_msgs/TFMessage', 'map -> odom (identity) -> base_frame (each optional; '
     'base_frame -> odom with invert_odom_to_base_tf)'),
    ('/tf_static', 'tf2_msgs/TFMessage', 'base_frame -> camera optical frame (unless a driver '
     'owns that frame)'),
    ('~/path', 'nav_msgs/Path', 'path of base_frame in the odom frame (since the stream began)'),
    ('~/odom', 'nav_msgs/Odometry', 'base_frame pose and twist in the odom frame, with '
     "covariance (1e6 while tracking is lost; the position's also while it is up to scale)"),
    ('~/tracks', 'fourd_ros_msgs/TrackedPoints', 'persistent tracked points, map frame (odom '
     'without map -> odom)'),
    ('~/track_markers', 'visualization_msgs/MarkerArray', 'track trails'),
    ('/diagnostics', 'diagnostic_msgs/DiagnosticArray', 'rates, latency, cache, input loss'),
)


class Outputs:
    """Publishers of the fourd node and the output state they need (see module docstring).

    Args:
        node: the node that owns the publishers.
        params: the node's parameter values (read at each call: some change at run time).
        frames: base/camera/odom transforms (`conversions.FrameTransforms`), replaced by the
            node when /tf_static gives the extrinsics.
    """

    def __init__(self, node: Node, params: dict[str, Any], frames: conv.FrameTransforms) -> None:
        self.p = params
        self.frames = frames

        def publisher(msg_type: type, topic: str, qos: QoSProfile | int):
            # the node's own topics: QoS overridable per topic (qos_overrides.<topic>.
            # publisher.*); /tf, /tf_static and /diagnostics keep what their listeners expect
            return node.create_publisher(msg_type, topic, fresh(qos),
                                         qos_overriding_options=QoSOverridingOptions
                                         .with_default_policies())

        self.pub_points = publisher(PointCloud2, '~/points', 5)
        self.pub_map = publisher(PointCloud2, '~/map_points', LATCHED)
        self.pub_tf = node.create_publisher(TFMessage, '/tf', 100)
        self.pub_tf_static = node.create_publisher(TFMessage, '/tf_static', fresh(LATCHED))
        self.pub_path = publisher(Path, '~/path', 5)
        self.pub_odom = publisher(Odometry, '~/odom', 10)
        self.pub_tracks = publisher(TrackedPoints, '~/tracks', 10)
        self.pub_markers = publisher(MarkerArray, '~/track_markers', 5)
        self.pub_mask = publisher(Image, '~/motion_mask', 5)
        self.pub_camera_info = publisher(CameraInfo, '~/camera_info', 5)
        self.pub_objects = publisher(MovingObjects, '~/objects', 10)
        self.pub_object_markers = publisher(MarkerArray, '~/object_markers', 5)
        self.pub_diag = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.map = MapAccumulator(params['map_voxel_size'], params['map_max_points'])
        self._path: deque = deque(maxlen=params['path_max_size'])
        self._metric: bool | None = None  # the units of the path (None: no frame yet)
        self._trails: dict[int, deque[Point]] = {}
        self._prev_odom: tuple[float, np.ndarray] | None = None
        self._last_odom_base: np.ndarray | None = None  # the newest odom -> base published
        # whether base_frame -> camera is this node's (else another node's on TF), and whether
        # the node has latched it on /tf_static
        self.camera_tf_owned = True
        self.camera_tf_latched = False
        self._frames_published = 0

    @property
    def publishes_map_to_odom(self) -> bool:
        """Whether this node publishes map -> odom: asked for (publish_map_to_odom_tf), and odom
        is not base_frame's child (invert_odom_to_base_tf), since a TF frame has one parent."""
        return self.p['publish_map_to_odom_tf'] and not self.p['invert_odom_to_base_tf']

    @property
    def world_frame(self) -> str:
        """Frame of the map cloud, tracks, objects and query answers: map_frame while this node
        publishes map -> odom (the identity), else odom_frame (map -> odom is another node's,
        and these are odometry-frame coordinates)."""
        return self.p['map_frame'] if self.publishes_map_to_odom else self.p['odom_frame']

    def destroy(self, node: Node) -> None:
        """Destroy the publishers (a managed node cleaned up)."""
        for pub in (self.pub_points, self.pub_map, self.pub_tf, self.pub_tf_static,
                    self.pub_path, self.pub_odom, self.pub_tracks, self.pub_markers,
                    self.pub_mask, self.pub_camera_info, self.pub_objects,
                    self.pub_object_markers, self.pub_diag):
            node.destroy_publisher(pub)

    def clear(self, stamp: Any) -> None:
        """A new stream: forget path, trails and map; delete the markers and latch an empty
        map so that late subscribers do not get the old one. The new stream starts where the
        last one left the base in odom (REP-105: odom -> base_frame does not jump)."""
        if self._last_odom_base is not None:
            self.frames = dataclasses.replace(self.frames, T_odom_start=self._last_odom_base)
        self._path.clear()
        self._trails.clear()
        self._prev_odom = None
        self._metric = None
        self._frames_published = 0
        self.map.reset()
        self.pub_markers.publish(conv.delete_all_markers(self.world_frame, stamp))
        self.pub_object_markers.publish(conv.delete_all_markers(self.world_frame, stamp))
        self.pub_map.publish(conv.points_to_cloud(
            np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32),
            Header(stamp=stamp, frame_id=self.world_frame)))

    def publish(self, stamp: Any, result: FrameResult, camera_frame: str,
                tracks: TrackSnapshot | None, objects: ObjectSnapshot, fps: float) -> None:
        """Everything of one processed frame (stamp = the image's)."""
        p = self.p
        self._frames_published += 1
        T_odom_base = self.frames.odom_from_base(result.T_wc)
        self._last_odom_base = T_odom_base
        t_sec = conv.stamp_to_sec(stamp)
        if self._metric is not None and result.metric != self._metric:
            # the stream turned metric: the path, trails and velocity so far are in the old
            # units (the map starts again by itself, `MapAccumulator`)
            self._path.clear()
            self._trails.clear()
            self._prev_odom = None
        self._metric = result.metric
        if not self._path:  # first frame of a stream: (re)latch base -> camera on /tf_static
            self._publish_static_tf(stamp, camera_frame)
        if p['publish_tf']:
            tfs = [conv.matrix_to_transform(invert_pose(T_odom_base), p['base_frame'],
                                            p['odom_frame'], stamp)
                   if p['invert_odom_to_base_tf'] else
                   conv.matrix_to_transform(T_odom_base, p['odom_frame'], p['base_frame'],
                                            stamp)]
            if self.publishes_map_to_odom:
                tfs.append(conv.matrix_to_transform(np.eye(4), p['map_frame'], p['odom_frame'],
                                                    stamp))
            self.pub_tf.publish(TFMessage(transforms=tfs))
        # per-frame messages are built only for someone (image_pipeline's nodes do alike): a
        # robot that reads only TF and odometry does not pay for clouds and markers; the
        # latched map is kept and sent whoever listens (a late subscriber gets it)
        ids = objects.id_mask()
        if p['publish_points'] and _listened(self.pub_points):
            # scene flow is motion in the world, expressed in the cloud's (camera) axes
            self.pub_points.publish(conv.points_to_cloud(
                result.points_cam, result.colors, result.confidence,
                Header(stamp=stamp, frame_id=camera_frame), ids.astype(np.uint32),
                result.scene_flow @ result.T_wc[:3, :3].astype(np.float32)))
        if _listened(self.pub_camera_info):
            h, w = result.depth.shape[:2]
            self.pub_camera_info.publish(conv.pinhole_camera_info(
                result.K, w, h, Header(stamp=stamp, frame_id=camera_frame)))
        if p['publish_objects'] and _listened(self.pub_mask):
            self.pub_mask.publish(conv.motion_mask_image(
                ids, Header(stamp=stamp, frame_id=camera_frame)))
        if p['publish_objects'] and _listened(self.pub_objects, self.pub_object_markers):
            msg = conv.objects_to_msg(objects.objects, self.frames.T_odom_world,
                                      Header(stamp=stamp, frame_id=self.world_frame),
                                      objects.dt)
            self.pub_objects.publish(msg)
            self.pub_object_markers.publish(conv.object_markers(msg))
        # keep PoseStamped messages, not matrices: the path is re-sent every frame
        self._path.append(conv.make_pose_stamped(T_odom_base, p['odom_frame'], stamp))
        if _listened(self.pub_path):
            self.pub_path.publish(Path(header=Header(stamp=stamp, frame_id=p['odom_frame']),
                                       poses=list(self._path)))
        prev = self._prev_odom
        # lost tracking holds the last pose: a fusing filter must not trust it; a position up
        # to scale (monocular, before or without the floor's metres) is not metres either,
        # while its orientation is
        lost = not result.extras.get('tracking_ok', True)
        self.pub_odom.publish(conv.make_odometry(
            T_odom_base, None if prev is None else prev[1],
            0.0 if prev is None else t_sec - prev[0], p['odom_frame'], p['base_frame'], stamp,
            conv.UNKNOWN_VARIANCE if lost or not result.metric
            else p['odom_position_variance'],
            conv.UNKNOWN_VARIANCE if lost else p['odom_orientation_variance']))
        self._prev_odom = (t_sec, T_odom_base)
        if p['publish_map_points']:
            self.map.add_frame(result, self.frames.T_odom_world)
            if self._frames_published % p['map_every_n_frames'] == 1 \
                    or p['map_every_n_frames'] == 1:
                self.map.update()
                self.pub_map.publish(conv.points_to_cloud(
                    self.map.points, self.map.colors, np.ones(len(self.map.points), np.float32),
                    Header(stamp=stamp, frame_id=self.world_frame)))
        if p['publish_tracks'] and tracks is not None and _listened(self.pub_tracks,
                                                                    self.pub_markers):
            self._publish_tracks(stamp, tracks, fps)

    def publish_diagnostics(self, name: str, hardware_id: str, level: int, message: str,
                            values: dict[str, str], stamp: Any) -> None:
        status = DiagnosticStatus(level=level, name=name, message=message,
                                  hardware_id=hardware_id,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = stamp
        self.pub_diag.publish(msg)

    # ------------------------------------------------------------------ internals
    def _publish_static_tf(self, stamp: Any, cam: str) -> None:
        if self.p['publish_camera_tf'] and self.camera_tf_owned and self.p['base_frame'] != cam:
            self.pub_tf_static.publish(TFMessage(transforms=[conv.matrix_to_transform(
                self.frames.T_base_cam, self.p['base_frame'], cam, stamp)]))
            self.camera_tf_latched = True

    def _publish_tracks(self, stamp: Any, snap: TrackSnapshot, fps: float) -> None:
        pos = self.frames.world_to_odom_points(snap.positions.astype(np.float64))
        vel = snap.velocities.astype(np.float64) @ self.frames.T_odom_world[:3, :3].T
        msg = TrackedPoints(header=Header(stamp=stamp, frame_id=self.world_frame))
        msg.ids = [int(i) for i in snap.ids]
        msg.positions = conv.to_points(pos)
        msg.velocities = conv.to_vectors(vel)
        msg.confidence = [float(c) for c in snap.confidence]
        msg.status = [int(s) for s in snap.status]
        msg.object_ids = conv.pack(snap.object_ids, 'Q')
        self.pub_tracks.publish(msg)
        live = set()
        # the trails keep the Point messages just built for ~/tracks (no new ones per frame)
        for track_id, point, s in zip(snap.ids.tolist(), msg.positions, snap.status):
            if s == TrackedPoints.LOST:
                continue
            live.add(track_id)
            trail = self._trails.setdefault(track_id, deque(maxlen=self.p['trail_length']))
            trail.append(point)
        for dead in set(self._trails) - live:
            del self._trails[dead]
        # marker arrays are built point by point in Python: the costliest output, so thinned
        every = self.p['markers_every_n_frames']
        if self._frames_published % every:
            return
        self.pub_markers.publish(conv.track_markers(
            self._trails, self.world_frame, stamp,
            lifetime_s=2.0 * every / max(fps, 1.0)))


def _listened(*publishers) -> bool:
    """Whether any of the publishers has a subscriber."""
    return any(pub.get_subscription_count() for pub in publishers)
