"""`fourd demo`: the whole ROS 2 pipeline on a synthetic camera, recorded and summarised.

    fourd demo [--duration 20] [--out out/demo] [--rate 10] [--seed 2] [--domain-id N]
    python -m fourd_ros.ros.demo ...          (the same, without the `fourd` CLI)

What it does:

1. Environment (for itself and its child processes): ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
   and FASTDDS_DEFAULT_PROFILES_FILE=<share or source>/config/fastdds.xml unless already set;
   ROS_DOMAIN_ID = --domain-id, else a random one (printed, so `ROS_DOMAIN_ID=N rviz2` can
   watch). Any ROS_DOMAIN_ID already in the environment is overridden, to stay private.
2. Starts `fourd_synthetic_camera` (a procedural RGB-D room with moving objects, ground-truth
   pose on /camera/ground_truth/pose) and `fourd_node` (config/fourd.yaml, depth backend) as
   child processes; their logs go to <out>/logs/.
3. Subscribes to the node's outputs and records them into a rosbag2 with MCAP storage as they
   arrive (serialized bytes from `raw=True` subscriptions, nothing kept in RAM): /fourd/points
   (only every 5th message: one 320x240 cloud is 1.5 MB), /fourd/map_points, /tf, /tf_static,
   /fourd/path, /fourd/odom, /fourd/tracks, /fourd/track_markers, /diagnostics and
   /camera/ground_truth/pose (all messages).
4. Shows a status line (frames, fps, latency, live tracks, cache) from /diagnostics and message
   counts: a live line on a terminal, one printed line every 2 s otherwise.
5. After ~30 processed frames, asks /fourd/query_motion where a 5x5 grid of pixels of the frame
   10 frames back is now (target = latest frame) and prints the answers; then calls
   /fourd/get_trajectory and compares it with the ground truth.
6. After --duration seconds of node output (or Ctrl-C) it stops the children (SIGINT, then
   SIGKILL after 10 s) and writes, in --out:
     demo.mcap      the recording (plain MCAP file: Foxglove, `ros2 bag play out/demo/demo.mcap`)
     metadata.yaml  rosbag2 metadata, so the folder itself is a rosbag2 bag too
     snapshot.png   top view of the map cloud, estimated + ground-truth camera paths (the
                    ground truth tied to the node's first pose), track trails and query
                    answers; camera image with the queried pixels
     summary.json   frames, fps, latency, per-topic message counts, query/trajectory results
     logs/          synthetic_camera.log, fourd_node.log
   Exit status 0; 1 if the node produced no output within 60 s (the node log's tail is shown)
   or a child process died; 130 if interrupted before any output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import fourd_ros

STARTUP_TIMEOUT_S = 60.0
QUERY_AFTER_FRAMES = 30
QUERY_FRAMES_BACK = 10
QUERY_GRID = 5
POINTS_RECORD_EVERY = 5
STATUS_PERIOD_S = 2.0
STOP_TIMEOUT_S = 10.0
TRAIL_MAX = 400
TRAILS_MAX_TRACKS = 2000
QUERY_STATUS_NAMES = {0: 'VALID', 1: 'OCCLUDED', 2: 'OUT_OF_VIEW', 3: 'OUT_OF_WINDOW',
                      4: 'INVALID'}


# ---------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `fourd demo` (shared by the `fourd` CLI and `python -m`)."""
    parser.add_argument('--duration', type=float, default=20.0, metavar='S',
                        help='seconds to record once the node produces output (20)')
    parser.add_argument('--out', default='out/demo', metavar='DIR',
                        help='output folder for demo.mcap, snapshot.png, summary.json, logs/ '
                             '(out/demo)')
    parser.add_argument('--rate', type=float, default=10.0, metavar='HZ',
                        help='synthetic camera frame rate, Hz (10)')
    parser.add_argument('--seed', type=int, default=2, help='synthetic scene seed (2)')
    parser.add_argument('--domain-id', type=int, default=None, metavar='N',
                        help='ROS_DOMAIN_ID to use (default: a random one in 1..100)')


# ---------------------------------------------------------------------------- environment
def config_dir() -> Path:
    """config/ of the source tree, else of the installed package share directory."""
    source = Path(fourd_ros.__file__).resolve().parents[1] / 'config'
    if (source / 'fourd.yaml').is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        share = Path(get_package_share_directory('fourd_ros')) / 'config'
        if (share / 'fourd.yaml').is_file():
            return share
    except Exception:  # noqa: BLE001 - no ament index here: report what was looked for
        pass
    prefix = Path(sys.prefix) / 'share' / 'fourd_ros' / 'config'
    if (prefix / 'fourd.yaml').is_file():
        return prefix
    raise FileNotFoundError(f'config/fourd.yaml not found (looked in {source} and {prefix})')


