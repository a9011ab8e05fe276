"""`fourd view`: a live 3D view of a running fourd node in the browser, for users without RViz.

Subscribes to the node's outputs
(``<namespace>/fourd/{map_points,points,path,tracks,objects}``, ``/tf``, ``/tf_static``,
``/diagnostics``) and draws them with viser (its web client ships in the wheel: no CDN, works
offline) on a page served on 127.0.0.1:

- the map cloud (static points) and the current cloud, placed in the map frame through TF;
- the camera trajectory and the current camera frustum;
- tracked points with their trails, moving ones (speed above ``moving_speed``) in magenta;
- the moving objects: their boxes and velocity arrows (one second of motion) in yellow, each
  labelled with its id and speed;
- the node's diagnostics as a table;
- a checkbox per layer (map, cloud, tracks, trajectory, objects) to show or hide it.

Clouds are decimated (``max_points``) and redrawn at most ``max_rate_hz`` to stay light on a
2-core machine. Frames: the map frame of the node (z up, REP-103); units are the node's.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation

from diagnostic_msgs.msg import DiagnosticArray
from fourd_ros_msgs.msg import MovingObjects, TrackedPoints
from nav_msgs.msg import Path
from sensor_msgs.msg import PointCloud2
from tf2_msgs.msg import TFMessage

from fourd_ros.core.frame_tree import FrameTree
from fourd_ros.core.geometry import box_corners
from fourd_ros.ros import conversions as conv
from fourd_ros.ros.qos import LATCHED, TF_STATIC_QOS

MOVING_COLOR = (255, 0, 255)        # a moving track's current position
MOVING_TRAIL_COLOR = (255, 150, 255)  # and its trail
TRAIL_COLOR = (40, 110, 220)        # static tracks
PATH_COLOR = (230, 120, 0)
OBJECT_COLOR = (255, 220, 0)  # moving objects' boxes and velocity arrows
TRAIL_LENGTH = 10  # positions per drawn track trail
# the layers a browser can show or hide (checkboxes on the page, `hidden` at start) and the
# scene nodes each one draws (a name also covers the nodes under it: '/objects/labels/7')
LAYERS = {'map': ('/map',), 'cloud': ('/current', '/camera'),
          'tracks': ('/tracks/heads', '/tracks/trails'), 'trajectory': ('/trajectory',),
          'objects': ('/objects/boxes', '/objects/labels')}
# the 12 edges of a box as `box_corners` orders its corners (index bits: x, y, z sign)
BOX_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8)
                      if bin(a ^ b).count('1') == 1])


@dataclass(frozen=True)
class ViewerConfig:
    """Settings of the browser view.

    Attributes:
        namespace: namespace of the fourd node ('' = root; the node is ``<namespace>/fourd``).
        node_name: the node's name.
        map_frame: the view's fixed frame until the node's map cloud or tracks name theirs
            (its map frame, or odom when another node owns map -> odom).
        max_points: most points drawn per cloud (decimated beyond).
        max_rate_hz: most redraws per second of the current cloud.
        point_size: drawn point size, scene units.
        moving_speed: a track whose trail (its last positions) moved faster than this (scene
            units/s) is drawn as moving.
        view_from, look_at: initial viewpoint of browsers in the map frame (None = behind and
            above the first camera pose).
        fov_deg: vertical field of view of the browser's camera, degrees.
        hidden: layers (`LAYERS`: map, cloud, tracks, trajectory, objects) hidden at start;
            each has a checkbox on the page.
    """

    namespace: str = ''
    node_name: str = 'fourd'
    map_frame: str = 'map'
    max_points: int = 40000
    max_rate_hz: float = 5.0
    point_size: float = 0.02
    moving_speed: float = 0.1
    view_from: tuple[float, float, float] | None = None
    look_at: tuple[float, float, float] | None = None
    fov_deg: float = 60.0
    hidden: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.hidden) - set(LAYERS)
        if unknown:
            raise ValueError(f'unknown layers {sorted(unknown)}; layers: {", ".join(LAYERS)}')

    @property
    def node(self) -> str:
        ns = self.namespace.strip('/')
        return f"/{ns + '/' if ns else ''}{self.node_name}"


def _decimate(points: np.ndarray, colors: np.ndarray, limit: int
              ) -> tuple[np.ndarray, np.ndarray]:
    if len(points) <= limit:
        return points, colors
    idx = np.linspace(0, len(points) - 1, limit).astype(np.int64)
    return points[idx], colors[idx]


def _cloud_arrays(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """N x 3 float32 finite points and N x 3 uint8 colours of a fourd cloud."""
    arr = conv.cloud_to_array(msg).reshape(-1)
    xyz = np.stack([arr['x'], arr['y'], arr['z']], axis=-1).astype(np.float32)
    ok = np.isfinite(xyz).all(axis=1)
    rgb = arr['rgb'][ok].view(np.uint32)
    colors = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=-1).astype(np.uint8)
    return xyz[ok], colors


class FourdViewer(Node):
    """ROS side of the view: turns the node's messages into viser scene updates."""

    def __init__(self, server, config: ViewerConfig = ViewerConfig(), **kwargs) -> None:
        super().__init__('fourd_viewer', **kwargs)
        self.server = server
        self.config = config
        self.tf = FrameTree()  # /tf and /tf_static; the view draws with the newest
        self._last_cloud = 0.0
        self._trails: dict[int, deque] = {}
        self._first_camera: np.ndarray | None = None
        # the node's world frame as its map cloud and tracks say (odom when another node owns
        # map -> odom), until then the configured map frame
        self._fixed_frame = ''
        node = config.node
        cloud_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(PointCloud2, f'{node}/map_points', self._on_map, LATCHED)
        self.create_subscription(PointCloud2, f'{node}/points', self._on_points, cloud_qos)
        self.create_subscription(Path, f'{node}/path', self._on_path, 5)
        self.create_subscription(TrackedPoints, f'{node}/tracks', self._on_tracks, 5)
        self.create_subscription(MovingObjects, f'{node}/objects', self._on_objects, 5)
        self.create_subscription(TFMessage, '/tf', lambda m: conv.add_transforms(
            self.tf, m, timed=True), 100)
        self.create_subscription(TFMessage, '/tf_static', lambda m: conv.add_transforms(
            self.tf, m, timed=False), TF_STATIC_QOS)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        # floating controls: the 3D canvas fills the page (its projection is the page's)
        server.gui.configure_theme(control_layout='floating', control_width='small',
                                   show_share_button=False)
        # what is drawn of each scene node (a redraw replaces the handle) and whether it shows
        self._handles: dict[str, object] = {}
        self._visible = {name: layer not in config.hidden
                         for layer, names in LAYERS.items() for name in names}
        for layer, names in LAYERS.items():
            box = server.gui.add_checkbox(layer, initial_value=layer not in config.hidden)
            box.on_update(lambda event, names=names: self._show(names, event.target.value))
        self._status = server.gui.add_markdown(f'**fourd view** of `{node}`: waiting for the '
                                               'node...')
        server.scene.set_up_direction('+z')
        server.on_client_connect(self._on_client)

    # ------------------------------------------------------------------ browsers
    def _on_client(self, client) -> None:
        view = self._viewpoint()
        client.camera.fov = np.radians(self.config.fov_deg)
        if view is not None:
            client.camera.position, client.camera.look_at = view
        client.camera.up_direction = (0.0, 0.0, 1.0)

    def _viewpoint(self) -> tuple[np.ndarray, np.ndarray] | None:
        cfg = self.config
        if cfg.view_from is not None and cfg.look_at is not None:
            return np.asarray(cfg.view_from, float), np.asarray(cfg.look_at, float)
        T = self._first_camera
        if T is None:
            return None
        forward = T[:3, 2]  # optical z
        return T[:3, 3] - 1.5 * forward + np.array([0, 0, 1.0]), T[:3, 3] + 2.0 * forward

    def _show(self, names: tuple[str, ...], visible: bool) -> None:
        for name in names:
            self._visible[name] = visible
        # a copy: objects' labels come and go on the ROS thread while this runs on viser's
        for name, handle in list(self._handles.items()):
            handle.visible = self._layer_visible(name)

    def _layer_visible(self, name: str) -> bool:
        """Whether scene node `name` shows: its own layer name's checkbox, or that of the name
        it lies under."""
        while name and name not in self._visible:
            name = name.rsplit('/', 1)[0]
        return self._visible.get(name, True)

    def _draw(self, add, name: str, **kwargs) -> None:
        """Draw (or redraw) scene node `name` with viser's `add` method, shown or hidden as its
        layer's checkbox says."""
        self._handles[name] = add(name, visible=self._layer_visible(name), **kwargs)

    def _remove(self, name: str) -> None:
        """Take scene node `name` off the page (if drawn)."""
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.remove()

    # ------------------------------------------------------------------ messages
    def _on_map(self, msg: PointCloud2) -> None:
        self._fixed_frame = msg.header.frame_id
        points, colors = _decimate(*_cloud_arrays(msg), self.config.max_points)
        self._draw(self.server.scene.add_point_cloud, '/map', points=points, colors=colors,
                   point_size=self.config.point_size)

    def _on_points(self, msg: PointCloud2) -> None:
        now = time.monotonic()
        if now - self._last_cloud < 1.0 / self.config.max_rate_hz:
            return
        T = self.tf.lookup(self._map_frame(), msg.header.frame_id)
        if T is None:
            return
        self._last_cloud = now
        if self._first_camera is None:
            self._first_camera = T
            view = self._viewpoint()
            for client in self.server.get_clients().values():
                if view is not None and self.config.view_from is None:
                    client.camera.position, client.camera.look_at = view
        points, colors = _decimate(*_cloud_arrays(msg), self.config.max_points // 2)
        points = points @ T[:3, :3].T.astype(np.float32) + T[:3, 3].astype(np.float32)
        scene = self.server.scene
        self._draw(scene.add_point_cloud, '/current', points=points, colors=colors,
                   point_size=self.config.point_size)
        wxyz = Rotation.from_matrix(T[:3, :3]).as_quat(scalar_first=True)
        self._draw(scene.add_camera_frustum, '/camera', fov=np.radians(60.0), aspect=4 / 3,
                   scale=0.1, color=PATH_COLOR, wxyz=wxyz, position=T[:3, 3])

    def _on_path(self, msg: Path) -> None:
        T = self.tf.lookup(self._map_frame(), msg.header.frame_id)
        if T is None or len(msg.poses) < 2:
            return
        p = np.array([[q.pose.position.x, q.pose.position.y, q.pose.position.z]
                      for q in msg.poses])
        p = p @ T[:3, :3].T + T[:3, 3]
        self._draw(self.server.scene.add_line_segments, '/trajectory',
                   points=np.stack([p[:-1], p[1:]], axis=1).astype(np.float32),
                   colors=PATH_COLOR, thickness=3.0, thickness_units='screen')

    def _on_tracks(self, msg: TrackedPoints) -> None:
        self._fixed_frame = msg.header.frame_id
        t = conv.stamp_to_sec(msg.header.stamp)
        live = set()
        for i, p, s in zip(msg.ids, msg.positions, msg.status):
            if s != TrackedPoints.LOST:
                live.add(int(i))
                self._trails.setdefault(int(i), deque(maxlen=TRAIL_LENGTH)).append(
                    (t, p.x, p.y, p.z))
        for dead in set(self._trails) - live:
            del self._trails[dead]
        segments, seg_colors = [], []
        heads, head_colors = [], []
        for trail in self._trails.values():
            a = np.asarray(trail, np.float64)
            xyz = a[:, 1:].astype(np.float32)
            # speed over the whole trail, not the last step: per-frame jitter of a static
            # point averages out
            span = a[-1, 0] - a[0, 0]
            moving = len(a) >= 4 and span > 0 and np.linalg.norm(
                a[-1, 1:] - a[0, 1:]) / span > self.config.moving_speed
            heads.append(xyz[-1])
            head_colors.append(MOVING_COLOR if moving else TRAIL_COLOR)
            if len(xyz) > 1:
                segments.append(np.stack([xyz[:-1], xyz[1:]], axis=1))
                seg_colors += [MOVING_TRAIL_COLOR if moving else TRAIL_COLOR] * (len(xyz) - 1)
        scene = self.server.scene
        if heads:
            self._draw(scene.add_point_cloud, '/tracks/heads',
                       points=np.asarray(heads, np.float32),
                       colors=np.asarray(head_colors, np.uint8),
                       point_size=1.5 * self.config.point_size)
        if segments:
            colors = np.repeat(np.asarray(seg_colors, np.uint8)[:, None], 2, axis=1)
            self._draw(scene.add_line_segments, '/tracks/trails',
                       points=np.concatenate(segments), colors=colors, thickness=2.0,
                       thickness_units='screen')

    def _on_objects(self, msg: MovingObjects) -> None:
        T = self.tf.lookup(self._map_frame(), msg.header.frame_id)
        segments, labels = [], {}
        for obj in msg.objects if T is not None else []:  # no transform: none drawn
            B = conv.pose_to_matrix(obj.box_pose)
            size = np.array([obj.box_size.x, obj.box_size.y, obj.box_size.z])
            corners = box_corners(B[:3, 3], B[:3, :3], size) @ T[:3, :3].T + T[:3, 3]
            segments.append(corners[BOX_EDGES])
            centroid = T[:3, :3] @ [obj.centroid.x, obj.centroid.y, obj.centroid.z] + T[:3, 3]
            velocity = T[:3, :3] @ [obj.velocity.x, obj.velocity.y, obj.velocity.z]
            speed = float(np.linalg.norm(velocity))
            if np.isfinite(speed):
                segments.append(np.stack([centroid, centroid + velocity])[None])
            top = corners[:, 2].max()
            labels[int(obj.id)] = (f'{obj.id}  {speed:.2f}/s',
                                   np.array([centroid[0], centroid[1], top]))
        scene = self.server.scene
        if segments:
            self._draw(scene.add_line_segments, '/objects/boxes',
                       points=np.concatenate(segments).astype(np.float32), colors=OBJECT_COLOR,
                       thickness=3.0, thickness_units='screen')
        else:
            self._remove('/objects/boxes')
        for name in [n for n in self._handles if n.startswith('/objects/labels/')]:
            if int(name.rsplit('/', 1)[1]) not in labels:
                self._remove(name)
        for object_id, (text, position) in labels.items():
            self._draw(scene.add_label, f'/objects/labels/{object_id}', text=text,
                       position=position, anchor='bottom-center')

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        mine = [s for s in msg.status if s.name.startswith(f'{self.config.node}:')]
        if not mine:
            return
        s = mine[-1]
        rows = '\n'.join(f'| {kv.key} | {kv.value} |' for kv in s.values)
        level = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}.get(ord(s.level) if isinstance(
            s.level, bytes) else int(s.level), '?')
        self._status.content = (f'**{self.config.node}** {level}: {s.message}\n\n'
                                f'| key | value |\n|---|---|\n{rows}')

    def _map_frame(self) -> str:
        return self._fixed_frame or self.config.map_frame


def serve(config: ViewerConfig, host: str = '127.0.0.1', port: int = 8080,
          duration_s: float = 0.0) -> None:
    """Serve the view on http://host:port until Ctrl-C (or for `duration_s` seconds if > 0)."""
    import viser

    server = viser.ViserServer(host=host, port=port, verbose=False)
    context = rclpy.context.Context()
    rclpy.init(args=[], context=context)
    node = FourdViewer(server, config, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    print(f'fourd view: http://{host}:{server.get_port()} shows {config.node} (Ctrl-C stops)',
          flush=True)
    deadline = time.monotonic() + duration_s if duration_s > 0 else None
    try:
        while deadline is None or time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        server.stop()
