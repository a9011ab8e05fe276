"""Sequence readers: one iterator interface over datasets, image folders, videos and bags.

``open_sequence(path, **opts)`` detects the layout and returns a ``SequenceReader`` that yields
``fourd_ros.core.types.Frame`` objects (RGB uint8, depth float32 metres, K 3x3 float64 pixels,
``T_wc_gt`` 4x4 camera-to-world in the dataset's own world frame, stamps in seconds).

Supported layouts (first match wins, or force one with ``layout=``):

- ``synthetic``: a folder with ``meta.json`` whose ``"format"`` is ``"fourd_synthetic_clip"``
  (or ``"fourd-synthetic"``), read with ``fourd_ros.core.data.clip_format.read_clip``.
- ``rosbag2``: a folder with ``metadata.yaml`` (``.db3`` or ``.mcap`` storage), or one of its
  storage files.
- ``7scenes``: ``frame-XXXXXX.color.{jpg,png}``, ``.depth.png`` (uint16 mm, 0 and 65535
  invalid), ``.pose.txt`` (4x4 camera-to-world) and ``camera-intrinsics.txt``.
- ``tum``: TUM RGB-D (``rgb.txt``, optional ``depth.txt`` and ``groundtruth.txt``).
- ``images``: a folder of ``*.png`` / ``*.jpg`` / ``*.jpeg`` (natural sort order), no depth.
- ``video``: a ``.mp4`` / ``.avi`` / ``.mkv`` / ``.mov`` / ``.webm`` file.

Options common to all readers: ``start`` (first source frame, default 0), ``stride`` (default
1), ``max_frames`` (None or 0 = no limit) and ``K`` (intrinsics override: a 3x3 matrix or
``(fx, fy, cx, cy)``). ``Frame.index`` counts the yielded frames from 0; ``Frame.name`` and
``Frame.stamp`` refer to the source frame.

Every problem with the input (missing, unreadable or corrupt files, missing intrinsics where
required, depth/image size mismatch, no frames) raises ``DatasetError`` with a one-line message
naming the file.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
import time
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import cv2
import numpy as np

from fourd_ros.core.data import ros_image, tum
from fourd_ros.core.types import Frame

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.mov', '.webm')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
LAYOUTS = ('synthetic', 'rosbag2', '7scenes', 'tum', 'images', 'video')
SYNTHETIC_FORMATS = ('fourd_synthetic_clip', 'fourd-synthetic')
"""``meta.json`` ``"format"`` values of synthetic clips (``clip_format.FORMAT_NAME`` first)."""
SEVEN_SCENES_FPS = 30.0
"""7-Scenes (Kinect v1) frame rate; stamps are ``frame number / 30`` seconds."""


T = TypeVar('T')


def timed(items: Iterable[T]) -> Iterator[tuple[T, float]]:
    """Yield (item, seconds spent producing it): reading/decoding time of each frame."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        yield item, time.perf_counter() - t0


class DatasetError(ValueError):
    """Bad input data (missing/corrupt files, missing intrinsics, size mismatch, no frames).

    The message is always one line (multi-line causes are joined with spaces).
    """

    def __init__(self, message: str) -> None:
        super().__init__(' '.join(part.strip() for part in str(message).splitlines()
                                  if part.strip()))


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def as_intrinsics(K: Any) -> np.ndarray:
    """3x3 float64 intrinsics from a 3x3 array-like or ``(fx, fy, cx, cy)``."""
    arr = np.asarray(K, dtype=np.float64)
    if arr.shape == (4,):
        fx, fy, cx, cy = arr
        arr = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if arr.shape != (3, 3) or not np.all(np.isfinite(arr)) or arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise DatasetError(f'invalid intrinsics K={K!r}: expected 3x3 or (fx, fy, cx, cy)')
    return arr


