"""fourd_node: streaming 4D perception from a ROS 2 camera (wiring of the core engine to ROS).

Inputs (relative names, remapped the ROS 2 way: ``-r image:=/cam/image_raw``):
  image (sensor_msgs/Image), camera_info (CameraInfo, optional), depth (registered Image; the
  rgbd backend's input, subscribed only by it).
Outputs: see `fourd_ros.ros.outputs.TOPICS`; services ~/query_motion, ~/get_object_motion,
~/get_trajectory, ~/save_map, ~/reset.
Input decoding and synchronisation live in `fourd_ros.ros.inputs`, publishing in
`fourd_ros.ros.outputs`; this module wires them to the engine.

Threads: one worker thread runs the engine and publishes; a single-threaded executor runs the
callbacks, which only queue messages (drop-oldest), and the services. Inference never blocks a
query (the engine holds its cache lock only for short bookkeeping). ``~/reset`` waits for the
frame being processed. A multi-threaded executor was measured far worse: while a callback
waits in its thread pool the executor spins on the still-ready entity, holding the interpreter
lock that the worker and the services need (p99 query latency 40 s instead of 40 ms at 50
calls/s, docs/history.md).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.service import Service
from rclpy.timer import Timer

from diagnostic_msgs.msg import DiagnosticStatus
from fourd_ros_msgs.srv import GetObjectMotion, GetTrajectory, QueryMotion, SaveMap
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from fourd_ros.core.backends.factory import make_backend, resolve_backend
from fourd_ros.core.data.ros_image import SignificantBits
from fourd_ros.core.engine.backend import BackendError
from fourd_ros.core.engine.cache import budget_policy
from fourd_ros.core.engine.engine import (EngineConfig, InputError, QueryError,
                                          StreamingEngine, latent_nbytes_by_device)
from fourd_ros.core.engine.tracks import TrackConfig
from fourd_ros.core.frame_tree import FrameTree, normalise_frame
from fourd_ros.core.geometry import invert_pose, transform_points
from fourd_ros.core.map_cloud import write_ply
from fourd_ros.core.types import Frame, GroundPlane
from fourd_ros.ros import conversions as conv
from fourd_ros.ros.inputs import (Calibration, DepthSync, InputLossMonitor, SUPPORTED_DEPTH,
                                  SUPPORTED_IMAGE, check_same_frame, decode_depth,
                                  decode_image)
from fourd_ros.ros.outputs import TOPICS, Outputs
from fourd_ros.ros.qos import fresh, SERVICE_QOS, TF_STATIC_QOS
from fourd_ros.ros.params import PARAMS, PARAMS_BY_NAME, params_usage
from fourd_ros.ros.spin import run_node

DEFAULT_CAMERA_FRAME = 'camera_optical_frame'
INPUTS = (
    ('image', 'sensor_msgs/Image', f"camera image ({', '.join(SUPPORTED_IMAGE)}; raw, or "
     'rectified with image_rectified:=true; image_transport:=compressed reads the '
     'CompressedImage on <image>/compressed instead)'),
    ('camera_info', 'sensor_msgs/CameraInfo', 'its calibration (optional: without it the '
     'intrinsics are guessed and outputs are up to that guess; use_camera_info:=false: not '
     'subscribed)'),
    ('depth', 'sensor_msgs/Image', f"registered depth ({', '.join(SUPPORTED_DEPTH)}: mm or m); "
     'remapping it selects backend rgbd under backend:=auto; '
     'depth_image_transport:=compressedDepth reads <depth>/compressedDepth instead'),
)


class _StaleFrame(Exception):
    """The frame in hand waited at start (for a camera driver's /tf_static frames) and a
    newer image came meanwhile: it is dropped, the newer one goes on."""


class ConfigError(ValueError):
    """An inconsistent node configuration, found at start."""


class FourdBehaviour:
    """What the fourd node does, mixed into an rclpy node class: the plain node (`FourdNode`,
    configured and active from the start) and the managed one
    (`fourd_ros.ros.lifecycle_node.FourdLifecycleNode`: configure loads the model and creates
    the outputs and services, activate subscribes to the camera, deactivate stops taking
    images, cleanup frees the model).
    """

    def _declare_parameters(self, managed: bool = False) -> None:
        """Declare the parameters; `managed`: those the table marks read-only (read at
        configure) may be set while the node is unconfigured."""
        self._managed = managed
        self._accept_integers_as_floats()
        for p in PARAMS:
            self.declare_parameter(p.name, p.default,
                                   p.descriptor(read_only=False if managed else None))
        # the one dict of values (Outputs reads it too): refreshed at configure, then kept up
        # to date by the set-parameters callback
        self.p = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.engine: StreamingEngine | None = None
        self._inputs: list = []     # camera subscriptions of an active node
        self._handles: list = []    # services, timer, TF listeners of a configured node
        self._worker: threading.Thread | None = None
        # set to stop the current inference worker (each worker has its own: one that is still
        # finishing a long frame after a deactivate must not run on beside the next one)
        self._stop = threading.Event()
        # held while a frame is processed and published, by ~/reset (a reset never interleaves
        # with a frame's outputs) and by cleanup (it waits for the frame in hand)
        self._frame_lock = threading.Lock()
        self._active = False

    def _accept_integers_as_floats(self) -> None:
        """`-p cache_budget_mb:=256` and launch arguments such as `camera_height:=1` arrive as
        integers, which rclpy refuses for a floating-point parameter (the node would exit on
        InvalidParameterTypeException): the command line's integers become floats. rclpy keeps
        the overrides in `Node._parameter_overrides` (no public accessor); without it, nothing
        changes."""
        overrides = getattr(self, '_parameter_overrides', None)
        if not isinstance(overrides, dict):
            return
        for p in PARAMS:
            given = overrides.get(p.name)
            if isinstance(p.default, float) and given is not None \
                    and given.type_ == Parameter.Type.INTEGER:
                overrides[p.name] = Parameter(p.name, Parameter.Type.DOUBLE, float(given.value))

    # ------------------------------------------------------------------ lifecycle
    def _configure(self) -> None:
        """Read the parameters, load the backend (its model), create the outputs, services,
        /tf_static listener and diagnostics.

        Raises:
            ConfigError: an inconsistent configuration (or the backend's own error, e.g. a
                bad checkpoint), with one line that says why.
        """
        self.p.update({p.name: self.get_parameter(p.name).value for p in PARAMS})
        problems = [why for why in (p.check(self.p[p.name]) for p in PARAMS) if why]
        if problems:
            raise ConfigError('; '.join(problems))
        depth_remapped = self._remapped('depth')
        backend_name = resolve_backend(self.p['backend'], depth_remapped)
        if backend_name == 'rgbd' and not depth_remapped:
            raise ConfigError(
                'backend rgbd needs a registered depth input: remap it, e.g. '
                '-r depth:=/camera/aligned_depth_to_color/image_raw (or use backend:=learned '
                'for a monocular camera)')
        self.backend_name = backend_name
        # rgbd needs the depth; the learned backend takes metres from it when it is remapped
        self.uses_depth = backend_name == 'rgbd' or depth_remapped
        backend = make_backend(backend_name, device=self.p['device'],
                               checkpoint=self.p['checkpoint'] or None,
                               metric_depth=self.uses_depth)
        self.engine = StreamingEngine(backend, EngineConfig(
            width=self.p['processing_width'],
            cache=budget_policy(self.p['cache_budget_mb'], self.p['cache_device_budget_mb'],
                                recent=self.p['cache_recent_frames'],
                                max_keyframes=self.p['cache_max_keyframes']),
            tracks=TrackConfig(max_tracks=self.p['max_tracks']),
            max_query_points=self.p['max_query_points']))
        # TF as other nodes publish it: /tf_static's frames (a URDF, camera drivers) give the
        # extrinsics when publish_camera_tf is false (looked up once per stream); with /tf's
        # (a SLAM's map -> odom) they are the frames queries may be asked in
        self._tf = FrameTree()
        self._tf_lock = threading.Lock()
        self._extrinsics_ready = False  # base_frame -> camera: settled once per stream
        self._camera_frame = normalise_frame(self.p['camera_frame'])
        self.calibration = Calibration(CAMERA_INFO_WAIT_S, CAMERA_INFO_PATIENCE_S,
                                       rectified=self.p['image_rectified'],
                                       used=self.p['use_camera_info'])
        self._image_bits = SignificantBits(self.p['image_bits'])
        self.depth_sync = DepthSync(self.p['depth_sync_slop'])
        self.input_loss = InputLossMonitor(self.p['depth_sync_slop'])
        self._queue: deque[Image | CompressedImage] = deque(maxlen=self.p['queue_size'])
        self._cv = threading.Condition()
        self._input_size: tuple[int, int] | None = None  # (width, height) of the last image
        # dropped_at_start: of dropped_queue, those before the stream's camera mounting was
        # settled (the wait for a camera driver's TF frames, TF_STATIC_GRACE_S)
        self._stats = {'received': 0, 'processed': 0, 'dropped_queue': 0,
                       'dropped_at_start': 0, 'rejected': 0,
                       'resets': 0, 'last_error': '', 'tracking_lost': 0, 'relocalized': 0,
                       'last_tracking_ok': True, 'rejecting': False}
        self._rejecting_since = time.monotonic()  # when the current run of rejections began
        self._latency: deque[float] = deque(maxlen=100)
        self._arrivals: deque[float] = deque(maxlen=100)  # monotonic times images came
        self._depth_count = 0  # depth images received
        self._proc_times: deque[float] = deque(maxlen=100)   # decode + engine, s
        self._frame_times: deque[float] = deque(maxlen=100)  # + publishing the outputs, s
        self.out = Outputs(self, self.p, conv.FrameTransforms(conv.T_LINK_FROM_OPTICAL.copy()))
        self._image_type, self._image_topic = self._input('image', self.p['image_transport'])
        self._depth_type, self._depth_topic = self._input('depth',
                                                          self.p['depth_image_transport'])
        self._first_image_at = 0.0  # monotonic time of the first image (0: none yet)
        self._handles = [
            self.create_subscription(TFMessage, '/tf_static',
                                     lambda m: self._on_tf(m, timed=False), TF_STATIC_QOS),
            self.create_subscription(TFMessage, '/tf', lambda m: self._on_tf(m, timed=True),
                                     100),
            self.create_service(QueryMotion, '~/query_motion', self._on_query,
                                qos_profile=SERVICE_QOS),
            self.create_service(GetObjectMotion, '~/get_object_motion',
                                self._on_get_object_motion, qos_profile=SERVICE_QOS),
            self.create_service(GetTrajectory, '~/get_trajectory', self._on_get_trajectory,
                                qos_profile=SERVICE_QOS),
            self.create_service(SaveMap, '~/save_map', self._on_save_map,
                                qos_profile=SERVICE_QOS),
            self.create_service(Trigger, '~/reset', self._on_reset, qos_profile=SERVICE_QOS),
            self.create_timer(self.p['diagnostics_period'], self._publish_diagnostics)]

    def _activate(self) -> None:
        """Subscribe to the camera and start the inference worker."""
        def sensor_qos() -> QoSProfile:
            # a new profile per subscription (`qos.fresh`): qos_profile_sensor_data itself
            # would carry one topic's overrides to every later user in the process
            if self.p['image_qos'] == 'sensor_data':
                return fresh(qos_profile_sensor_data)
            return fresh(30)

        # each input's QoS can be overridden per topic, the ROS 2 way (parameters
        # qos_overrides.<topic>.subscription.<reliability|history|depth>, read at start)
        overrides = QoSOverridingOptions.with_default_policies()
        self._inputs = [
            self.create_subscription(self._image_type, self._image_topic, self._on_image,
                                     sensor_qos(), qos_overriding_options=overrides)]
        if self.p['use_camera_info']:
            self._inputs.append(self.create_subscription(
                CameraInfo, 'camera_info', self.calibration.update, sensor_qos(),
                qos_overriding_options=overrides))
        if self.uses_depth:
            self._inputs.append(self.create_subscription(
                self._depth_type, self._depth_topic, self._on_depth, sensor_qos(),
                qos_overriding_options=overrides))
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, args=(self._stop,),
                                        name='fourd_inference', daemon=True)
        self._worker.start()
        self._active = True
        inputs = {'image': self._image_topic}
        if self.p['use_camera_info']:
            inputs['camera_info'] = 'camera_info'
        if self.uses_depth:
            inputs['depth'] = self._depth_topic
        self.get_logger().info(
            f'fourd ready: backend={self.backend_name} (metric={self.engine.metric}), inputs: '
            + ', '.join(f"{n}='{self.resolve_topic_name(t)}'" for n, t in inputs.items()))
        if self.p['camera_height'] > 0:
            if self.uses_depth:
                self.get_logger().info('camera_height is not used: the depth sensor gives '
                                       'metres')
            elif self.p['publish_camera_tf']:
                self.get_logger().warning(
                    "camera_height with publish_camera_tf: the node's own base_frame -> "
                    'camera is level: a camera pitched or rolled needs its mounting on '
                    "/tf_static (publish_camera_tf:=false, e.g. a URDF's)")

    def _deactivate(self) -> None:
        """Stop taking images: unsubscribe, let the frame in hand finish, drop the waiting
        ones. The model, the cache and the services stay."""
        self._active = False
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        self._stop_worker()
        if self.engine is not None:
            with self._cv:
                self._queue.clear()

    def _cleanup(self) -> None:
        """Back to unconfigured: outputs, services and the model released."""
        if self._active:
            self._deactivate()
        for handle in self._handles:
            if isinstance(handle, Timer):
                self.destroy_timer(handle)
            elif isinstance(handle, Service):
                self.destroy_service(handle)
            else:
                self.destroy_subscription(handle)
        self._handles = []
        # after a frame still in hand (a worker that outlived deactivate's wait): its outputs
        # and engine must not go away under it
        with self._frame_lock:
            if getattr(self, 'out', None) is not None:
                self.out.destroy(self)
                self.out = None
            if getattr(self, 'depth_sync', None) is not None:
                self.depth_sync.close()
                self.depth_sync = None
            if self.engine is not None:
                self.engine.close()
                self.engine = None

    def _stop_worker(self) -> None:
        if not hasattr(self, '_stop'):  # parameters refused before the worker's set-up
            return
        self._stop.set()
        if self._worker is not None:
            with self._cv:
                self._cv.notify_all()
            self._worker.join(timeout=5.0)
            if self._worker.is_alive():
                # it ends after its frame (its own stop event is set); the frame lock keeps it
                # from running beside a worker started by the next activation, and cleanup
                # waits for it
                self.get_logger().warning('the frame in hand is still being processed; it '
                                          'finishes in the background')
            self._worker = None

    # ------------------------------------------------------------------ set-up
    def _remapped(self, name: str) -> bool:
        """Whether a remapping rule applies to the relative input name `name`."""
        return self.resolve_topic_name(name) != self.resolve_topic_name(name, only_expand=True)

    def _input(self, name: str, transport: str) -> tuple[type, str]:
        """(message type, topic) of an image input: the relative name itself for raw images,
        else image_transport's sub-topic of its remapped name (``<image>/compressed``, as the
        camera's image_transport publisher names it)."""
        if transport == 'raw':
            return Image, name
        return CompressedImage, f'{self.resolve_topic_name(name)}/{transport}'

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult
        for param in params:
            known = PARAMS_BY_NAME.get(param.name)
            why = known.check(param.value) if known else ''
            if known and known.read_only and self.engine is not None:
                why = (f'parameter {param.name} is read at configure: clean the node up '
                       'first')
            if why:
                return SetParametersResult(successful=False, reason=why)
        for param in params:
            self.p[param.name] = param.value
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks (cheap)
    def _on_image(self, msg: Image | CompressedImage) -> None:
        if not self._first_image_at:
            self._first_image_at = time.monotonic()
        self.input_loss.add_image(conv.stamp_to_sec(msg.header.stamp))
        self._arrivals.append(time.monotonic())
        with self._cv:
            self._stats['received'] += 1
            if len(self._queue) == self._queue.maxlen:
                self._stats['dropped_queue'] += 1
                self._stats['dropped_at_start'] += not self._extrinsics_ready
            self._queue.append(msg)  # deque(maxlen) drops the oldest
            self._cv.notify()

    def _on_depth(self, msg: Image | CompressedImage) -> None:
        self._depth_count += 1
        self.input_loss.add_depth(conv.stamp_to_sec(msg.header.stamp))
        self.depth_sync.add(msg)

    def _on_tf(self, msg: TFMessage, timed: bool) -> None:
        with self._tf_lock:
            problems = conv.add_transforms(self._tf, msg, timed)
        for why in problems:
            self.get_logger().warning(f"{'/tf' if timed else '/tf_static'}: {why}",
                                      throttle_duration_sec=10.0)

    def _transform(self, target: str, source: str, stamp: float | None = None,
                   timed: bool = True) -> np.ndarray | None:
        """4x4 pose of frame `source` in frame `target` through TF's chains at `stamp`
        (`timed` False: /tf_static's only)."""
        with self._tf_lock:
            return self._tf.lookup(target, source, stamp, timed)

    def _settle_extrinsics(self, camera_frame: str) -> bool:
        """base_frame -> camera frame, once per stream: the node's own (publish_camera_tf, the
        REP-103 optical rotation, latched on /tf_static), unless another node already gives
        the camera frame a parent (a camera driver's camera_link -> camera_color_frame ->
        camera_color_optical_frame on /tf_static, or on /tf at a rate): then, as with
        publish_camera_tf false, that chain is looked up and nothing is added (a frame has
        one parent).

        Returns whether it waited for the driver's frames (the frame in hand is then stale).

        Raises:
            InputError: the chain is not (yet) there, naming the frames known.
        """
        base = self.p['base_frame']
        own = self.p['publish_camera_tf']
        # a driver's latched frames reach the node only after discovery, often a moment
        # after its first images: before latching its own edge the node waits for them up to
        # TF_STATIC_GRACE_S from its first image (once: later streams find them known)
        deadline = (self._first_image_at + TF_STATIC_GRACE_S
                    if own and base != camera_frame else 0.0)
        waited = False
        while True:
            with self._tf_lock:
                parent = self._tf.parent(camera_frame)
            # any parent the node did not latch itself is someone else's (also base_frame,
            # from a driver or a URDF that names it)
            foreign = parent is not None and not (self.out.camera_tf_latched and parent == base)
            if foreign or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
            waited = True
        start = self.out.frames.T_odom_start
        if own and not foreign:
            self.out.frames = conv.FrameTransforms(conv.T_LINK_FROM_OPTICAL.copy(), start)
            self.out.camera_tf_owned = True
            self._extrinsics_ready = True
            return waited
        # /tf_static only when told so (publish_camera_tf false); a driver may also send its
        # rigid frames on /tf at a rate: then the newest
        T = self._transform(base, camera_frame, timed=own)
        if T is None:
            with self._tf_lock:
                known = ', '.join(self._tf.frames) or 'none yet'
            why = ('publish_camera_tf is false' if not own else
                   f"'{camera_frame}' has the parent '{parent}' (a camera driver's?), so the "
                   f'node does not add its own: publish {base} -> the root of that chain (a '
                   'URDF) or set base_frame to it')
            raise InputError(f'waiting for the transform {base} -> {camera_frame} on '
                             f"{'/tf_static' if not own else 'TF'} ({why}; frames known: "
                             f'{known})')
        if foreign and own:
            self.get_logger().info(
                f"'{camera_frame}' has a parent on TF ('{parent}'): the camera's mounting "
                f'comes from that chain, the node publishes no {base} -> {camera_frame} of '
                'its own')
        self.out.frames = conv.FrameTransforms(T, start)
        self.out.camera_tf_owned = False
        self._extrinsics_ready = True
        return waited

    # ------------------------------------------------------------------ worker
    def _work(self, stop: threading.Event) -> None:
        """The inference worker: processes queued images until `stop` is set."""
        while not stop.is_set():
            with self._cv:
                while not stop.is_set() and not self._queue:
                    self._cv.wait(timeout=0.5)
                if stop.is_set():
                    return
                msg = self._queue.popleft()
            if not self.context.ok():
                return
            try:
                with self._frame_lock:
                    self._process(msg)
            except _StaleFrame:  # it waited for the camera's mounting: a start drop
                with self._cv:
                    self._stats['dropped_queue'] += 1
                    self._stats['dropped_at_start'] += 1
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
        if not self._stats['rejecting']:
            self._rejecting_since = time.monotonic()
        self._stats['rejecting'] = True
        self.get_logger().error(f'frame rejected: {why}', throttle_duration_sec=5.0)

    def _decode(self, msg: Image | CompressedImage) -> Frame:
        image_frame = normalise_frame(msg.header.frame_id)
        if not self._camera_frame:
            self._camera_frame = image_frame or DEFAULT_CAMERA_FRAME
        rgb = decode_image(msg, self._image_bits)
        stamp = conv.stamp_to_sec(msg.header.stamp)
        h, w = rgb.shape[:2]
        # (after the wait for the first CameraInfo: a driver latches its frames at start)
        self.calibration.wait_first()
        if not self._extrinsics_ready and self._settle_extrinsics(self._camera_frame):
            with self._cv:
                if self._queue:  # a newer image came while this one waited
                    raise _StaleFrame
        depth = None
        if self.uses_depth:
            depth_msg = self.depth_sync.match(stamp)
            if depth_msg is None:
                topic = self.resolve_topic_name(self._depth_topic)
                # a monocular camera started with a depth remap
                never = (" (none has come at all: a monocular camera? leave 'depth' "
                         "unremapped (the launch file's default) for backend learned)"
                         if not self._depth_count else '')
                raise InputError(f"no depth image on '{topic}' within "
                                 f"{self.p['depth_sync_slop']} s of image stamp {stamp:.3f}"
                                 + never)
            check_same_frame('depth', depth_msg.header.frame_id, image_frame,
                             'the depth must be registered to the image (e.g. '
                             'aligned_depth_to_color)')
            depth = decode_depth(depth_msg, (h, w))
        check_same_frame('camera_info', self.calibration.frame_id, image_frame,
                         "the calibration is another camera's")
        rgb, depth, K = self.calibration.pinhole(rgb, depth)
        self._input_size = (w, h)
        height = self.p['camera_height']
        # a ground robot's floor: base_frame's z axis, the camera this high above it
        ground = GroundPlane(self.out.frames.up_in_camera(), height) if height > 0 else None
        return Frame(stamp=stamp, rgb=rgb, depth=depth, K=K, ground=ground)

    def _process(self, msg: Image | CompressedImage) -> None:
        t0 = time.monotonic()
        frame = self._decode(msg)
        result = self.engine.process(frame)
        if self.engine.last_step.reset_reason:
            self._stats['resets'] += 1
            self.get_logger().warning(self.engine.last_step.reset_reason)
            self.out.clear(msg.header.stamp)
        self._proc_times.append(time.monotonic() - t0)
        self._stats['processed'] += 1
        self._stats['rejecting'] = False
        tracking_ok = bool(result.extras.get('tracking_ok', True))
        self._stats['last_tracking_ok'] = tracking_ok
        self._stats['tracking_lost'] += not tracking_ok
        self._stats['relocalized'] += bool(result.extras.get('tracking_relocalized', False))
        if not tracking_ok:
            self.get_logger().warning('camera tracking lost: the pose holds the last one until '
                                      'the view is found again', throttle_duration_sec=5.0)
        tracks = self.engine.track_snapshot() if self.p['publish_tracks'] else None
        self.out.publish(msg.header.stamp, result, self._camera_frame or DEFAULT_CAMERA_FRAME,
                         tracks, self.engine.object_snapshot(), self._fps_estimate())
        # the worker's whole time on the frame (decode, engine, publishing): what a frame
        # arriving behind it waits for
        self._frame_times.append(time.monotonic() - t0)
        wall = self.get_clock().now().nanoseconds * 1e-9
        self._latency.append(max(0.0, wall - frame.stamp))

    # ------------------------------------------------------------------ diagnostics
    def _scale_source(self) -> str:
        """Where the outputs' unit comes from, for /diagnostics."""
        if self.uses_depth:
            if self.backend_name == 'rgbd':
                return 'depth sensor (metres)'
            return ("depth sensor (metres: the learned depth brought to the sensor's)"
                    if self.engine.metric else 'depth sensor: waiting for a frame with depth')
        if self.p['camera_height'] <= 0:
            return 'unknown (up to scale; set camera_height on a ground robot)'
        up = self.out.frames.up_in_camera()
        tilt = (f'camera {np.degrees(np.arcsin(np.clip(-up[2], -1, 1))):.1f} deg below level, '
                f'roll {np.degrees(np.arctan2(up[0], -up[1])):.1f} deg')
        if self.engine.metric:
            return f'floor, camera_height (metres; {tilt})'
        return f'floor, camera_height: waiting for the floor to move in view ({tilt})'

    def _fps_estimate(self, default: float = 10.0) -> float:
        """Frames per second the worker manages (its whole time per frame); `default` before
        the first frame."""
        times = self._frame_times
        return 1.0 / max(float(np.mean(times)), 1e-3) if times else default

    def _input_rate(self) -> tuple[float, float]:
        """(images received per second over the last 100, seconds since the last one; NaN
        before two / one images)."""
        arrivals = list(self._arrivals)
        now = time.monotonic()
        since = now - arrivals[-1] if arrivals else float('nan')
        if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
            return float('nan'), since
        return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), since

    def _publish_diagnostics(self) -> None:
        lat = np.array(self._latency) if self._latency else np.zeros(1)
        proc = np.array(self._proc_times) if self._proc_times else np.zeros(1)
        frame = np.array(self._frame_times) if self._frame_times else np.zeros(1)
        fps = self._fps_estimate(default=0.0)
        s = self._stats
        loss = self.input_loss.report(os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE')
                                      or 'config/fastdds.xml of fourd_ros')
        input_fps, since_image = self._input_rate()
        # stale: no image for 5 of the camera's frame intervals, and at least 2 s
        stale_after = max(2.0, 5.0 / input_fps) if input_fps > 0 else 2.0
        level = DiagnosticStatus.OK
        message = 'running'
        if not self._active:
            message = 'inactive (managed node): not taking images'
        elif since_image > stale_after:
            level, message = DiagnosticStatus.WARN, (
                f"no image for {since_image:.1f} s on '"
                f"{self.resolve_topic_name(self._image_topic)}'")
        elif s['rejecting']:  # until a frame is processed again (also before the first one)
            # every frame rejected for a while: the node produces nothing (ERROR, for an
            # aggregator or a supervisor), not a passing hiccup
            rejecting_s = time.monotonic() - self._rejecting_since
            level, message = (
                (DiagnosticStatus.ERROR, f'no frame processed for {rejecting_s:.0f} s, frames '
                 f"rejected: {s['last_error']}") if rejecting_s >= REJECTING_ERROR_S else
                (DiagnosticStatus.WARN, f"frames rejected: {s['last_error']}"))
        elif s['processed'] == 0:
            level, message = DiagnosticStatus.WARN, 'waiting for images'
        elif not s['last_tracking_ok']:
            level, message = DiagnosticStatus.WARN, 'camera tracking lost'
        elif loss.warning:
            level, message = DiagnosticStatus.WARN, loss.warning
        if loss.warning:
            self.get_logger().warning(loss.warning, throttle_duration_sec=10.0)
        values = {
            'backend': self.backend_name, 'metric': str(self.engine.metric).lower(),
            'scale': self._scale_source(),
            'camera_model': self.calibration.describe(),
            'input_fps': f'{input_fps:.2f}', 'seconds_since_image': f'{since_image:.2f}',
            'fps': f'{fps:.2f}', 'processing_ms_p50': f'{np.median(proc) * 1e3:.1f}',
            'frame_ms_p50': f'{np.median(frame) * 1e3:.1f}',
            'latency_ms_p50': f'{np.median(lat) * 1e3:.1f}',
            'latency_ms_p95': f'{np.percentile(lat, 95) * 1e3:.1f}',
            'frames_received': str(s['received']), 'frames_processed': str(s['processed']),
            'dropped_frames': str(s['dropped_queue']),
            'dropped_frames_at_start': str(s['dropped_at_start']),
            'rejected_frames': str(s['rejected']),
            'last_rejection': s['last_error'],
            'input_images_missing': str(loss.images_missing),
            'input_depth_received': str(loss.depth_received),
            'input_depth_missing': str(loss.depth_missing),
            'input_depth_unmatched': str(loss.depth_unmatched),
            'tracking': 'ok' if s['last_tracking_ok'] else 'lost',
            'tracking_lost_frames': str(s['tracking_lost']),
            'tracking_relocalized_frames': str(s['relocalized']),
            'stream_resets': str(s['resets']), 'cache_frames': str(len(self.engine.cache)),
            'cache_mb': f'{self.engine.cache.megabytes:.1f}',
            'cache_mb_by_device': self._cache_by_device(),
            'cache_budget_mb': f"{self.p['cache_budget_mb']:.0f}",
            'cache_device_budget_mb':
                f"{self.p['cache_device_budget_mb'] or self.p['cache_budget_mb']:g}",
        }
        self.out.publish_diagnostics(f'{self.get_fully_qualified_name()}: fourd',
                                     self._camera_frame or 'camera', level, message, values,
                                     self.get_clock().now().to_msg())

    def _cache_by_device(self) -> str:
        """The cache's MiB on each device ('cpu: 12.0, cuda:0: 80.5': storage of the cached
        entries, each shared storage once)."""
        total = latent_nbytes_by_device(self.engine.cache.entries())
        return ', '.join(f'{d}: {n / 2**20:.1f}' for d, n in sorted(total.items())) or 'empty'

    # ------------------------------------------------------------------ services
    def _world_to_frame(self, frame_id: str, T_wc: np.ndarray | None,
                        stamp: float) -> np.ndarray:
        """4x4 taking the core's world points to `frame_id` at `stamp` (s), when the camera
        pose (camera-to-world) was `T_wc` (None when not cached): '' or the output frame (map,
        or odom without map -> odom), odom, the base frame, the camera frame, /tf_static frames
        under the base (a URDF's), or any frame TF connects to odom at that stamp (e.g. map
        when a SLAM owns map -> odom).

        Raises:
            QueryError: a frame that cannot be resolved, with why.
        """
        p = self.p
        frames = self.out.frames  # once: the worker replaces it at a stream's start
        frame = normalise_frame(frame_id)
        when = f'at {stamp:.3f}' if np.isfinite(stamp) else 'now'
        stamp = float(stamp) if np.isfinite(stamp) else None  # None: TF's newest
        if frame in ('', self.out.world_frame, p['odom_frame']):
            return frames.T_odom_world
        # frames that move with the robot: from the engine's own pose of that stamp
        T_frame_base = (np.eye(4) if frame == p['base_frame'] else
                        invert_pose(frames.T_base_cam)
                        if frame == (self._camera_frame or DEFAULT_CAMERA_FRAME) else
                        self._transform(frame, p['base_frame'], timed=False))
        if T_frame_base is not None:
            if T_wc is None:
                raise QueryError(f"no camera pose for the stamp asked: '{frame_id}' moves "
                                 'with the camera')
            T_odom_base = frames.odom_from_base(T_wc)
            return T_frame_base @ invert_pose(T_odom_base) @ frames.T_odom_world
        T_frame_odom = self._transform(frame, p['odom_frame'], stamp)
        if T_frame_odom is not None:
            return T_frame_odom @ frames.T_odom_world
        known = ', '.join(dict.fromkeys(("''", self.out.world_frame, p['odom_frame'],
                                         p['base_frame'])))
        raise QueryError(
            f"unknown frame '{frame_id}' {when}: use {known}, the camera frame, a /tf_static "
            f"frame under {p['base_frame']} or a frame /tf connects to {p['odom_frame']} then")

    def _on_query(self, request: QueryMotion.Request, response: QueryMotion.Response):
        n = len(request.points) or len(request.points_packed) // 3
        response.header.frame_id = request.target_frame or self.out.world_frame
        if n > self.p['max_query_points']:
            response.success = False
            response.message = (f'{n} points exceed max_query_points='
                                f"{self.p['max_query_points']}; split the request")
            return response
        source_stamp = conv.stamp_to_sec(request.source_stamp)
        target_stamp = conv.stamp_or_latest(request.target_stamp)
        try:
            pts = (conv.points_to_array(request.points) if request.points
                   else conv.unpack_points(request.points_packed))
            if request.query_type == QueryMotion.Request.QUERY_PIXEL:
                # pixels of the image as the camera sent it: where undistortion put them
                pixels = (self.calibration.pinhole_pixels(pts[:, :2], *self._input_size)
                          if self._input_size else pts[:, :2])
                result = self.engine.query_pixels(source_stamp, pixels, target_stamp)
            elif request.query_type == QueryMotion.Request.QUERY_POINT:
                try:
                    T_in = self._world_to_frame(request.source_frame,
                                                self.engine.cached_pose(source_stamp),
                                                source_stamp)
                except QueryError as exc:
                    raise QueryError(f'source_frame: {exc}') from None
                result = self.engine.query_points(
                    source_stamp, transform_points(invert_pose(T_in), pts), target_stamp)
            else:
                raise QueryError(f'unknown query_type {request.query_type}')
        except (QueryError, ValueError) as exc:
            response.success = False
            response.message = str(exc)
            return response
        try:
            T_out = self._world_to_frame(request.target_frame,
                                         self.engine.cached_pose(result.target_stamp),
                                         result.target_stamp)
        except QueryError as exc:
            response.success = False
            response.message = f'target_frame: {exc}'
            return response
        pos = transform_points(T_out, result.positions.astype(np.float64))
        src = transform_points(T_out, result.source_positions.astype(np.float64))
        response.success = True
        response.message = result.message
        if np.isfinite(result.target_stamp):
            response.header.stamp = conv.sec_to_stamp(result.target_stamp)
        if request.packed_answer:
            response.positions_packed = conv.pack(pos)
            response.displacements_packed = conv.pack(pos - src)
        else:
            response.positions = conv.to_points(pos)
            response.displacements = conv.to_vectors(pos - src)
        response.confidence = conv.pack(result.confidence, 'f')
        response.status = conv.pack(result.status, 'B')
        response.object_ids = conv.pack(result.object_ids, 'Q')
        return response

    def _on_get_object_motion(self, request: GetObjectMotion.Request,
                              response: GetObjectMotion.Response):
        answer = self.engine.object_motion(
            request.object_id, conv.stamp_to_sec(request.source_stamp),
            conv.stamp_or_latest(request.target_stamp))
        response.header.frame_id = request.frame_id or self.out.world_frame
        if np.isfinite(answer.target_stamp):
            response.header.stamp = conv.sec_to_stamp(answer.target_stamp)
        try:
            T = self._world_to_frame(request.frame_id,
                                     self.engine.cached_pose(answer.target_stamp),
                                     answer.target_stamp)
        except QueryError as exc:
            response.success = False
            response.message = f'frame_id: {exc}'
            return response
        response.success = answer.ok
        response.message = answer.message or f'{answer.num_points} points followed'
        if answer.ok:
            response.motion = conv.matrix_to_transform(
                T @ answer.motion @ invert_pose(T), '', '', response.header.stamp).transform
            response.num_points = answer.num_points
            response.confidence = answer.confidence
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
        frames = self.out.frames  # once: the worker replaces it at a stream's start
        response.path = conv.make_path(
            [(conv.sec_to_stamp(s), frames.odom_from_base(T)) for s, T in poses], frame,
            conv.sec_to_stamp(poses[-1][0]))
        response.success = True
        response.message = f'{len(poses)} poses'
        return response

    def _on_save_map(self, request: SaveMap.Request, response: SaveMap.Response):
        path = Path(request.path).expanduser()
        response.success = False
        if path.suffix.lower() != '.ply':
            response.message = f'the path must end in .ply: {request.path!r}'
        elif not path.parent.is_dir():
            response.message = f'the folder {path.parent} does not exist'
        elif not self.p['publish_map_points']:
            response.message = 'the map is off (publish_map_points is false)'
        else:
            with self._frame_lock:  # between frames: the map is not being added to
                self.out.map.update()
                points, colors = self.out.map.points.copy(), self.out.map.colors.copy()
            if not len(points):
                response.message = 'the map is still empty'
                return response
            try:
                write_ply(path, points, colors)
            except OSError as exc:
                response.message = f'could not write {path}: {exc}'
                return response
            response.success = True
            response.num_points = len(points)
            response.message = (f'{len(points)} points written to {path.resolve()} '
                                f'(frame {self.out.world_frame})')
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._frame_lock:  # after the frame being processed, before the next
            self.engine.reset()
            self.depth_sync.clear()
            # a new stream settles the extrinsics again (a URDF may have changed)
            self._extrinsics_ready = False
            self.out.clear(self.get_clock().now().to_msg())
            self._stats['resets'] += 1
        response.success = True
        response.message = 'stream reset: cache, tracks and trajectory cleared'
        return response

    def destroy_node(self) -> None:
        # also for a node that failed half-way through its configuration (rclpy's shutdown
        # destroys it)
        self._stop_worker()
        if getattr(self, 'depth_sync', None) is not None:
            self.depth_sync.close()
        if getattr(self, 'engine', None) is not None:
            self.engine.close()
            self.engine = None
        super().destroy_node()


