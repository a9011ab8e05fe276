"""The demo's in-process monitor node: records the output topics, keeps status and snapshot
data."""

from __future__ import annotations

from collections import Counter, deque
import time
from typing import Any, Callable

import numpy as np

from fourd_ros.ros.demo.messages import _stamp_ns, cdr_header_stamp_ns
from fourd_ros.ros.demo.query import QUERY_FRAMES_BACK
from fourd_ros.ros.demo.trajectory import pose_to_matrix

POINTS_RECORD_EVERY = 5
TRAIL_MAX = 400
TRAILS_MAX_TRACKS = 2000


def make_monitor(context: Any, recorder: Any) -> Any:
    """The in-process node: records output topics and keeps what the status/snapshot need."""
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message

    from diagnostic_msgs.msg import DiagnosticArray
    from fourd_ros_msgs.msg import MovingObjects, TrackedPoints
    from fourd_ros_msgs.srv import GetTrajectory, QueryMotion
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry, Path as PathMsg
    from sensor_msgs.msg import Image, PointCloud2
    from tf2_msgs.msg import TFMessage
    from visualization_msgs.msg import MarkerArray

    from fourd_ros.ros.conversions import fourd_status

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
        ('/fourd/objects', MovingObjects, 'fourd_ros_msgs/msg/MovingObjects', reliable(10)),
        ('/fourd/object_markers', MarkerArray, 'visualization_msgs/msg/MarkerArray',
         reliable(5)),
        ('/fourd/motion_mask', Image, 'sensor_msgs/msg/Image', reliable(5)),
        ('/diagnostics', DiagnosticArray, 'diagnostic_msgs/msg/DiagnosticArray', reliable(10)),
        ('/camera/ground_truth/pose', PoseStamped, 'geometry_msgs/msg/PoseStamped',
         reliable(10)),
    ]

    class DemoMonitor(Node):
        """Subscribes to every output topic with raw=True; see the fourd_ros.ros.demo docstring."""

        def __init__(self) -> None:
            super().__init__('fourd_demo', context=context)
            self.types = {t: name for t, _, name, _ in topics}
            self.received: Counter[str] = Counter()
            self.diag: dict[str, str] = {}
            self.first_output: float | None = None
            self.recent_points: deque[tuple[int, bytes]] = deque(maxlen=QUERY_FRAMES_BACK + 2)
            self.last_map: bytes | None = None
            self.last_path: bytes | None = None
            self.last_objects: bytes | None = None
            self.object_ids: set[int] = set()
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
                       '/fourd/objects': self._on_objects,
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

        def _on_objects(self, data: bytes) -> None:
            ids = [int(o.id) for o in self.deserialize('/fourd/objects', data).objects]
            if ids:  # the snapshot draws the latest objects seen
                self.last_objects = data
            self.object_ids.update(ids)

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
            found = fourd_status(self.deserialize('/diagnostics', data))
            if found is not None:
                self.diag = dict(found[0], _message=found[1])

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