def read_intrinsics_file(path: Path) -> np.ndarray:
    """Read a 3x3 matrix (9 numbers) or ``fx fy cx cy`` from a text file.

    Numbers may be separated by whitespace or commas; ``#`` starts a comment.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f'cannot read intrinsics file {path}: {err}') from None
    text = '\n'.join(line.split('#', 1)[0] for line in text.splitlines())
    try:
        values = [float(v) for v in text.replace(',', ' ').split()]
    except ValueError:
        raise DatasetError(f'non-numeric intrinsics in {path}') from None
    if len(values) == 9:
        K = np.asarray(values, dtype=np.float64).reshape(3, 3)
    elif len(values) == 4:
        fx, fy, cx, cy = values
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    else:
        raise DatasetError(f'expected a 3x3 matrix or fx fy cx cy in {path}, got {len(values)} '
                           'numbers')
    if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0):
        raise DatasetError(f'invalid intrinsics in {path} (non-finite or non-positive focal)')
    return K


def read_pose_file(path: Path) -> np.ndarray | None:
    """Read a 4x4 camera-to-world matrix (16 numbers); None if it has non-finite entries."""
    try:
        values = np.asarray(Path(path).read_text().split(), dtype=np.float64)
    except FileNotFoundError:
        raise DatasetError(f'missing pose file {path}') from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DatasetError(f'cannot read pose file {path}: {err}') from None
    if values.size != 16:
        raise DatasetError(f'expected a 4x4 matrix in {path}, got {values.size} numbers')
    T = values.reshape(4, 4)
    return T if np.all(np.isfinite(T)) else None


def load_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB image from a file (any format cv2 reads)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'missing image file {path}')
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f'cannot read image file {path} (corrupt or unsupported)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_depth_png(path: Path, units_per_metre: float,
                   invalid_values: Sequence[int] = (0,)) -> np.ndarray:
    """H x W float32 depth in metres from a uint16 PNG; ``invalid_values`` become 0."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'missing depth file {path}')
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f'cannot read depth file {path} (corrupt or unsupported)')
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(f'depth file {path} is {raw.dtype} with shape {raw.shape}, '
                           'expected single-channel uint16')
    depth = raw.astype(np.float32) / np.float32(units_per_metre)
    for v in invalid_values:
        depth[raw == v] = 0.0
    return depth


def _check_depth_size(depth: np.ndarray, rgb: np.ndarray, where: Any) -> None:
    if depth.shape != rgb.shape[:2]:
        raise DatasetError(f'depth {where} is {depth.shape[1]}x{depth.shape[0]} but the image is '
                           f'{rgb.shape[1]}x{rgb.shape[0]}')


def _natural_key(name: str) -> list[Any]:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r'(\d+)', name)]


def _selection(n: int, start: int, stride: int, max_frames: int | None) -> range:
    sel = range(start, n, stride)
    return sel[:max_frames] if max_frames else sel


def _check_common(start: int, stride: int, max_frames: int | None) -> None:
    if start < 0 or stride < 1 or (max_frames is not None and max_frames < 0):
        raise ValueError(f'invalid selection start={start} stride={stride} '
                         f'max_frames={max_frames}')


# ----------------------------------------------------------------------------------------------
# Base classes
# ----------------------------------------------------------------------------------------------

