"""``RosbagReader``: rosbag2 recordings (``.db3`` or ``.mcap``) read with ``rosbags``."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fourd_ros.core.data import ros_image
from fourd_ros.core.data.camera_model import CalibrationError, CameraModel
from fourd_ros.core.data.readers.base import (
    _check_depth_size,
    _selection,
    DatasetError,
    SequenceReader,
)
from fourd_ros.core.types import Frame

_IMAGE_TYPE = 'sensor_msgs/msg/Image'
_COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'


class RosbagReader(SequenceReader):
    """A rosbag2 recording (sqlite3 ``.db3`` or ``.mcap``) read with ``rosbags``.

    Args:
        image_topic: colour image topic (``sensor_msgs/msg/Image`` rgb8/bgr8/rgba8/bgra8/mono8
            or ``CompressedImage``); default: the first Image topic whose name does not contain
            'depth', else the first Image, else the first CompressedImage topic.
        depth_topic: optional registered depth topic (Image 16UC1 mm or 32FC1 m, or
            image_transport's ``compressedDepth`` CompressedImage). Each image gets the
            depth message with the nearest header stamp within ``max_dt`` s (default 0.02), or
            ``depth = None`` when there is none.
        camera_info_topic: optional CameraInfo topic; default: ``<image namespace>/camera_info``
            if the bag has it. The latest CameraInfo received gives the camera model
            (`core.data.camera_model`; all-zero K = unknown): a raw image with distortion
            coefficients is undistorted (depth too) and K is the undistorted image's.
        image_rectified: the images are already rectified (intrinsics from CameraInfo's P,
            distortion ignored); default: when the image topic's last name has 'rect' in it
            (image_proc's ``image_rect``, ``image_rect_color``).
        K: intrinsics override (takes precedence over camera_info; no undistortion).

    Stamps come from the image ``header.stamp`` (the bag receive time if the header is zero).
    ``start`` / ``stride`` / ``max_frames`` count image messages. Names are the image message
    index (``000042``).
    """

    layout = 'rosbag2'

    def __init__(self, path: str | Path, image_topic: str | None = None,
                 depth_topic: str | None = None, camera_info_topic: str | None = None,
                 max_dt: float = 0.02, image_rectified: bool | None = None,
                 **common: Any) -> None:
        path = Path(path)
        if path.is_file() and (path.parent / 'metadata.yaml').is_file():
            path = path.parent
        super().__init__(path, **common)
        self.max_dt = float(max_dt)
        topics = self._topics()
        if image_topic is None:
            images = [t for t, typ in topics.items() if typ == _IMAGE_TYPE and t != depth_topic]
            plain = [t for t in images if 'depth' not in t.lower()]
            compressed = [t for t, typ in topics.items() if typ == _COMPRESSED_TYPE
                          and t != depth_topic and 'depth' not in t.lower()]
            candidates = plain or images or compressed
            if not candidates:
                raise DatasetError(f'no sensor_msgs/msg/Image topic in bag {path} '
                                   f'(topics: {", ".join(sorted(topics)) or "none"})')
            image_topic = candidates[0]
        self._check_topic(topics, image_topic, (_IMAGE_TYPE, _COMPRESSED_TYPE), 'image')
        if depth_topic is not None:
            self._check_topic(topics, depth_topic, (_IMAGE_TYPE, _COMPRESSED_TYPE), 'depth')
        if camera_info_topic is None:
            sibling = image_topic.rsplit('/', 1)[0] + '/camera_info'
            camera_info_topic = sibling if topics.get(sibling) == _INFO_TYPE else None
        else:
            self._check_topic(topics, camera_info_topic, (_INFO_TYPE,), 'camera_info')
        self.image_topic = image_topic
        self.depth_topic = depth_topic
        self.camera_info_topic = camera_info_topic
        self._compressed = topics[image_topic] == _COMPRESSED_TYPE
        self._compressed_depth = depth_topic is not None and \
            topics[depth_topic] == _COMPRESSED_TYPE
        base = image_topic.removesuffix('/compressed').rsplit('/', 1)[-1]
        self.image_rectified = ('rect' in base) if image_rectified is None else image_rectified
        self.has_depth = depth_topic is not None

    def _reader(self) -> Any:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        try:
            return AnyReader([self.path], default_typestore=get_typestore(Stores.ROS2_KILTED))
        except Exception as err:  # rosbags raises several unrelated error types
            raise DatasetError(f'cannot open bag {self.path}: {err}') from None

    def _topics(self) -> dict[str, str]:
        reader = self._reader()
        try:
            with reader:
                self._counts: dict[str, int] = {}
                for c in reader.connections:
                    self._counts[c.topic] = self._counts.get(c.topic, 0) + c.msgcount
                return {c.topic: c.msgtype for c in reader.connections}
        except DatasetError:
            raise
        except Exception as err:
            raise DatasetError(f'cannot read bag {self.path}: {err}') from None

    def _check_topic(self, topics: dict[str, str], topic: str, types: tuple[str, ...],
                     what: str) -> None:
        if topic not in topics:
            raise DatasetError(f'{what} topic {topic} not in bag {self.path} '
                               f'(topics: {", ".join(sorted(topics))})')
        if topics[topic] not in types:
            raise DatasetError(f'{what} topic {topic} in bag {self.path} has type '
                               f'{topics[topic]}, expected {" or ".join(types)}')

    @property
    def length(self) -> int:
        n = self._counts.get(self.image_topic, 0)
        return len(_selection(n, self.start, self.stride, self.max_frames))

    @staticmethod
    def _stamp(msg: Any, bag_ns: int) -> float:
        st = msg.header.stamp
        ns = int(st.sec) * 1_000_000_000 + int(st.nanosec)
        return (ns if ns > 0 else bag_ns) * 1e-9

    def __iter__(self) -> Iterator[Frame]:
        reader = self._reader()
        pending: deque[tuple[int, float, np.ndarray]] = deque()
        depths: deque[tuple[float, np.ndarray]] = deque()
        state: dict[str, Any] = {'camera': None, 'out': 0}
        bits = ros_image.SignificantBits()  # 16-bit images: as the node's image_bits 0
        wanted = {self.image_topic, self.depth_topic, self.camera_info_topic} - {None}
        sel = _selection(self._counts.get(self.image_topic, 0), self.start, self.stride,
                         self.max_frames)
        selected = set(sel)
        last = sel[-1] if len(sel) else -1
        with reader:
            conns = [c for c in reader.connections if c.topic in wanted]
            img_idx = -1
            for conn, bag_ns, raw in reader.messages(connections=conns):
                topic = conn.topic
                if topic == self.image_topic:
                    img_idx += 1
                    if img_idx > last and not pending:
                        return
                    if img_idx not in selected:
                        continue
                msg = self._deserialize(reader, raw, conn.msgtype, topic)
                if topic == self.camera_info_topic:
                    if self.K_override is None:
                        try:
                            state['camera'] = CameraModel.from_camera_info(
                                msg, rectified=self.image_rectified)
                        except CalibrationError as err:
                            raise DatasetError(f'{topic} in bag {self.path}: {err}') from None
                    continue
                try:
                    if topic == self.depth_topic:
                        depths.append((self._stamp(msg, bag_ns),
                                       ros_image.compressed_depth_msg_to_depth(msg)
                                       if self._compressed_depth else
                                       ros_image.image_msg_to_depth(msg)))
                    elif self._compressed:
                        pending.append((img_idx, self._stamp(msg, bag_ns),
                                        ros_image.compressed_msg_to_rgb(msg, bits)))
                    else:
                        pending.append((img_idx, self._stamp(msg, bag_ns),
                                        ros_image.image_msg_to_rgb(msg, bits)))
                except ValueError as err:
                    raise DatasetError(f'bad message on {topic} in bag {self.path}: {err}') \
                        from None
                yield from self._emit(pending, depths, state, final=False)
            yield from self._emit(pending, depths, state, final=True)

    def _deserialize(self, reader: Any, raw: bytes, msgtype: str, topic: str) -> Any:
        try:
            return reader.deserialize(raw, msgtype)
        except Exception as err:
            raise DatasetError(f'cannot deserialize {msgtype} on {topic} in bag {self.path}: '
                               f'{err}') from None

    def _emit(self, pending: deque, depths: deque, state: dict,
              final: bool) -> Iterator[Frame]:
        """Yield the pending images whose depth match (and K) can no longer improve."""
        while pending:
            src, stamp, rgb = pending[0]
            depth = None
            if self.depth_topic is not None:
                best = min(depths, key=lambda d: abs(d[0] - stamp), default=None)
                exact = best is not None and abs(best[0] - stamp) < 1e-9
                newest = max((d[0] for d in depths), default=-np.inf)
                if not (final or exact or newest > stamp + self.max_dt or len(pending) > 64):
                    return
                if best is not None and abs(best[0] - stamp) <= self.max_dt:
                    depth = best[1]
                    _check_depth_size(depth, rgb, f'on {self.depth_topic} in bag {self.path}')
            camera = state['camera']
            if (camera is None and self.K_override is None and self.camera_info_topic is not None
                    and not final and len(pending) <= 64):
                return
            pending.popleft()
            while depths and depths[0][0] < stamp - self.max_dt:
                depths.popleft()
            K = None if self.K_override is None else self.K_override.copy()
            if camera is not None:
                rgb, depth, K = camera.pinhole(rgb, depth)
            yield Frame(stamp=stamp, rgb=rgb, depth=depth, K=K, name=f'{src:06d}',
                        index=state['out'])
            state['out'] += 1
        if not pending and depths:
            # nothing waits for depth: keep only recent depth for images still to come
            horizon = depths[-1][0] - max(1.0, 10 * self.max_dt)
            while depths and depths[0][0] < horizon:
                depths.popleft()