class FourdNode(FourdBehaviour, Node):
    """The fourd node (see module docstring): configured and active from the start."""

    def __init__(self, **kwargs) -> None:
        super().__init__('fourd', **kwargs)
        self._worker = None  # destroy_node may run after a failure below
        self._declare_parameters()
        self._configure()
        self._activate()


CAMERA_INFO_WAIT_S = 0.3  # longest wait of one image for the first CameraInfo
CAMERA_INFO_PATIENCE_S = 2.0  # images wait for it only this long after the first one
REJECTING_ERROR_S = 5.0  # every frame rejected this long: /diagnostics ERROR, not WARN
TF_STATIC_GRACE_S = 3.0  # after its start, how long the node waits for a camera driver's
# /tf_static frames before it latches its own base_frame -> camera (publish_camera_tf)


def usage() -> str:
    """`fourd_node --help`: inputs, outputs, services and parameters."""
    lines = ['usage: fourd_node [-h] [--ros-args [-r NAME:=TOPIC]... [-p NAME:=VALUE]... '
             '[--params-file FILE]]', '',
             'Streaming 4D perception from a ROS 2 camera: per-frame clouds, camera poses on TF,',
             'tracked points, moving objects and past-to-current motion queries.', '',
             'inputs (relative names; remap with -r NAME:=TOPIC):']
    lines += [f'  {n:<14} {t:<28} {d}' for n, t, d in INPUTS]
    lines += ['', 'outputs:'] + [f'  {n:<17} {t:<33} {d}' for n, t, d in TOPICS]
    lines += ['', 'services:',
              '  ~/query_motion    fourd_ros_msgs/QueryMotion   where are these points of a '
              'past frame now',
              '  ~/get_object_motion fourd_ros_msgs/GetObjectMotion rigid motion of a moving '
              'object between two stamps',
              '  ~/get_trajectory  fourd_ros_msgs/GetTrajectory camera path between two stamps',
              '  ~/save_map        fourd_ros_msgs/SaveMap       write the static map to a '
              'PLY file',
              '  ~/reset           std_srvs/Trigger             start a new stream', '',
              'parameters (-p NAME:=VALUE or --params-file config/fourd.yaml; default in '
              'brackets):']
    lines += params_usage(PARAMS)
    lines += ['', 'example: fourd_node --ros-args -r image:=/cam/image_raw '
              '-r camera_info:=/cam/camera_info -r depth:=/cam/depth']
    return '\n'.join(lines)


def main(args: list[str] | None = None) -> int:
    return run_node('fourd_node', FourdNode, usage, args)


if __name__ == '__main__':
    sys.exit(main())
