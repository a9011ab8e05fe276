"""Record serialized ROS 2 messages into a rosbag2 with MCAP storage (pure Python, `rosbags`).

Messages arrive as CDR bytes from `raw=True` subscriptions and are written as they come, so
nothing accumulates in memory. Message definitions come from the `rosbags` Kilted type store;
types it lacks (fourd_ros_msgs, and tf2_msgs if absent) are registered from their `.msg` files,
found in the install prefix (`share/<pkg>/msg`) or the source tree. The type hashes (RIHS01)
written into the bag are the ones rosidl computes, so `ros2 bag play` and Foxglove accept it.

Layout at `close()`: the finished MCAP file is moved to `final_path` (e.g. `out/demo.mcap`) and
its rosbag2 `metadata.yaml` next to it, so both `ros2 bag info out/demo.mcap` (one storage file)
and `ros2 bag info out` (the folder as a rosbag2 directory) work. While recording, the bag lives
in `<final_path parent>/.recording/`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from rclpy.qos import QoSProfile
from rosbags.interfaces import (Connection, Qos, QosDurability, QosHistory, QosLiveliness,
                                QosReliability, QosTime)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

import fourd_ros

#: message types not (necessarily) in the rosbags Kilted store: type name -> (package, file)
CUSTOM_TYPES = {
    'fourd_ros_msgs/msg/TrackedPoints': ('fourd_ros_msgs', 'TrackedPoints.msg'),
    # before MovingObjects, which holds it
    'fourd_ros_msgs/msg/MovingObject': ('fourd_ros_msgs', 'MovingObject.msg'),
    'fourd_ros_msgs/msg/MovingObjects': ('fourd_ros_msgs', 'MovingObjects.msg'),
    'tf2_msgs/msg/TFMessage': ('tf2_msgs', 'TFMessage.msg'),
}
_SOURCE_ROOT = Path(fourd_ros.__file__).resolve().parents[1]
_SOURCE_MSG_DIRS = {'fourd_ros_msgs': _SOURCE_ROOT / 'msg' / 'msg',
                    'tf2_msgs': _SOURCE_ROOT / 'third_party' / 'tf2_msgs' / 'msg'}


def find_msg_file(package: str, filename: str) -> Path:
    """Locate `<package>/msg/<filename>` in the install prefixes or the source tree."""
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    candidates = [Path(p) / 'share' / package / 'msg' / filename for p in prefixes]
    if package in _SOURCE_MSG_DIRS:
        candidates.append(_SOURCE_MSG_DIRS[package] / filename)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f'{package}/msg/{filename} not found in: '
                            + ', '.join(str(c) for c in candidates))


def make_typestore() -> Typestore:
    """The rosbags ROS 2 Kilted type store plus this project's custom message types."""
    store = get_typestore(Stores.ROS2_KILTED)
    for typename, (package, filename) in CUSTOM_TYPES.items():
        if typename in store.fielddefs:
            continue
        text = find_msg_file(package, filename).read_text()
        store.register(get_types_from_msg(text, typename))
    return store


def to_rosbags_qos(qos: QoSProfile) -> Qos:
    """rclpy QoS profile -> the `rosbags` description stored as offered_qos_profiles."""
    zero = QosTime(0, 0)
    return Qos(history=QosHistory[qos.history.name],
               depth=int(qos.depth),
               reliability=QosReliability[qos.reliability.name],
               durability=QosDurability[qos.durability.name],
               deadline=zero, lifespan=zero,
               liveliness=QosLiveliness[qos.liveliness.name],
               liveliness_lease_duration=zero,
               avoid_ros_namespace_conventions=False)


class BagRecorder:
    """Writes CDR messages to a rosbag2 (MCAP storage) as they arrive.

    Args:
        final_path: where the finished MCAP file goes, e.g. `out/demo.mcap` (its folder gets the
            rosbag2 `metadata.yaml`). An existing file there is replaced.
    """

    def __init__(self, final_path: str | Path) -> None:
        self.final_path = Path(final_path)
        if self.final_path.suffix != '.mcap':
            raise ValueError(f'bag path must end in .mcap: {self.final_path}')
        self.typestore = make_typestore()
        self._staging = self.final_path.parent / '.recording'
        if self._staging.exists():
            shutil.rmtree(self._staging)  # a previous run that was killed
        self._staging.mkdir(parents=True)
        # the rosbags MCAP writer names the file after its folder: <dir>/<stem>/<stem>.mcap
        self._bag_dir = self._staging / self.final_path.stem
        self._writer = Writer(self._bag_dir, version=Writer.VERSION_LATEST,
                              storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Connection] = {}
        self.counts: Counter[str] = Counter()
        self.closed = False

    def add_topic(self, topic: str, msgtype: str, qos: QoSProfile | None = None) -> None:
        """Declare a topic (`msgtype` like 'sensor_msgs/msg/PointCloud2') before writing to it."""
        if msgtype not in self.typestore.fielddefs:
            raise ValueError(f'unknown message type {msgtype} (add it to CUSTOM_TYPES)')
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore,
            offered_qos_profiles=[to_rosbags_qos(qos)] if qos is not None else ())

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        """Append one serialized (CDR) message received at `stamp_ns` (nanoseconds)."""
        if self.closed:
            return
        self._writer.write(self._connections[topic], stamp_ns, data)
        self.counts[topic] += 1

    def close(self) -> Path:
        """Finish the bag; move it to `final_path` (metadata.yaml beside it); returns the path."""
        if self.closed:
            return self.final_path
        self.closed = True
        self._writer.close()
        mcap = self._bag_dir / self.final_path.name
        if self.final_path.exists():
            self.final_path.unlink()
        shutil.move(str(mcap), self.final_path)
        shutil.move(str(self._bag_dir / 'metadata.yaml'),
                    self.final_path.parent / 'metadata.yaml')
        shutil.rmtree(self._staging, ignore_errors=True)
        return self.final_path