class SequenceReader(ABC):
    """Iterable over the ``Frame``s of one sequence (re-iterable: each ``iter`` starts over).

    Attributes:
        name: sequence name (the folder or file stem).
        has_depth: frames carry metric depth.
        has_gt_pose: frames carry a ground-truth pose (some may still be None).
        layout: one of ``LAYOUTS``.
    """

    layout = ''

    def __init__(self, path: str | Path, start: int = 0, stride: int = 1,
                 max_frames: int | None = None, K: Any = None) -> None:
        _check_common(start, stride, max_frames)
        self.path = Path(path)
        self.name = self.path.stem if self.path.is_file() else self.path.name
        self.start = start
        self.stride = stride
        self.max_frames = max_frames
        self.K_override = as_intrinsics(K) if K is not None else None
        self.has_depth = False
        self.has_gt_pose = False

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield the selected frames in order."""

    @property
    def length(self) -> int | None:
        """Number of frames the iterator yields, None when unknown."""
        return None

    def __len__(self) -> int:
        n = self.length
        if n is None:
            raise TypeError(f'{type(self).__name__}: length unknown')
        return n

    def __repr__(self) -> str:
        return f'{type(self).__name__}({str(self.path)!r}, frames={self.length})'


class IndexedReader(SequenceReader):
    """A reader with random access to source frames by index."""

    def __init__(self, path: str | Path, num_source: int, **common: Any) -> None:
        super().__init__(path, **common)
        self._sel = _selection(num_source, self.start, self.stride, self.max_frames)

    @abstractmethod
    def _load(self, src: int) -> Frame:
        """Load source frame ``src`` (``index`` is set by the caller)."""

    @property
    def length(self) -> int:
        return len(self._sel)

    def __getitem__(self, i: int) -> Frame:
        """The i-th selected frame."""
        src = self._sel[i]
        frame = self._load(src)
        frame.index = i if i >= 0 else len(self._sel) + i
        if self.K_override is not None:
            frame.K = self.K_override.copy()
        return frame

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self._sel)):
            yield self[i]


# ----------------------------------------------------------------------------------------------
# 7-Scenes
# ----------------------------------------------------------------------------------------------

_SEVEN_RE = re.compile(r'^frame-(\d+)\.color\.(png|jpg)$')


def _seven_scenes_frames(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.iterdir():
        m = _SEVEN_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


class SevenScenesReader(IndexedReader):
    """7-Scenes sequence folder (``frame-XXXXXX.{color.jpg|color.png,depth.png,pose.txt}``).

    Depth PNG: uint16 millimetres, 0 and 65535 invalid (-> 0). Intrinsics from
    ``camera-intrinsics.txt`` (required unless ``K`` is given; 7-Scenes: fx = fy = 585,
    cx = 320, cy = 240). Stamps are ``frame number / fps`` (default 30 Hz, the Kinect rate).
    Poses with non-finite entries give ``T_wc_gt = None``.
    """

    layout = '7scenes'

    def __init__(self, path: str | Path, fps: float = SEVEN_SCENES_FPS, **common: Any) -> None:
        folder = Path(path)
        if not folder.is_dir():
            raise DatasetError(f'not a folder: {folder}')
        self._frames = _seven_scenes_frames(folder)
        super().__init__(folder, len(self._frames), **common)
        if not self._frames:
            raise DatasetError(f'no frame-XXXXXX.color.(jpg|png) files in {folder}')
        self.fps = float(fps)
        intr = folder / 'camera-intrinsics.txt'
        if self.K_override is not None:
            self._K = self.K_override
        elif intr.is_file():
            self._K = read_intrinsics_file(intr)
        else:
            raise DatasetError(f'missing intrinsics file {intr} (or pass K=...)')
        first = self._stem(0)
        self.has_depth = first.with_name(first.name + '.depth.png').is_file()
        self.has_gt_pose = first.with_name(first.name + '.pose.txt').is_file()

    def _stem(self, src: int) -> Path:
        num, color = self._frames[src]
        return color.with_name(f'frame-{num:06d}')

    def _load(self, src: int) -> Frame:
        num, color_path = self._frames[src]
        stem = self._stem(src)
        rgb = load_rgb(color_path)
        depth = None
        if self.has_depth:
            depth_path = stem.with_name(stem.name + '.depth.png')
            depth = load_depth_png(depth_path, 1000.0, invalid_values=(0, 65535))
            _check_depth_size(depth, rgb, f'file {depth_path}')
        pose = None
        if self.has_gt_pose:
            pose = read_pose_file(stem.with_name(stem.name + '.pose.txt'))
        return Frame(stamp=num / self.fps, rgb=rgb, depth=depth, K=self._K.copy(),
                     T_wc_gt=pose, name=stem.name)


# ----------------------------------------------------------------------------------------------
# TUM RGB-D
# ----------------------------------------------------------------------------------------------

class TumReader(IndexedReader):
    """TUM RGB-D sequence folder.

    Depth (``depth.txt``) is associated to each RGB frame by nearest stamp within ``max_dt``
    seconds (default 0.02, as TUM's ``associate.py``); RGB frames without a depth match are
    dropped. Depth PNGs are uint16 with ``depth_factor`` (5000) units per metre, 0 invalid.
    Ground truth (``groundtruth.txt``) is interpolated at the RGB stamp (slerp between samples at
    most ``gt_max_gap`` s apart, else nearest within ``max_dt``, else None); it is
    camera-to-world in the motion-capture world frame. Intrinsics: the ``K`` option, else
    ``camera-intrinsics.txt`` or ``calib.txt`` (3x3 or ``fx fy cx cy``), else TUM's default
    fx = fy = 525, cx = 319.5, cy = 239.5 (``tum.FREIBURG_DEFAULT_K``).
    """

    layout = 'tum'

    def __init__(self, path: str | Path, max_dt: float = 0.02, gt_max_gap: float = 0.1,
                 depth_factor: float = tum.TUM_DEPTH_FACTOR, **common: Any) -> None:
        folder = Path(path)
        self.folder = folder
        self.depth_factor = float(depth_factor)
        rgb_list = folder / 'rgb.txt'
        if not rgb_list.is_file():
            raise DatasetError(f'missing file list {rgb_list}')
        stamps, names = self._list(rgb_list)
        depth_list = folder / 'depth.txt'
        self._depth: list[str | None] = [None] * len(stamps)
        has_depth = depth_list.is_file()
        if has_depth:
            d_stamps, d_names = self._list(depth_list)
            match = tum.associate_nearest(stamps, d_stamps, max_dt)
            keep = np.flatnonzero(match >= 0)
            stamps = stamps[keep]
            names = [names[i] for i in keep]
            self._depth = [d_names[match[i]] for i in keep]
        self._stamps = stamps
        self._names = names
        gt_file = folder / 'groundtruth.txt'
        self._poses: list[np.ndarray | None] = [None] * len(stamps)
        has_gt = gt_file.is_file()
        if has_gt:
            try:
                g_stamps, g_poses = tum.read_trajectory(gt_file)
            except ValueError as err:
                raise DatasetError(str(err)) from None
            self._poses = tum.interpolate_poses(stamps, g_stamps, g_poses, max_dt, gt_max_gap)
        super().__init__(folder, len(stamps), **common)
        if not len(stamps):
            raise DatasetError(f'no frames in {rgb_list}'
                               + (f' with a depth match in {depth_list}' if has_depth else ''))
        self.has_depth = has_depth
        self.has_gt_pose = has_gt
        if self.K_override is not None:
            self._K = self.K_override
        else:
            self._K = tum.FREIBURG_DEFAULT_K.copy()
            for fname in ('camera-intrinsics.txt', 'calib.txt'):
                if (folder / fname).is_file():
                    self._K = read_intrinsics_file(folder / fname)
                    break

    @staticmethod
    def _list(path: Path) -> tuple[np.ndarray, list[str]]:
        try:
            return tum.read_file_list(path)
        except ValueError as err:
            raise DatasetError(str(err)) from None

    def _load(self, src: int) -> Frame:
        rgb_path = self.folder / self._names[src]
        rgb = load_rgb(rgb_path)
        depth = None
        depth_name = self._depth[src]
        if depth_name is not None:
            depth_path = self.folder / depth_name
            depth = load_depth_png(depth_path, self.depth_factor)
            _check_depth_size(depth, rgb, f'file {depth_path}')
        pose = self._poses[src]
        return Frame(stamp=float(self._stamps[src]), rgb=rgb, depth=depth, K=self._K.copy(),
                     T_wc_gt=None if pose is None else pose.copy(),
                     name=Path(self._names[src]).stem)


# ----------------------------------------------------------------------------------------------
# Image folder
# ----------------------------------------------------------------------------------------------

def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


class ImageFolderReader(IndexedReader):
    """A folder of images (png/jpg, natural sort order: ``img2`` before ``img10``), no depth.

    Stamps are ``source index / fps`` (default 30). K: the ``K`` option, else
    ``camera-intrinsics.txt`` in the folder if present, else None (uncalibrated).
    """

    layout = 'images'

    def __init__(self, path: str | Path, fps: float = 30.0, **common: Any) -> None:
        folder = Path(path)
        if not folder.is_dir():
            raise DatasetError(f'not a folder: {folder}')
        self._files = _image_files(folder)
        super().__init__(folder, len(self._files), **common)
        if not self._files:
            raise DatasetError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
        if fps <= 0:
            raise ValueError(f'fps must be > 0, got {fps}')
        self.fps = float(fps)
        intr = folder / 'camera-intrinsics.txt'
        self._K = (self.K_override if self.K_override is not None
                   else read_intrinsics_file(intr) if intr.is_file() else None)

    def _load(self, src: int) -> Frame:
        path = self._files[src]
        return Frame(stamp=src / self.fps, rgb=load_rgb(path),
                     K=None if self._K is None else self._K.copy(), name=path.stem)


# ----------------------------------------------------------------------------------------------
# Video
# ----------------------------------------------------------------------------------------------

class VideoReader(SequenceReader):
    """A video file read with ``cv2.VideoCapture`` (no depth).

    Stamps: the container timestamp (``CAP_PROP_POS_MSEC`` after reading the frame) when it
    increases, else ``source index / fps``, with fps from the ``fps`` option, the container, or 30.
    The length comes from the container's frame count and may be approximate for some codecs.
    K only from the ``K`` option.
    """

    layout = 'video'

    def __init__(self, path: str | Path, fps: float | None = None, **common: Any) -> None:
        super().__init__(path, **common)
        if not self.path.is_file():
            raise DatasetError(f'missing video file {self.path}')
        cap = self._open()
        try:
            ok, first = cap.read()
            if not ok or first is None:
                raise DatasetError(f'cannot decode any frame of video file {self.path}')
            container_fps = cap.get(cv2.CAP_PROP_FPS)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        if fps is not None and fps <= 0:
            raise ValueError(f'fps must be > 0, got {fps}')
        self.fps = float(fps or (container_fps if container_fps and container_fps > 0 else 30.0))
        self._count = count if count > 0 else None

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise DatasetError(f'cannot open video file {self.path} (corrupt or unsupported)')
        return cap

    @property
    def length(self) -> int | None:
        if self._count is None:
            return None
        return len(_selection(self._count, self.start, self.stride, self.max_frames))

    def __iter__(self) -> Iterator[Frame]:
        cap = self._open()
        try:
            src = -1
            out = 0
            last_stamp = -np.inf
            while not self.max_frames or out < self.max_frames:
                target = self.start + out * self.stride
                while src < target - 1:
                    if not cap.grab():
                        return
                    src += 1
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                src += 1
                msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                stamp = msec / 1000.0 if msec / 1000.0 > last_stamp else src / self.fps
                if src > 0 and stamp <= last_stamp:
                    stamp = last_stamp + self.stride / self.fps
                last_stamp = stamp
                yield Frame(stamp=stamp, rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                            K=None if self.K_override is None else self.K_override.copy(),
                            name=f'{src:06d}', index=out)
                out += 1
        finally:
            cap.release()


# ----------------------------------------------------------------------------------------------
# rosbag2
# ----------------------------------------------------------------------------------------------

_IMAGE_TYPE = 'sensor_msgs/msg/Image'
_COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'


class RosbagReader(SequenceReader):
    """A rosbag2 recording (sqlite3 ``.db3`` or ``.mcap``) read with ``rosbags``.

    Args:
        image_topic: colour image topic (``sensor_msgs/msg/Image`` rgb8/bgr8/rgba8/bgra8/mono8
            or ``CompressedImage``); default: the first Image topic whose name does not contain
            'depth', else the first Image, else the first CompressedImage topic.
        depth_topic: optional registered depth topic (16UC1 mm or 32FC1 m). Each image gets the
            depth message with the nearest header stamp within ``max_dt`` s (default 0.02), or
            ``depth = None`` when there is none.
        camera_info_topic: optional CameraInfo topic; default: ``<image namespace>/camera_info``
            if the bag has it. The latest CameraInfo received gives K (all-zero K = unknown).
        K: intrinsics override (takes precedence over camera_info).

    Stamps come from the image ``header.stamp`` (the bag receive time if the header is zero).
    ``start`` / ``stride`` / ``max_frames`` count image messages. Names are the image message
    index (``000042``).
    """

    layout = 'rosbag2'

    def __init__(self, path: str | Path, image_topic: str | None = None,
                 depth_topic: str | None = None, camera_info_topic: str | None = None,
                 max_dt: float = 0.02, **common: Any) -> None:
        path = Path(path)
        if path.is_file() and (path.parent / 'metadata.yaml').is_file():
            path = path.parent
        super().__init__(path, **common)
        self.max_dt = float(max_dt)
        topics = self._topics()
        if image_topic is None:
            images = [t for t, typ in topics.items() if typ == _IMAGE_TYPE and t != depth_topic]
            plain = [t for t in images if 'depth' not in t.lower()]
            compressed = [t for t, typ in topics.items() if typ == _COMPRESSED_TYPE]
            candidates = plain or images or compressed
            if not candidates:
                raise DatasetError(f'no sensor_msgs/msg/Image topic in bag {path} '
                                   f'(topics: {", ".join(sorted(topics)) or "none"})')
            image_topic = candidates[0]
        self._check_topic(topics, image_topic, (_IMAGE_TYPE, _COMPRESSED_TYPE), 'image')
        if depth_topic is not None:
            self._check_topic(topics, depth_topic, (_IMAGE_TYPE,), 'depth')
        if camera_info_topic is None:
            sibling = image_topic.rsplit('/', 1)[0] + '/camera_info'
            camera_info_topic = sibling if topics.get(sibling) == _INFO_TYPE else None
        else:
            self._check_topic(topics, camera_info_topic, (_INFO_TYPE,), 'camera_info')
        self.image_topic = image_topic
        self.depth_topic = depth_topic
        self.camera_info_topic = camera_info_topic
        self._compressed = topics[image_topic] == _COMPRESSED_TYPE
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
        state = {'K': self.K_override, 'out': 0}
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
                        k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
                        state['K'] = k if k[0, 0] > 0 and k[1, 1] > 0 else None
                    continue
                try:
                    if topic == self.depth_topic:
                        depths.append((self._stamp(msg, bag_ns),
                                       ros_image.image_msg_to_depth(msg)))
                    elif self._compressed:
                        pending.append((img_idx, self._stamp(msg, bag_ns),
                                        ros_image.compressed_msg_to_rgb(msg)))
                    else:
                        pending.append((img_idx, self._stamp(msg, bag_ns),
                                        ros_image.image_msg_to_rgb(msg)))
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
            if (state['K'] is None and self.camera_info_topic is not None and not final
                    and len(pending) <= 64):
                return
            pending.popleft()
            while depths and depths[0][0] < stamp - self.max_dt:
                depths.popleft()
            K = state['K']
            yield Frame(stamp=stamp, rgb=rgb, depth=depth,
                        K=None if K is None else K.copy(), name=f'{src:06d}',
                        index=state['out'])
            state['out'] += 1
        if not pending and depths:
            # nothing waits for depth: keep only recent depth for images still to come
            horizon = depths[-1][0] - max(1.0, 10 * self.max_dt)
            while depths and depths[0][0] < horizon:
                depths.popleft()


# ----------------------------------------------------------------------------------------------
# Synthetic clips
# ----------------------------------------------------------------------------------------------

def _is_synthetic(folder: Path) -> bool:
    meta = folder / 'meta.json'
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get('format') in SYNTHETIC_FORMATS
    except (OSError, ValueError, AttributeError) as err:
        raise DatasetError(f'cannot read {meta}: {err}') from None


class SyntheticClipReader(IndexedReader):
    """A fourd-synthetic clip folder, read with ``fourd_ros.core.data.clip_format.read_clip``."""

    layout = 'synthetic'

    def __init__(self, path: str | Path, **common: Any) -> None:
        from fourd_ros.core.data.clip_format import read_clip

        try:
            self.clip = read_clip(path)
        except DatasetError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise DatasetError(f'cannot read synthetic clip {path}: {err}') from None
        super().__init__(path, len(self.clip), **common)
        if not len(self.clip):
            raise DatasetError(f'synthetic clip {path} has no frames')
        first = self.clip.frame(0)
        self.has_depth = bool(getattr(self.clip, 'has_depth', first.depth is not None))
        self.has_gt_pose = bool(getattr(self.clip, 'has_gt_pose', first.T_wc_gt is not None))

    def _load(self, src: int) -> Frame:
        try:
            return self.clip.frame(src)
        except DatasetError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise DatasetError(f'cannot read frame {src} of synthetic clip {self.path}: '
                               f'{err}') from None


# ----------------------------------------------------------------------------------------------
# Layout detection
# ----------------------------------------------------------------------------------------------

def detect_layout(path: str | Path) -> str:
    """Name of the layout of ``path`` (one of ``LAYOUTS``); DatasetError if none matches."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f'no such file or folder: {p}')
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return 'video'
        if suffix in ('.db3', '.mcap') and (p.parent / 'metadata.yaml').is_file():
            return 'rosbag2'
        raise DatasetError(f'unsupported input file {p} (expected a video '
                           f'{"/".join(VIDEO_EXTENSIONS)} or a sequence folder)')
    if _is_synthetic(p):
        return 'synthetic'
    if (p / 'metadata.yaml').is_file():
        return 'rosbag2'
    if any(_SEVEN_RE.match(c.name) for c in p.iterdir()):
        return '7scenes'
    if (p / 'rgb.txt').is_file():
        return 'tum'
    if _image_files(p):
        return 'images'
    raise DatasetError(f'no frames found in {p} (not a 7-Scenes, TUM, image, rosbag2 or '
                       'synthetic-clip folder)')


_READERS: dict[str, type[SequenceReader]] = {
    'synthetic': SyntheticClipReader,
    'rosbag2': RosbagReader,
    '7scenes': SevenScenesReader,
    'tum': TumReader,
    'images': ImageFolderReader,
    'video': VideoReader,
}


def open_sequence(path: str | Path, layout: str | None = None, **opts: Any) -> SequenceReader:
    """Open a sequence, detecting its layout unless ``layout`` is given.

    Args:
        path: folder or file (see the module docstring for the layouts).
        layout: force one of ``LAYOUTS``.
        **opts: ``start``, ``stride``, ``max_frames``, ``K`` and the reader-specific options
            (``fps``; TUM ``max_dt``/``gt_max_gap``/``depth_factor``; rosbag2
            ``image_topic``/``depth_topic``/``camera_info_topic``/``max_dt``).

    Raises:
        DatasetError: no layout matches or the data is bad.
        TypeError: an option the reader does not accept.
    """
    if layout is None:
        layout = detect_layout(path)
    elif layout not in _READERS:
        raise ValueError(f'unknown layout {layout!r}; expected one of {", ".join(LAYOUTS)}')
    elif not Path(path).exists():
        raise DatasetError(f'no such file or folder: {path}')
    return _READERS[layout](path, **opts)