def map_voxel_size(params_file: Path, default: float = 0.05) -> float:
    """map_voxel_size from the node's parameter file (sets the snapshot's marker size)."""
    try:
        import yaml
        params = yaml.safe_load(params_file.read_text())['/**']['ros__parameters']
        return float(params.get('map_voxel_size', default))
    except Exception:  # noqa: BLE001 - only cosmetic
        return default


def setup_environment(domain_id: int | None, config: Path) -> int:
    """Set the ROS/DDS variables in os.environ (inherited by children); returns the domain."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    profile = config / 'fastdds.xml'
    if profile.is_file():
        os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(profile))
    if domain_id is None:
        domain_id = random.randint(1, 100)
    os.environ['ROS_DOMAIN_ID'] = str(domain_id)
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    os.environ.setdefault('RCUTILS_COLORIZED_OUTPUT', '0')
    return domain_id


@dataclass
class Child:
    """A started child process and its log file."""

    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors='replace').splitlines()
        except OSError:
            return '(no log)'
        return '\n'.join(text[-lines:]) or '(empty log)'


def start_child(name: str, argv: list[str], log_dir: Path) -> Child:
    """`python -m ...` in a new session (a terminal's Ctrl-C reaches only the demo)."""
    log = log_dir / f'{name}.log'
    with log.open('w') as fh:
        proc = subprocess.Popen([sys.executable, *argv], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(os.environ),
                                start_new_session=True)
    return Child(name, proc, log)


def stop_children(children: list[Child], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGINT each child, wait up to `timeout` s in total, then SIGKILL what is left."""
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()


# ---------------------------------------------------------------------------- message helpers
def cdr_header_stamp_ns(data: bytes) -> int | None:
    """Stamp (ns) of a message whose first field is std_msgs/Header, read from its CDR bytes."""
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack_from('<iI' if data[1] == 1 else '>iI', data, 4)
    return sec * 1_000_000_000 + nanosec


def cloud_fields(msg: Any, names: tuple[str, ...]) -> np.ndarray:
    """Structured array (height x width) of the FLOAT32 fields `names` of a PointCloud2."""
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in names if n not in fields or fields[n].datatype != 7]
    if missing:
        raise ValueError(f'cloud lacks float32 fields {missing}')
    dtype = np.dtype({'names': list(names), 'formats': ['>f4' if msg.is_bigendian else '<f4'] *
                      len(names), 'offsets': [fields[n].offset for n in names],
                      'itemsize': msg.point_step})
    n = msg.height * msg.width
    raw = np.frombuffer(msg.data, np.uint8)
    if msg.row_step == msg.width * msg.point_step:
        return np.frombuffer(raw[:n * msg.point_step].tobytes(), dtype).reshape(
            msg.height, msg.width)
    rows = [np.frombuffer(raw[r * msg.row_step:r * msg.row_step + msg.width * msg.point_step]
                          .tobytes(), dtype) for r in range(msg.height)]
    return np.stack(rows)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _fmt_vec(v: Any) -> str:
    x, y, z = v.x, v.y, v.z
    if not all(math.isfinite(c) for c in (x, y, z)):
        return '-'
    return f'({x:+.2f}, {y:+.2f}, {z:+.2f})'


# ---------------------------------------------------------------------------- the demo node
def make_monitor(context: Any, recorder: Any) -> Any:
    """The in-process node: records output topics and keeps what the status/snapshot need."""
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message

    from diagnostic_msgs.msg import DiagnosticArray
    from fourd_ros_msgs.msg import TrackedPoints
    from fourd_ros_msgs.srv import GetTrajectory, QueryMotion
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry, Path as PathMsg
    from sensor_msgs.msg import PointCloud2
    from tf2_msgs.msg import TFMessage
    from visualization_msgs.msg import MarkerArray

    def reliable(depth: int) -> QoSProfile:
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    # (topic, class, bag type name, QoS matching the publisher): all publishers are reliable
    topics = [
        ('/fourd/points', PointCloud2, 'sensor_msgs/msg/PointCloud2', reliable(5)),
        ('/fourd/map_points', PointCloud2, 'sensor_msgs/msg/PointCloud2', latched),
        ('/tf', TFMessage, 'tf2_msgs/msg/TFMessage', reliable(100)),
        ('/tf_static', TFMessage, 'tf2_msgs/msg/TFMessage', latched),
        ('/fourd/path', PathMsg, 'nav_msgs/msg/Path', reliable(5)),
        ('/fourd/odom', Odometry, 'nav_msgs/msg/Odometry', reliable(10)),
        ('/fourd/tracks', TrackedPoints, 'fourd_ros_msgs/msg/TrackedPoints', reliable(10)),
        ('/fourd/track_markers', MarkerArray, 'visualization_msgs/msg/MarkerArray', reliable(5)),
        ('/diagnostics', DiagnosticArray, 'diagnostic_msgs/msg/DiagnosticArray', reliable(10)),
        ('/camera/ground_truth/pose', PoseStamped, 'geometry_msgs/msg/PoseStamped',
         reliable(10)),
    ]

    class DemoMonitor(Node):
        """Subscribes to every output topic with raw=True; see the module docstring."""

        def __init__(self) -> None:
            super().__init__('fourd_demo', context=context)
            self.types = {t: name for t, _, name, _ in topics}
            self.received: Counter[str] = Counter()
            self.diag: dict[str, str] = {}
            self.first_output: float | None = None
            self.recent_points: deque[tuple[int, bytes]] = deque(maxlen=QUERY_FRAMES_BACK + 2)
            self.last_map: bytes | None = None
            self.last_path: bytes | None = None
            self.live_tracks = 0
            self.track_ids: set[int] = set()
            self.trails: dict[int, deque] = {}
            self._trail_seen: dict[int, int] = {}
            self.gt: dict[int, np.ndarray] = {}  # stamp ns -> 4x4 optical frame pose
            self.frame_times: deque[float] = deque(maxlen=200)
            self._deser = deserialize_message
            self._classes = {t: cls for t, cls, _, _ in topics}
            for topic, cls, name, qos in topics:
                recorder.add_topic(topic, name, qos)
                self.create_subscription(cls, topic, self._callback(topic), qos, raw=True)
            self.query_client = self.create_client(QueryMotion, '/fourd/query_motion')
            self.trajectory_client = self.create_client(GetTrajectory, '/fourd/get_trajectory')
            self.QueryMotion, self.GetTrajectory = QueryMotion, GetTrajectory

        def _callback(self, topic: str) -> Callable[[bytes], None]:
            handler = {'/fourd/points': self._on_points, '/fourd/map_points': self._on_map,
                       '/fourd/path': self._on_path, '/fourd/tracks': self._on_tracks,
                       '/diagnostics': self._on_diagnostics,
                       '/camera/ground_truth/pose': self._on_gt}.get(topic)

            def callback(data: bytes) -> None:
                n = self.received[topic]
                self.received[topic] += 1
                if topic != '/fourd/points' or n % POINTS_RECORD_EVERY == 0:
                    recorder.write(topic, time.time_ns(), data)
                if handler is not None:
                    handler(data)
            return callback

        def deserialize(self, topic: str, data: bytes) -> Any:
            return self._deser(data, self._classes[topic])

        # outputs of the node
        def _mark_output(self) -> None:
            if self.first_output is None:
                self.first_output = time.monotonic()

        def _on_points(self, data: bytes) -> None:
            self._mark_output()
            stamp = cdr_header_stamp_ns(data)
            if stamp is not None:
                self.recent_points.append((stamp, data))

        def _on_map(self, data: bytes) -> None:
            self.last_map = data

        def _on_path(self, data: bytes) -> None:
            self.last_path = data

        def _on_tracks(self, data: bytes) -> None:
            self._mark_output()
            self.frame_times.append(time.monotonic())
            msg = self.deserialize('/fourd/tracks', data)
            frame = self.received['/fourd/tracks']
            live = 0
            for track_id, p, status in zip(msg.ids, msg.positions, msg.status):
                track_id = int(track_id)
                self.track_ids.add(track_id)
                if status == TrackedPoints.LOST:
                    continue
                live += 1
                trail = self.trails.get(track_id)
                if trail is None:
                    trail = self.trails[track_id] = deque(maxlen=TRAIL_MAX)
                trail.append((p.x, p.y, p.z))
                self._trail_seen[track_id] = frame
            self.live_tracks = live
            if len(self.trails) > TRAILS_MAX_TRACKS:  # forget the longest-unseen tracks
                for old in sorted(self.trails, key=self._trail_seen.get)[
                        :len(self.trails) - TRAILS_MAX_TRACKS]:
                    del self.trails[old], self._trail_seen[old]

        def _on_diagnostics(self, data: bytes) -> None:
            msg = self.deserialize('/diagnostics', data)
            for status in msg.status:
                if status.name.endswith(': fourd'):
                    self.diag = {kv.key: kv.value for kv in status.values}
                    self.diag['_message'] = status.message

        def _on_gt(self, data: bytes) -> None:
            msg = self.deserialize('/camera/ground_truth/pose', data)
            if len(self.gt) < 100_000:  # 10 Hz for 2.7 h; 128 bytes each
                self.gt[_stamp_ns(msg.header.stamp)] = pose_to_matrix(msg.pose)

        # derived numbers
        @property
        def frames(self) -> int:
            """Frames the node processed (its own count if known, else /fourd/tracks count)."""
            try:
                return max(int(self.diag['frames_processed']), self.received['/fourd/tracks'])
            except (KeyError, ValueError):
                return self.received['/fourd/tracks']

        def output_fps(self, window: float = 5.0) -> float:
            now = time.monotonic()
            recent = [t for t in self.frame_times if now - t <= window]
            if len(recent) < 2:
                return 0.0
            return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    return DemoMonitor()


# ---------------------------------------------------------------------------- console output
class Display:
    """Status line: rich Live on a terminal, a printed line every STATUS_PERIOD_S otherwise."""

    def __init__(self) -> None:
        from rich.console import Console
        self.console = Console(highlight=False)
        self.tty = self.console.is_terminal
        if not self.tty:
            self.console = Console(highlight=False, width=120)
        self._live = None
        self._last = 0.0

    def __enter__(self) -> 'Display':
        if self.tty:
            from rich.live import Live
            self._live = Live('', console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def status(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if self._live is not None:
            if force or now - self._last >= 0.25:
                self._last = now
                self._live.update(line, refresh=True)
        elif force or now - self._last >= STATUS_PERIOD_S:
            self._last = now
            self.console.print(line, soft_wrap=True)

    def print(self, *objects: Any) -> None:
        self.console.print(*objects, soft_wrap=not self.tty)


def status_line(mon: Any, elapsed: float, recorder: Any) -> str:
    d = mon.diag
    if mon.first_output is None:
        return (f'[{elapsed:5.1f} s] waiting for fourd_node output... '
                f"({d.get('_message', 'node not seen yet')})")
    return (f'[{elapsed:5.1f} s] frames {mon.frames:4d} | {mon.output_fps():4.1f} fps '
            f"(engine {d.get('fps', '?')}) | latency p50 {d.get('latency_ms_p50', '?')} ms | "
            f"tracks {mon.live_tracks:3d} | cache {d.get('cache_mb', '?')} MB | "
            f"dropped {d.get('dropped_frames', '?')} | bag {sum(recorder.counts.values())} msgs")


# ---------------------------------------------------------------------------- services
def make_query(mon: Any) -> tuple[Any, dict[str, Any]] | None:
    """QUERY_PIXEL request: 5x5 grid of a frame ~10 back, target = latest (zero stamp)."""
    from geometry_msgs.msg import Point
    if not mon.recent_points:
        return None
    pts = list(mon.recent_points)
    stamp_ns, data = pts[max(0, len(pts) - 1 - QUERY_FRAMES_BACK)]
    msg = mon.deserialize('/fourd/points', data)
    w, h = int(msg.width), int(msg.height)
    us = np.round(np.linspace(0.1, 0.9, QUERY_GRID) * (w - 1))
    vs = np.round(np.linspace(0.1, 0.9, QUERY_GRID) * (h - 1))
    pixels = np.array([(u, v) for v in vs for u in us])
    req = mon.QueryMotion.Request()
    req.source_stamp = msg.header.stamp
    req.query_type = mon.QueryMotion.Request.QUERY_PIXEL
    req.points = [Point(x=float(u), y=float(v), z=0.0) for u, v in pixels]
    req.target_frame = ''
    ctx = {'source_stamp_ns': stamp_ns, 'frames_back': len(pts) - 1 - max(
        0, len(pts) - 1 - QUERY_FRAMES_BACK), 'pixels': pixels, 'source_cloud': msg}
    return req, ctx


def query_table(resp: Any, pixels: np.ndarray) -> Any:
    from rich.table import Table
    table = Table(title=f'query_motion (frame {resp.header.frame_id or "map"}, metres)',
                  title_justify='left')
    for col in ('pixel (u, v)', 'position now', 'displacement', '|d| m', 'conf', 'status'):
        table.add_column(col, justify='right' if col in ('|d| m', 'conf') else 'left')
    for (u, v), p, d, c, s in zip(pixels, resp.positions, resp.displacements, resp.confidence,
                                  resp.status):
        norm = math.sqrt(d.x ** 2 + d.y ** 2 + d.z ** 2)
        table.add_row(f'({u:.0f}, {v:.0f})', _fmt_vec(p), _fmt_vec(d),
                      f'{norm:.3f}' if math.isfinite(norm) else '-', f'{c:.2f}',
                      QUERY_STATUS_NAMES.get(int(s), str(s)))
    return table


def summarize_query(resp: Any, ctx: dict[str, Any], latency_ms: float) -> dict[str, Any]:
    status = [int(s) for s in resp.status]
    disp = np.array([[d.x, d.y, d.z] for d in resp.displacements], float).reshape(-1, 3)
    norms = np.linalg.norm(disp, axis=1)
    valid = np.isfinite(norms)
    return {
        'success': bool(resp.success), 'message': resp.message,
        'source_stamp_ns': ctx['source_stamp_ns'], 'frames_back': ctx['frames_back'],
        'target_stamp_ns': _stamp_ns(resp.header.stamp), 'frame_id': resp.header.frame_id,
        'points': len(status), 'round_trip_ms': round(latency_ms, 2),
        'status_counts': {QUERY_STATUS_NAMES.get(k, str(k)): v
                          for k, v in sorted(Counter(status).items())},
        'displacement_m_median': float(np.median(norms[valid])) if valid.any() else None,
        'displacement_m_max': float(np.max(norms[valid])) if valid.any() else None,
    }


def pose_to_matrix(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4."""
    from scipy.spatial.transform import Rotation
    q, p = pose.orientation, pose.position
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    T[:3, 3] = [p.x, p.y, p.z]
    return T


def path_poses(path_msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(stamps ns, M x 4 x 4 poses) of a nav_msgs/Path."""
    stamps = np.array([_stamp_ns(p.header.stamp) for p in path_msg.poses], np.int64)
    poses = np.array([pose_to_matrix(p.pose) for p in path_msg.poses], float).reshape(-1, 4, 4)
    return stamps, poses


def align_ground_truth(stamps: np.ndarray, poses: np.ndarray, gt: dict[int, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """Ground-truth base poses expressed in the node's odom frame: (stamps ns, K x 4 x 4).

    The synthetic camera's ground truth is the optical frame's pose in a world whose origin is
    the first frame of its clip; the node's odom frame starts at the first frame it processed.
    Both are tied together at the earliest estimated pose that has ground truth (the node's
    first frame when it was received), so the two paths start at the same pose and their
    difference is the odometry's drift. Ground truth outside the estimated time span is left out.
    """
    from fourd_ros.ros.conversions import T_LINK_FROM_OPTICAL
    link_from_optical = np.linalg.inv(T_LINK_FROM_OPTICAL)
    anchor = next((k for k, s in enumerate(stamps) if int(s) in gt), None)
    if anchor is None:
        return None
    s0 = int(stamps[anchor])
    A = poses[anchor] @ np.linalg.inv(gt[s0] @ link_from_optical)
    end = int(stamps.max())
    keys = np.array(sorted(k for k in gt if s0 <= k <= end), np.int64)
    aligned = np.array([A @ gt[int(k)] @ link_from_optical for k in keys]).reshape(-1, 4, 4)
    return keys, aligned


def trajectory_error(stamps: np.ndarray, poses: np.ndarray,
                     gt: dict[int, np.ndarray]) -> dict[str, Any] | None:
    """Camera position error against aligned ground truth with the same stamps."""
    aligned = align_ground_truth(stamps, poses, gt)
    if aligned is None:
        return None
    by_stamp = dict(zip(aligned[0].tolist(), aligned[1]))
    pairs = [(P[:3, 3], by_stamp[int(s)][:3, 3]) for s, P in zip(stamps, poses)
             if int(s) in by_stamp]
    if not pairs:
        return None
    est, ref = np.array([p for p, _ in pairs]), np.array([g for _, g in pairs])
    err = np.linalg.norm(est - ref, axis=1)
    return {'matched_poses': len(pairs), 'position_rmse_m': float(np.sqrt(np.mean(err ** 2))),
            'position_error_final_m': float(err[-1]),
            'path_length_m': float(np.linalg.norm(np.diff(est, axis=0), axis=1).sum()),
            'gt_path_length_m': float(np.linalg.norm(np.diff(ref, axis=0), axis=1).sum())}


# ---------------------------------------------------------------------------- the run
class StartupError(RuntimeError):
    """The node produced no output in time, or a child process died."""


class Demo:
    """One `fourd demo` run (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.display = Display()
        self.children: list[Child] = []
        self.query: dict[str, Any] | None = None
        self.query_resp: Any = None
        self.query_ctx: dict[str, Any] | None = None
        self.trajectory: dict[str, Any] | None = None
        self.interrupted = False
        self.recorder: Any = None
        self.t_end: float | None = None  # when recording stopped (monotonic)
        self._pending: list[tuple[str, Any, float, Any]] = []

    # ---------------------------------------------------------------- main loop pieces
    def _check_children(self) -> None:
        for child in self.children:
            rc = child.proc.poll()
            if rc is not None:
                raise StartupError(f'{child.name} exited with status {rc}; last lines of '
                                   f'{child.log}:\n{child.tail()}')

    def _maybe_query(self, mon: Any) -> None:
        if self.query is not None or any(k == 'query' for k, *_ in self._pending):
            return
        if mon.received['/fourd/points'] < QUERY_AFTER_FRAMES:
            return
        self._send_query(mon)

    def _send_query(self, mon: Any) -> bool:
        if not mon.query_client.service_is_ready():
            return False
        made = make_query(mon)
        if made is None:
            return False
        req, ctx = made
        self.query_ctx = ctx
        self._pending.append(('query', mon.query_client.call_async(req), time.monotonic(),
                              ctx))
        return True

    def _send_trajectory(self, mon: Any) -> None:
        if mon.trajectory_client.service_is_ready():
            req = mon.GetTrajectory.Request()  # zero start/end: the whole trajectory
            self._pending.append(('trajectory', mon.trajectory_client.call_async(req),
                                  time.monotonic(), None))

    def _poll_futures(self, mon: Any) -> None:
        for item in list(self._pending):
            kind, future, t0, ctx = item
            if not future.done():
                continue
            self._pending.remove(item)
            ms = (time.monotonic() - t0) * 1e3
            resp = future.result()
            if kind == 'query':
                self._on_query(mon, resp, ctx, ms)
            else:
                self._on_trajectory(mon, resp, ms)

    def _on_query(self, mon: Any, resp: Any, ctx: dict[str, Any], ms: float) -> None:
        self.query = summarize_query(resp, ctx, ms)
        if not resp.success:
            self.display.print(f'query_motion failed: {resp.message}')
        else:
            self.query_resp = resp
            back = ctx['frames_back']
            self.display.print(
                f'\n/fourd/query_motion: {len(resp.status)} pixels of the frame {back} frames '
                f'back -> latest frame ({ms:.1f} ms round trip): {resp.message}')
            self.display.print(query_table(resp, ctx['pixels']))
        self._send_trajectory(mon)

    def _on_trajectory(self, mon: Any, resp: Any, ms: float) -> None:
        if not resp.success:
            self.trajectory = {'success': False, 'message': resp.message}
            self.display.print(f'get_trajectory failed: {resp.message}')
            return
        stamps, poses = path_poses(resp.path)
        xyz = poses[:, :3, 3]
        length = float(np.linalg.norm(np.diff(xyz, axis=0), axis=1).sum()) if len(xyz) > 1 \
            else 0.0
        self.trajectory = {'success': True, 'poses': len(xyz), 'frame_id':
                           resp.path.header.frame_id, 'path_length_m': length,
                           'round_trip_ms': round(ms, 2),
                           'vs_ground_truth': trajectory_error(stamps, poses, mon.gt)}
        err = self.trajectory['vs_ground_truth']
        gt = (f', position RMSE vs ground truth {err["position_rmse_m"] * 100:.1f} cm over '
              f'{err["matched_poses"]} poses' if err else '')
        self.display.print(f'/fourd/get_trajectory: {len(xyz)} poses in '
                           f"'{resp.path.header.frame_id}', {length:.2f} m travelled{gt} "
                           f'({ms:.1f} ms)\n')

    def _finish_services(self, mon: Any, executor: Any) -> None:
        """Before stopping the node: make sure the query ran and wait for pending answers."""
        if self.query is None and not self._pending and mon.received['/fourd/points'] >= 2:
            self._send_query(mon)
        deadline = time.monotonic() + 5.0
        while self._pending and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            self._poll_futures(mon)

    # ---------------------------------------------------------------- run
    def run(self) -> int:
        args = self.args
        if not args.duration > 0:
            raise ValueError('--duration must be > 0')
        if not args.rate > 0:
            raise ValueError('--rate must be > 0')
        if args.domain_id is not None and not 0 <= args.domain_id <= 232:
            raise ValueError('--domain-id must be in 0..232')
        config = config_dir()
        domain = setup_environment(args.domain_id, config)
        log_dir = self.out / 'logs'
        log_dir.mkdir(parents=True, exist_ok=True)

        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        from fourd_ros.ros.bag_recorder import BagRecorder

        print(f'fourd demo: ROS_DOMAIN_ID={domain} (localhost only), output in {self.out}/',
              flush=True)
        recorder = self.recorder = BagRecorder(self.out / 'demo.mcap')
        context = Context()
        rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
        # Ctrl-C and SIGTERM end the recording the same way (also when started in the
        # background, where SIGINT would otherwise be ignored)
        old_handlers = {sig: signal.signal(sig, _raise_keyboard_interrupt)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
        mon = executor = None
        t_start = time.monotonic()
        failure: str | None = None
        try:
            mon = make_monitor(context, recorder)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(mon)
            self.children = [
                start_child('synthetic_camera', [
                    '-m', 'fourd_ros.ros.synthetic_camera', '--ros-args',
                    '-p', f'rate:={float(args.rate)}', '-p', f'seed:={int(args.seed)}'], log_dir),
                start_child('fourd_node', [
                    '-m', 'fourd_ros.ros.node', '--ros-args',
                    '--params-file', str(config / 'fourd.yaml'),
                    '-p', 'depth_topic:=/camera/depth', '-p', 'image_topic:=/camera/image_raw',
                    '-p', 'camera_info_topic:=/camera/camera_info'], log_dir)]
            print(f'started synthetic camera (pid {self.children[0].proc.pid}) and fourd_node '
                  f'(pid {self.children[1].proc.pid}); logs in {log_dir}/', flush=True)
            with self.display:
                try:
                    self._loop(mon, executor, t_start)
                    self._finish_services(mon, executor)
                except KeyboardInterrupt:
                    self.interrupted = True
                self.t_end = time.monotonic()
                self.display.status(status_line(mon, time.monotonic() - t_start, recorder),
                                    force=True)
        except StartupError as exc:
            failure = str(exc)
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            for sig in old_handlers:  # no second interrupt while the children stop
                signal.signal(sig, signal.SIG_IGN)
            try:
                stop_children(self.children)
                bag = recorder.close()
            finally:
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
        try:
            if failure is not None:
                print(f'fourd demo: error: {failure}', file=sys.stderr)
                return 1
            if mon is None or mon.first_output is None:
                print('fourd demo: interrupted before fourd_node produced output',
                      file=sys.stderr)
                return 130
            return self._write_outputs(mon, recorder, bag, domain, t_start)
        finally:
            if mon is not None:
                mon.destroy_node()
            if executor is not None:
                executor.shutdown()
            context.try_shutdown()

    def _loop(self, mon: Any, executor: Any, t_start: float) -> None:
        while True:
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            self._check_children()
            if mon.first_output is None:
                if now - t_start > STARTUP_TIMEOUT_S:
                    node = self.children[1]
                    raise StartupError(
                        f'fourd_node produced no output within {STARTUP_TIMEOUT_S:.0f} s '
                        f'(camera frames seen by the node: '
                        f"{mon.diag.get('frames_received', 'unknown')}). Last lines of "
                        f'{node.log}:\n{node.tail()}')
            elif now - mon.first_output >= self.args.duration:
                return
            self._maybe_query(mon)
            self._poll_futures(mon)
            self.display.status(status_line(mon, now - t_start, self.recorder))

    # ---------------------------------------------------------------- outputs
    def _write_outputs(self, mon: Any, recorder: Any, bag: Path, domain: int,
                       t_start: float) -> int:
        from fourd_ros.core.eval.snapshot import render_snapshot
        end = self.t_end or time.monotonic()
        recorded_s = max(0.0, end - mon.first_output) if mon.first_output else 0.0
        data, traj = self._snapshot_data(mon, recorded_s)
        png = render_snapshot(data, self.out / 'snapshot.png')
        d = mon.diag

        def num(key: str) -> float | None:
            try:
                return float(d[key])
            except (KeyError, ValueError):
                return None

        summary = {
            'duration_s': round(recorded_s, 2), 'wall_time_s': round(end - t_start, 2),
            'interrupted': self.interrupted, 'ros_domain_id': domain,
            'camera': {'rate_hz': self.args.rate, 'seed': self.args.seed},
            'frames_processed': mon.frames, 'frames_received_by_node': num('frames_received'),
            'dropped_frames': num('dropped_frames'), 'rejected_frames': num('rejected_frames'),
            'fps': round(mon.received['/fourd/tracks'] / recorded_s, 2) if recorded_s else 0.0,
            'engine_fps': num('fps'), 'latency_ms_p50': num('latency_ms_p50'),
            'latency_ms_p95': num('latency_ms_p95'), 'cache_mb': num('cache_mb'),
            'backend': d.get('backend'), 'tracks_live': mon.live_tracks,
            'tracks_seen': len(mon.track_ids),
            'topics': {t: {'type': mon.types[t], 'received': mon.received[t],
                           'recorded': recorder.counts[t]} for t in mon.types},
            'points_recorded_every_n': POINTS_RECORD_EVERY,
            'query_motion': self.query, 'get_trajectory': self.trajectory,
            'final_path_vs_ground_truth': traj,
            'files': {'bag': str(bag), 'rosbag2_metadata': str(bag.parent / 'metadata.yaml'),
                      'snapshot': str(png), 'logs': str(self.out / 'logs')},
        }
        summary_path = self.out / 'summary.json'
        summary_path.write_text(json.dumps(summary, indent=2) + '\n')
        rmse = f", camera position RMSE {traj['position_rmse_m'] * 100:.1f} cm" if traj else ''
        print(f'\nfourd demo: {mon.frames} frames in {recorded_s:.1f} s '
              f"({summary['fps']} fps){rmse}; {sum(recorder.counts.values())} messages "
              f'recorded ({len([t for t in recorder.counts if recorder.counts[t]])} topics).')
        size_mb = bag.stat().st_size / 1e6 if bag.exists() else 0.0
        print(f'  bag       {bag}  ({size_mb:.1f} MB; /fourd/points: every '
              f'{POINTS_RECORD_EVERY}th message)\n'
              f'  snapshot  {png}\n  summary   {summary_path}\n  logs      {self.out / "logs"}/'
              f'\nreplay: ros2 bag play {bag}   (or open it in Foxglove Studio)')
        return 0

    def _snapshot_data(self, mon: Any, recorded: float) -> tuple[Any, dict[str, Any] | None]:
        from fourd_ros.core.eval.snapshot import SnapshotData, unpack_rgb
        data = SnapshotData(map_voxel=map_voxel_size(config_dir() / 'fourd.yaml'))
        if mon.last_map is not None:
            cloud = cloud_fields(mon.deserialize('/fourd/map_points', mon.last_map),
                                 ('x', 'y', 'z', 'rgb')).reshape(-1)
            data.map_xyz = np.stack([cloud['x'], cloud['y'], cloud['z']], axis=1)
            data.map_rgb = unpack_rgb(cloud['rgb'])
        traj = None
        if mon.last_path is not None:
            stamps, poses = path_poses(mon.deserialize('/fourd/path', mon.last_path))
            data.path_xyz = poses[:, :3, 3]
            traj = trajectory_error(stamps, poses, mon.gt)
            aligned = align_ground_truth(stamps, poses, mon.gt)
            if aligned is not None:
                data.gt_path_xyz = aligned[1][:, :3, 3]
        data.trails = {k: np.array(v, float) for k, v in mon.trails.items()}
        source = self.query_ctx['source_cloud'] if self.query_ctx else (
            mon.deserialize('/fourd/points', mon.recent_points[-1][1])
            if mon.recent_points else None)
        if source is not None:
            rgb = cloud_fields(source, ('rgb',))['rgb']
            data.image = unpack_rgb(rgb)
            if self.query_ctx and self.query_resp is not None:
                back = self.query_ctx['frames_back']
                data.image_title = (f'camera image {back} frames before the latest, with the '
                                    f'query_motion pixels')
                resp = self.query_resp
                data.query_pixels = self.query_ctx['pixels']
                data.query_status = np.array(resp.status, int)
                pos = np.array([[p.x, p.y, p.z] for p in resp.positions], float)
                disp = np.array([[v.x, v.y, v.z] for v in resp.displacements], float)
                data.query_to, data.query_from = pos, pos - disp
            else:
                data.image_title = 'latest camera image'
        d = mon.diag
        data.title = (f'fourd demo: synthetic RGB-D scene (seed {self.args.seed}), '
                      f"{mon.frames} frames, backend {d.get('backend', '?')}")
        notes = [f'{mon.frames} frames processed in {recorded:.0f} s '
                 f"({mon.received['/fourd/tracks'] / max(recorded, 1e-3):.1f} fps; engine "
                 f"{d.get('fps', '?')} fps), latency p50 {d.get('latency_ms_p50', '?')} ms, "
                 f"cache {d.get('cache_mb', '?')} MB, {len(mon.track_ids)} tracks seen, "
                 f"{d.get('dropped_frames', '?')} camera frames dropped by the node"]
        if traj:
            notes.append(f"camera position RMSE vs ground truth {traj['position_rmse_m']*100:.1f}"
                         f" cm over {traj['matched_poses']} poses (travelled: ground truth "
                         f"{traj['gt_path_length_m']:.2f} m, estimate "
                         f"{traj['path_length_m']:.2f} m)")
        if self.query:
            counts = ', '.join(f'{k} {v}' for k, v in self.query['status_counts'].items())
            notes.append(f'query_motion ({self.query["frames_back"]} frames back -> latest): '
                         f'{counts}')
        data.notes = notes
        return data, traj


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    """Run `fourd demo` with parsed arguments; returns the exit status."""
    try:
        return Demo(args).run()
    except (ValueError, FileNotFoundError) as exc:
        print(f'fourd demo: error: {exc}', file=sys.stderr)
        return 2


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='fourd demo', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[2:]))
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(_cli())
