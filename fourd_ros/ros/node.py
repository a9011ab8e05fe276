"""fourd_node: streaming 4D perception from a ROS 2 camera (thin layer over the core engine).

Subscribes (relative names; remap or set the *_topic parameters):
  image (sensor_msgs/Image), camera_info (CameraInfo, optional), depth (Image, optional).
Publishes:
  ~/points (organized PointCloud2, camera optical frame), ~/map_points (accumulated, map frame,
  reliable + transient local), /tf (map -> odom -> base_frame) and /tf_static (base_frame ->
  camera optical frame), ~/path, ~/odom, ~/tracks (fourd_ros_msgs/TrackedPoints),
  ~/track_markers (MarkerArray), /diagnostics.
Services:
  ~/query_motion (fourd_ros_msgs/QueryMotion), ~/get_trajectory (GetTrajectory),
  ~/reset (std_srvs/Trigger).

Threads: callbacks only queue messages (drop-oldest); one worker thread runs the engine and
publishes; services run in their own callback group of a MultiThreadedExecutor, so inference
never blocks a query (the engine holds its cache lock only for short bookkeeping).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque

import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data)

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from fourd_ros_msgs.msg import TrackedPoints
from fourd_ros_msgs.srv import GetTrajectory, QueryMotion
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from fourd_ros.core.backends.factory import make_backend, resolve_backend
from fourd_ros.core.data.ros_image import image_msg_to_depth, image_msg_to_rgb
from fourd_ros.core.engine.backend import BackendError
from fourd_ros.core.engine.cache import CachePolicy
from fourd_ros.core.engine.engine import (EngineConfig, InputError, QueryError,
                                          StreamingEngine)
from fourd_ros.core.engine.tracks import TrackConfig
from fourd_ros.core.geometry import invert_pose, scale_intrinsics, transform_points
from fourd_ros.core.types import Frame
from fourd_ros.ros import conversions as conv
from fourd_ros.ros.map_cloud import MapAccumulator
from fourd_ros.ros.params import PARAMS
from fourd_ros.ros.spin import spin_until_shutdown

SUPPORTED_IMAGE = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')
SUPPORTED_DEPTH = ('16UC1', '32FC1')
DEFAULT_CAMERA_FRAME = 'camera_optical_frame'


class FourdNode(Node):
    """The fourd node (see module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__('fourd', **kwargs)
        for p in PARAMS:
            self.declare_parameter(p.name, p.default, p.descriptor())
        self.p = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        backend_name = resolve_backend(self.p['backend'], bool(self.p['depth_topic']))
        self.backend_name = backend_name
        backend = make_backend(backend_name, device=self.p['device'],
                               checkpoint=self.p['checkpoint'] or None)
        self.engine = StreamingEngine(backend, EngineConfig(
            width=self.p['processing_width'],
            cache=CachePolicy(budget_mb=self.p['cache_budget_mb'],
                              recent=self.p['cache_recent_frames'],
                              max_keyframes=self.p['cache_max_keyframes']),
            tracks=TrackConfig(max_tracks=self.p['max_tracks']),
            max_query_points=self.p['max_query_points']))
        self.frames = conv.FrameTransforms(conv.T_LINK_FROM_OPTICAL.copy())
        # with publish_camera_tf false the extrinsics come from /tf_static: wait for them
        self._extrinsics_ready = bool(self.p['publish_camera_tf'])
        self._camera_frame = self.p['camera_frame']
        self._K: np.ndarray | None = None
        self._K_size: tuple[int, int] | None = None
        # set by the first CameraInfo (or when the first frame has waited for it long enough)
        self._info_ready = threading.Event()
        self._info_wait_start = 0.0
        self._queue: deque[Image] = deque(maxlen=self.p['queue_size'])
        self._depth: deque[Image] = deque(maxlen=30)
        self._cv = threading.Condition()
        self._running = True
        self._stats = {'received': 0, 'processed': 0, 'dropped_queue': 0, 'rejected': 0,
                       'resets': 0, 'last_error': ''}
        self._latency: deque[float] = deque(maxlen=100)
        self._proc_times: deque[float] = deque(maxlen=100)
        self._path: deque = deque(maxlen=self.p['path_max_size'])
        self._trails: dict[int, deque] = {}
        self._prev_odom: tuple[float, np.ndarray] | None = None
        self.map = MapAccumulator(self.p['map_voxel_size'], self.p['map_max_points'])
        self._setup_io()
        self._worker = threading.Thread(target=self._work, name='fourd_inference', daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'fourd ready: backend={backend_name} (metric={self.engine.metric}), image='
            f"'{self._resolved(self.p['image_topic'])}', depth="
            f"'{self._resolved(self.p['depth_topic']) or 'none'}'")

    # ------------------------------------------------------------------ set-up
    def _resolved(self, name: str) -> str:
        return self.resolve_topic_name(name) if name else ''

    def _setup_io(self) -> None:
        sensor_qos = (qos_profile_sensor_data if self.p['image_qos'] == 'sensor_data'
                      else QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        inputs = MutuallyExclusiveCallbackGroup()
        self.services_group = ReentrantCallbackGroup()
        self.create_subscription(Image, self.p['image_topic'], self._on_image, sensor_qos,
                                 callback_group=inputs)
        if self.p['camera_info_topic']:
            self.create_subscription(CameraInfo, self.p['camera_info_topic'],
                                     self._on_camera_info, sensor_qos, callback_group=inputs)
        if self.p['depth_topic']:
            self.create_subscription(Image, self.p['depth_topic'], self._on_depth, sensor_qos,
                                     callback_group=inputs)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        if not self.p['publish_camera_tf']:
            self.create_subscription(TFMessage, '/tf_static', self._on_tf_static, latched,
                                     callback_group=inputs)
        self.pub_points = self.create_publisher(PointCloud2, '~/points', 5)
        self.pub_map = self.create_publisher(PointCloud2, '~/map_points', latched)
        self.pub_tf = self.create_publisher(TFMessage, '/tf', 100)
        self.pub_tf_static = self.create_publisher(TFMessage, '/tf_static', latched)
        self.pub_path = self.create_publisher(Path, '~/path', 5)
        self.pub_odom = self.create_publisher(Odometry, '~/odom', 10)
        self.pub_tracks = self.create_publisher(TrackedPoints, '~/tracks', 10)
        self.pub_markers = self.create_publisher(MarkerArray, '~/track_markers', 5)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(QueryMotion, '~/query_motion', self._on_query,
                            callback_group=self.services_group)
        self.create_service(GetTrajectory, '~/get_trajectory', self._on_get_trajectory,
                            callback_group=self.services_group)
        self.create_service(Trigger, '~/reset', self._on_reset,
                            callback_group=self.services_group)
        self.create_timer(self.p['diagnostics_period'], self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult
        for param in params:
            self.p[param.name] = param.value
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks (cheap)
    def _on_image(self, msg: Image) -> None:
        with self._cv:
            self._stats['received'] += 1
            if len(self._queue) == self._queue.maxlen:
                self._stats['dropped_queue'] += 1
            self._queue.append(msg)  # deque(maxlen) drops the oldest
            self._cv.notify()

    def _on_depth(self, msg: Image) -> None:
        with self._cv:
            self._depth.append(msg)
            self._cv.notify()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        K = np.array(msg.k, dtype=np.float64).reshape(3, 3)
        if K[0, 0] == 0.0 or not np.all(np.isfinite(K)):
            self._K = None  # uncalibrated (REP: K[0] == 0)
        else:
            self._K_size = (int(msg.width), int(msg.height))
            self._K = K
        self._info_ready.set()  # after K: the worker reads K as soon as this is set

    def _on_tf_static(self, msg: TFMessage) -> None:
        base, cam = self.p['base_frame'], self._camera_frame or DEFAULT_CAMERA_FRAME
        for t in msg.transforms:
            if t.header.frame_id == base and t.child_frame_id == cam:
                self.frames = conv.FrameTransforms(conv.transform_to_matrix(t.transform))
                self._extrinsics_ready = True

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while self._running:
            with self._cv:
                while self._running and not self._queue:
                    self._cv.wait(timeout=0.5)
                if not self._running:
                    return
                msg = self._queue.popleft()
            if not self.context.ok():
                return
            try:
                self._process(msg)
            except (InputError, ValueError, BackendError) as exc:
                self._reject(str(exc))
            except Exception as exc:  # keep serving whatever a frame did
                if not self.context.ok():
                    return  # shutting down: publishers are gone
                self._reject(f'{type(exc).__name__}: {exc}')
                self.get_logger().error(f'frame failed: {exc!r}', throttle_duration_sec=5.0)

    def _reject(self, why: str) -> None:
        self._stats['rejected'] += 1
        self._stats['last_error'] = why
        self.get_logger().error(f'frame rejected: {why}', throttle_duration_sec=5.0)

    def _decode(self, msg: Image) -> Frame:
        if not self._extrinsics_ready:
            raise InputError(f"waiting for {self.p['base_frame']} -> "
                             f'{self._camera_frame or DEFAULT_CAMERA_FRAME} on /tf_static '
                             '(publish_camera_tf is false)')
        if msg.encoding.lower() not in SUPPORTED_IMAGE:
            raise InputError(f"unsupported image encoding '{msg.encoding}' (supported: "
                             f"{', '.join(SUPPORTED_IMAGE)})")
        if msg.width == 0 or msg.height == 0:
            raise InputError(f'empty image ({msg.width}x{msg.height})')
        channels = 1 if msg.encoding.lower() == 'mono8' else (
            4 if msg.encoding.lower() in ('rgba8', 'bgra8') else 3)
        if msg.step < msg.width * channels or len(msg.data) < msg.step * msg.height:
            raise InputError(f'inconsistent image: step {msg.step}, width {msg.width}, '
                             f'{len(msg.data)} bytes for {msg.height} rows')
        rgb = np.ascontiguousarray(image_msg_to_rgb(msg))
        stamp = conv.stamp_to_sec(msg.header.stamp)
        h, w = rgb.shape[:2]
        K = None
        if self.p['camera_info_topic'] and not self._info_ready.is_set():
            # the first images often come just before the first CameraInfo: processed
            # uncalibrated they would start a stream that the calibrated frames then reset. Wait
            # for it briefly (a longer block drops the frames queued meanwhile), and only in the
            # first seconds: a camera without CameraInfo then runs uncalibrated
            now = time.monotonic()
            self._info_wait_start = self._info_wait_start or now
            if now - self._info_wait_start < CAMERA_INFO_PATIENCE_S:
                self._info_ready.wait(CAMERA_INFO_WAIT_S)
        if self._K is not None and self._K_size is not None:
            K = scale_intrinsics(self._K, w / self._K_size[0], h / self._K_size[1])
        depth = None
        if self.p['depth_topic']:
            depth = self._matching_depth(stamp)
            if depth is not None and depth.shape != (h, w):
                raise InputError(f'depth {depth.shape[1]}x{depth.shape[0]} does not match '
                                 f'image {w}x{h}')
        if self.backend_name == 'rgbd' and depth is None:
            raise InputError(f'no depth image within {self.p["depth_sync_slop"]} s of image '
                             f'stamp {stamp:.3f}')
        if not self._camera_frame:
            self._camera_frame = msg.header.frame_id or DEFAULT_CAMERA_FRAME
        return Frame(stamp=stamp, rgb=rgb, depth=depth, K=K)

    def _matching_depth(self, stamp: float, wait_s: float = 0.2) -> np.ndarray | None:
        deadline = time.monotonic() + wait_s
        with self._cv:
            while True:
                best = None
                for d in self._depth:
                    dt = abs(conv.stamp_to_sec(d.header.stamp) - stamp)
                    if dt <= self.p['depth_sync_slop'] and (best is None or dt < best[0]):
                        best = (dt, d)
                if best is not None or time.monotonic() > deadline or not self._running:
                    break
                self._cv.wait(timeout=0.02)
        if best is None:
            return None
        msg = best[1]
        if msg.encoding not in SUPPORTED_DEPTH:
            raise InputError(f"unsupported depth encoding '{msg.encoding}' (supported: "
                             f"{', '.join(SUPPORTED_DEPTH)})")
        depth = image_msg_to_depth(msg)
        return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)

    def _process(self, msg: Image) -> None:
        t0 = time.monotonic()
        frame = self._decode(msg)
        result = self.engine.process(frame)
        if self.engine.last_step.reset_reason:
            self._stats['resets'] += 1
            self.get_logger().warning(self.engine.last_step.reset_reason)
            self._clear_outputs(msg.header.stamp)
        self._proc_times.append(time.monotonic() - t0)
        self._stats['processed'] += 1
        self._publish(msg.header.stamp, result)
        wall = self.get_clock().now().nanoseconds * 1e-9
        self._latency.append(max(0.0, wall - frame.stamp))

    # ------------------------------------------------------------------ outputs
    def _clear_outputs(self, stamp) -> None:
        self._path.clear()
        self._trails.clear()
        self._prev_odom = None
        self.map.reset()
        self.pub_markers.publish(conv.delete_all_markers(self.p['map_frame'], stamp))

    def _publish(self, stamp, result) -> None:
        p = self.p
        cam = self._camera_frame or DEFAULT_CAMERA_FRAME
        T_odom_base = self.frames.odom_from_base(result.T_wc)
        t_sec = conv.stamp_to_sec(stamp)
        if not self._path:  # first frame of a stream: (re)latch base -> camera on /tf_static
            self._publish_static_tf(stamp, cam)
        if p['publish_tf']:
            tfs = [conv.matrix_to_transform(T_odom_base, p['odom_frame'], p['base_frame'],
                                            stamp)]
            if p['publish_map_to_odom_tf']:
                tfs.append(conv.matrix_to_transform(np.eye(4), p['map_frame'], p['odom_frame'],
                                                    stamp))
            self.pub_tf.publish(TFMessage(transforms=tfs))
        if p['publish_points']:
            self.pub_points.publish(conv.points_to_cloud(
                result.points_cam, result.colors, result.confidence,
                Header(stamp=stamp, frame_id=cam)))
        # keep PoseStamped messages, not matrices: the path is re-sent every frame
        self._path.append(conv.make_pose_stamped(T_odom_base, p['odom_frame'], stamp))
        self.pub_path.publish(Path(header=Header(stamp=stamp, frame_id=p['odom_frame']),
                                   poses=list(self._path)))
        prev = self._prev_odom
        self.pub_odom.publish(conv.make_odometry(
            T_odom_base, None if prev is None else prev[1],
            0.0 if prev is None else t_sec - prev[0], p['odom_frame'], p['base_frame'], stamp))
        self._prev_odom = (t_sec, T_odom_base)
        if p['publish_map_points']:
            keep = (result.confidence > 0.5) & ~result.dynamic_mask
            self.map.add(result.points_world, result.colors, keep, self.frames.T_odom_world)
            if self._stats['processed'] % p['map_every_n_frames'] == 1 \
                    or p['map_every_n_frames'] == 1:
                self.map.update()
                self.pub_map.publish(conv.points_to_cloud(
                    self.map.points, self.map.colors, np.ones(len(self.map.points), np.float32),
                    Header(stamp=stamp, frame_id=p['map_frame'])))
        if p['publish_tracks']:
            self._publish_tracks(stamp)

    def _publish_static_tf(self, stamp, cam: str) -> None:
        if self.p['publish_camera_tf'] and self.p['base_frame'] != cam:
            self.pub_tf_static.publish(TFMessage(transforms=[conv.matrix_to_transform(
                self.frames.T_base_cam, self.p['base_frame'], cam, stamp)]))

    def _publish_tracks(self, stamp) -> None:
        snap = self.engine.track_snapshot()
        pos = self.frames.world_to_odom_points(snap.positions.astype(np.float64))
        vel = snap.velocities.astype(np.float64) @ self.frames.T_odom_world[:3, :3].T
        msg = TrackedPoints(header=Header(stamp=stamp, frame_id=self.p['map_frame']))
        msg.ids = [int(i) for i in snap.ids]
        msg.positions = conv.to_points(pos)
        msg.velocities = conv.to_vectors(vel)
        msg.confidence = [float(c) for c in snap.confidence]
        msg.status = [int(s) for s in snap.status]
        self.pub_tracks.publish(msg)
        live = set()
        for track_id, p, s in zip(snap.ids.tolist(), pos, snap.status):
            if s == TrackedPoints.LOST:
                continue
            live.add(track_id)
            trail = self._trails.setdefault(track_id, deque(maxlen=self.p['trail_length']))
            trail.append(p)
        for dead in set(self._trails) - live:
            del self._trails[dead]
        # marker arrays are built point by point in Python: the costliest output, so thinned
        if self._stats['processed'] % self.p['markers_every_n_frames']:
            return
        self.pub_markers.publish(conv.track_markers(
            {k: list(v) for k, v in self._trails.items()}, self.p['map_frame'], stamp,
            lifetime_s=2.0 * self.p['markers_every_n_frames'] / max(self._fps_estimate(), 1.0)))

    def _fps_estimate(self) -> float:
        times = self._proc_times
        return 1.0 / max(float(np.mean(times)), 1e-3) if times else 10.0

    def _publish_diagnostics(self) -> None:
        lat = np.array(self._latency) if self._latency else np.zeros(1)
        proc = np.array(self._proc_times) if self._proc_times else np.zeros(1)
        fps = 1.0 / max(float(np.mean(proc)), 1e-6) if self._proc_times else 0.0
        s = self._stats
        level = DiagnosticStatus.OK
        message = 'running'
        if s['processed'] == 0:
            level, message = DiagnosticStatus.WARN, 'waiting for images'
        elif s['last_error']:
            level, message = DiagnosticStatus.WARN, f"last rejected frame: {s['last_error']}"
        values = {
            'backend': self.backend_name, 'metric': str(self.engine.metric).lower(),
            'fps': f'{fps:.2f}', 'processing_ms_p50': f'{np.median(proc) * 1e3:.1f}',
            'latency_ms_p50': f'{np.median(lat) * 1e3:.1f}',
            'latency_ms_p95': f'{np.percentile(lat, 95) * 1e3:.1f}',
            'frames_received': str(s['received']), 'frames_processed': str(s['processed']),
            'dropped_frames': str(s['dropped_queue']), 'rejected_frames': str(s['rejected']),
            'stream_resets': str(s['resets']), 'cache_frames': str(len(self.engine.cache)),
            'cache_mb': f'{self.engine.cache.megabytes:.1f}',
            'cache_budget_mb': f"{self.p['cache_budget_mb']:.0f}",
        }
        status = DiagnosticStatus(level=level, name=f'{self.get_fully_qualified_name()}: fourd',
                                  message=message, hardware_id=self._camera_frame or 'camera',
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    # ------------------------------------------------------------------ services
    def _world_to_frame(self, frame_id: str, T_wc: np.ndarray | None):
        """4x4 taking world points to `frame_id`, or None if the frame is unknown."""
        p = self.p
        cam = self._camera_frame or DEFAULT_CAMERA_FRAME
        if frame_id in ('', p['map_frame'], p['odom_frame']):
            return self.frames.T_odom_world
        if frame_id == cam and T_wc is not None:
            return invert_pose(T_wc)
        return None

    def _on_query(self, request: QueryMotion.Request, response: QueryMotion.Response):
        n = len(request.points)
        response.header.frame_id = request.target_frame or self.p['map_frame']
        if n > self.p['max_query_points']:
            response.success = False
            response.message = (f'{n} points exceed max_query_points='
                                f"{self.p['max_query_points']}; split the request")
            return response
        source_stamp = conv.stamp_to_sec(request.source_stamp)
        zero_target = request.target_stamp.sec == 0 and request.target_stamp.nanosec == 0
        target_stamp = None if zero_target else conv.stamp_to_sec(request.target_stamp)
        pts = np.array([[q.x, q.y, q.z] for q in request.points], dtype=np.float64).reshape(-1, 3)
        try:
            if request.query_type == QueryMotion.Request.QUERY_PIXEL:
                result = self.engine.query_pixels(source_stamp, pts[:, :2], target_stamp)
            elif request.query_type == QueryMotion.Request.QUERY_POINT:
                T_in = self._world_to_frame(request.source_frame,
                                            self.engine.cached_pose(source_stamp))
                if T_in is None:
                    raise QueryError(f"unknown source_frame '{request.source_frame}' (use "
                                     f"'', map, odom or the camera frame)")
                result = self.engine.query_points(
                    source_stamp, transform_points(invert_pose(T_in), pts), target_stamp)
            else:
                raise QueryError(f'unknown query_type {request.query_type}')
        except QueryError as exc:
            response.success = False
            response.message = str(exc)
            return response
        T_out = self._world_to_frame(request.target_frame,
                                     self.engine.cached_pose(result.target_stamp))
        if T_out is None:
            response.success = False
            response.message = f"unknown target_frame '{request.target_frame}'"
            return response
        pos = transform_points(T_out, result.positions.astype(np.float64))
        src = transform_points(T_out, result.source_positions.astype(np.float64))
        response.success = True
        response.message = result.message
        if np.isfinite(result.target_stamp):
            response.header.stamp = conv.sec_to_stamp(result.target_stamp)
        response.positions = conv.to_points(pos)
        response.displacements = conv.to_vectors(pos - src)
        response.confidence = result.confidence.astype(float).tolist()
        response.status = result.status.astype(int).tolist()
        return response

    def _on_get_trajectory(self, request: GetTrajectory.Request,
                           response: GetTrajectory.Response):
        start = conv.stamp_to_sec(request.start) or None
        end = conv.stamp_to_sec(request.end) or None
        if start is not None and end is not None and end < start:
            response.success = False
            response.message = 'end is before start'
            return response
        poses = self.engine.trajectory(start, end)
        if not poses:
            response.success = False
            response.message = 'no processed frame in that range'
            return response
        frame = self.p['odom_frame']
        response.path = conv.make_path(
            [(conv.sec_to_stamp(s), self.frames.odom_from_base(T)) for s, T in poses], frame,
            conv.sec_to_stamp(poses[-1][0]))
        response.success = True
        response.message = f'{len(poses)} poses'
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        self.engine.reset()
        self._clear_outputs(self.get_clock().now().to_msg())
        self._stats['resets'] += 1
        response.success = True
        response.message = 'stream reset: cache, tracks and trajectory cleared'
        return response

    def destroy_node(self) -> None:
        self._running = False
        with self._cv:
            self._cv.notify_all()
        self._worker.join(timeout=5.0)
        self.engine.close()
        super().destroy_node()


CAMERA_INFO_WAIT_S = 0.3  # longest wait of one image for the first CameraInfo
CAMERA_INFO_PATIENCE_S = 2.0  # images wait for it only this long after the first one


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = FourdNode()
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f'fourd_node: error: {exc}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    # services and inference-result publishing must not wait for each other
    return spin_until_shutdown(node, MultiThreadedExecutor(num_threads=4))


if __name__ == '__main__':
    sys.exit(main())
