"""Input side of fourd_node, ROS-light: messages in, core frames out (no rclpy node here).

- `decode_image` / `decode_depth`: checked conversion of sensor_msgs/Image (or image_transport's
  compressed / compressedDepth CompressedImage) to arrays;
- `DepthSync`: registered depth matched to each image by stamp (nearest within a slop), the way
  image_pipeline's and isaac_ros_visual_slam's synchronisers sit apart from their nodes;
- `Calibration`: the latest CameraInfo as a camera model: intrinsics scaled to the image actually
  received, raw images of a lens with distortion undistorted (`core.data.camera_model`);
- `InputLossMonitor`: frames lost in transport, seen from the cameras' own stamps.

Thread-safe where the node calls from two threads (subscription callbacks and the worker).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from fourd_ros.core.data.camera_model import CalibrationError, CameraModel
from fourd_ros.core.data.ros_image import (compressed_depth_msg_to_depth,
                                           compressed_msg_to_rgb, image_msg_to_depth,
                                           image_msg_to_rgb, RGB_ENCODINGS,
                                           SignificantBits)
from fourd_ros.core.engine.engine import InputError
from fourd_ros.core.frame_tree import normalise_frame
from fourd_ros.ros.conversions import stamp_to_sec

# the core's colour encodings, less OpenCV's 8UC1 / 8UC3 (no channel order: not a camera's)
SUPPORTED_IMAGE = tuple(e for e in RGB_ENCODINGS if not e.startswith('8uc'))
SUPPORTED_DEPTH = ('16UC1', '32FC1')


def decode_image(msg: Any, bits: SignificantBits | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB of a sensor_msgs/Image or CompressedImage (image_transport's
    ``compressed``: JPEG or PNG); 16-bit images (raw or PNG) scaled by the stream's
    significant ``bits`` (None: their high byte); `InputError` says what is wrong with it."""
    if hasattr(msg, 'format'):
        try:
            return compressed_msg_to_rgb(msg, bits)
        except (ValueError, cv2.error) as exc:
            raise InputError(f'{exc} ({len(msg.data)} bytes)') from None
    enc = msg.encoding.lower()
    if enc not in SUPPORTED_IMAGE:
        raise InputError(f"unsupported image encoding '{msg.encoding}' (supported: "
                         f"{', '.join(SUPPORTED_IMAGE)})")
    if msg.width == 0 or msg.height == 0:
        raise InputError(f'empty image ({msg.width}x{msg.height})')
    try:
        return np.ascontiguousarray(image_msg_to_rgb(msg, bits))
    except (ValueError, cv2.error) as exc:
        raise InputError(f'inconsistent image ({msg.encoding}, step {msg.step}, width '
                         f'{msg.width}, {len(msg.data)} bytes for {msg.height} rows): '
                         f'{exc}') from None


def check_same_frame(what: str, frame_id: str, image_frame: str, why: str) -> None:
    """Raise InputError when an input names another optical frame than the image's (both
    set; drivers that leave frame_id empty are trusted)."""
    a, b = normalise_frame(frame_id), normalise_frame(image_frame)
    if a and b and a != b:
        raise InputError(f"{what} frame_id '{a}' is not the image's '{b}': {why}")


def decode_depth(msg: Any, shape: tuple[int, int]) -> np.ndarray:
    """H x W float32 depth in metres (0 = no measurement) of a registered depth image (Image,
    or CompressedImage of image_transport's ``compressedDepth``) whose size must be `shape`
    (the colour image's H, W)."""
    if hasattr(msg, 'format'):
        try:
            depth = compressed_depth_msg_to_depth(msg)
        except (ValueError, cv2.error) as exc:
            raise InputError(str(exc)) from None
        if depth.shape != tuple(shape):
            raise InputError(f'depth {depth.shape[1]}x{depth.shape[0]} does not match image '
                             f'{shape[1]}x{shape[0]}')
        return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    if msg.encoding not in SUPPORTED_DEPTH:
        raise InputError(f"unsupported depth encoding '{msg.encoding}' (supported: "
                         f"{', '.join(SUPPORTED_DEPTH)})")
    bytes_per_px = 2 if msg.encoding == '16UC1' else 4
    if msg.step < msg.width * bytes_per_px or len(msg.data) < msg.step * msg.height:
        raise InputError(f'inconsistent depth image: step {msg.step}, width {msg.width}, '
                         f'{len(msg.data)} bytes for {msg.height} rows')
    if (msg.height, msg.width) != tuple(shape):
        raise InputError(f'depth {msg.width}x{msg.height} does not match image '
                         f'{shape[1]}x{shape[0]}')
    depth = image_msg_to_depth(msg)
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)


class DepthSync:
    """Depth messages waiting for the image with the nearest stamp (within `slop_s`)."""

    def __init__(self, slop_s: float, keep: int = 30) -> None:
        self.slop_s = slop_s
        self._msgs: deque[Any] = deque(maxlen=keep)
        self._cv = threading.Condition()
        self._closed = False

    def add(self, msg: Any) -> None:
        with self._cv:
            self._msgs.append(msg)
            self._cv.notify_all()

    def close(self) -> None:
        """Wake and end any wait (node shutting down)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def clear(self) -> None:
        with self._cv:
            self._msgs.clear()

    def match(self, stamp: float, wait_s: float = 0.2) -> Any | None:
        """The depth message nearest to `stamp` within the slop, waiting up to `wait_s` for it
        (depth often arrives just after its image); None when none comes."""
        deadline = time.monotonic() + wait_s
        with self._cv:
            while True:
                best = None
                for d in self._msgs:
                    dt = abs(stamp_to_sec(d.header.stamp) - stamp)
                    if dt <= self.slop_s and (best is None or dt < best[0]):
                        best = (dt, d)
                if best is not None or time.monotonic() > deadline or self._closed:
                    return None if best is None else best[1]
                self._cv.wait(timeout=0.02)


class Calibration:
    """The camera model of the latest CameraInfo (`CameraModel`; uncalibrated, K[0] == 0: none)
    and the pinhole frames it makes of the images received.

    The first images often come just before the first CameraInfo: processed uncalibrated they
    would start a stream that the calibrated frames then reset. `wait_first` lets an image wait
    for it briefly, and only during the first seconds, so a camera without CameraInfo runs
    uncalibrated after that. ``rectified``: the images are already rectified (``image_rect``;
    intrinsics from ``P``), else raw (``image_raw``; undistorted here when CameraInfo has
    distortion coefficients).
    """

    def __init__(self, wait_s: float = 0.3, patience_s: float = 2.0,
                 rectified: bool = False, used: bool = True) -> None:
        self.wait_s = wait_s
        self.patience_s = patience_s if used else 0.0
        self.rectified = rectified
        self.used = used  # False: no CameraInfo is subscribed (use_camera_info false)
        # (model, why not usable): replaced whole, so the worker reads a consistent pair
        self._state: tuple[CameraModel | None, str] = (None, '')
        self._ready = threading.Event()
        self._wait_start = 0.0
        self._last_msg: tuple | None = None
        self.frame_id = ''  # of the latest CameraInfo

    def update(self, msg: Any) -> None:
        """From a sensor_msgs/CameraInfo (a repeat of the last one changes nothing)."""
        self.frame_id = msg.header.frame_id
        key = (tuple(msg.k), tuple(msg.p), tuple(msg.d), msg.distortion_model, msg.width,
               msg.height)
        if key != self._last_msg:
            self._last_msg = key
            try:
                self._state = (CameraModel.from_camera_info(msg, self.rectified), '')
            except CalibrationError as exc:
                self._state = (None, f'camera_info: {exc}')
        self._ready.set()  # after the model: the worker reads it as soon as this is set

    def wait_first(self) -> None:
        """Block up to `wait_s` for the first CameraInfo, during the first `patience_s`."""
        if self._ready.is_set():
            return
        now = time.monotonic()
        self._wait_start = self._wait_start or now
        if now - self._wait_start < self.patience_s:
            self._ready.wait(self.wait_s)

    def pinhole(self, rgb: np.ndarray, depth: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(image, depth, K) of a received image as a pinhole camera (`CameraModel.pinhole`:
        K scaled to its size, undistorted when raw with distortion); K None when uncalibrated.

        Raises:
            InputError: the CameraInfo cannot be used (an unsupported distortion model, ...).
        """
        model, error = self._state
        if error:
            raise InputError(error)
        if model is None:
            return rgb, depth, None
        return model.pinhole(rgb, depth)

    def describe(self) -> str:
        """What the node does with the camera's images (the ``camera_model`` diagnostic)."""
        model, error = self._state
        if error:
            return error
        if model is None:
            if not self.used:
                return 'camera_info not used (use_camera_info false): intrinsics guessed'
            if self._ready.is_set():
                return 'uncalibrated'
            waited = self._wait_start > 0 \
                and time.monotonic() - self._wait_start >= self.patience_s
            # after the first seconds images run without it: the intrinsics are a guess (the
            # learned model's focal, or a default field of view)
            return 'no camera_info: intrinsics guessed' if waited else 'no camera_info yet'
        if self.rectified:
            return 'rectified (intrinsics from P)'
        if model.distortion.is_pinhole:
            return 'pinhole (no distortion)'
        return f'{model.distortion.model}, undistorted'

    def pinhole_pixels(self, pixels: np.ndarray, width: int, height: int) -> np.ndarray:
        """N x 2 pixels of a received width x height image where `pinhole` puts them (query
        pixels are given in the image as the camera sent it)."""
        model, _ = self._state
        if model is None:
            return np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        return model.pinhole_pixels(pixels, width, height)


class StampGaps:
    """Frames missing from one camera stream, counted from gaps between its stamps.

    The camera period is the median of the recent stamp differences; a difference of at least
    1.75 periods means round(difference / period) - 1 frames never arrived (a timer tick that
    comes late and the next one early, 1.6 + 0.4 periods, is not loss). Stamps that go back
    (the camera restarted) start the count of the stream's period again.
    """

    def __init__(self, history: int = 30) -> None:
        self.received = 0
        self.missing = 0
        self._last: float | None = None
        self._deltas: deque[float] = deque(maxlen=history)

    def add(self, stamp: float) -> int:
        """Record a received stamp (s); returns how many frames are missing just before it."""
        self.received += 1
        last, self._last = self._last, stamp
        if last is None or stamp <= last:
            if last is not None and stamp < last:
                self._deltas.clear()
            return 0
        delta = stamp - last
        lost = 0
        if len(self._deltas) >= 5:
            period = float(np.median(self._deltas))
            if delta >= 1.75 * period:
                lost = int(round(delta / period)) - 1
        if lost == 0:
            self._deltas.append(delta)
        self.missing += lost
        return lost


@dataclass
class InputLoss:
    """What `InputLossMonitor.report` says: counts since start, and a warning or ''."""

    images_received: int
    images_missing: int
    depth_received: int
    depth_missing: int
    depth_unmatched: int
    warning: str


class InputLossMonitor:
    """Input loss of the node's camera streams, from the cameras' own stamps.

    Counts frames missing between received stamps (image and depth streams), and depth images
    that no received image matched (their image was lost). A warning names the likely cause and
    the fix once more than `warn_share` of the recent frames are missing.
    """

    def __init__(self, slop_s: float, warn_share: float = 0.05, window: int = 100) -> None:
        self.slop_s = slop_s
        self.warn_share = warn_share
        self.images = StampGaps()
        self.depth = StampGaps()
        self._lock = threading.Lock()
        self._recent: deque[tuple[int, int]] = deque(maxlen=window)  # (received, missing)
        self._image_stamps: deque[float] = deque(maxlen=200)
        self._depth_stamps: deque[float] = deque(maxlen=200)
        self.depth_unmatched = 0

    def add_image(self, stamp: float) -> None:
        self._add(self.images, self._image_stamps, stamp)

    def add_depth(self, stamp: float) -> None:
        self._add(self.depth, self._depth_stamps, stamp)

    def _add(self, gaps: StampGaps, stamps: deque[float], stamp: float) -> None:
        with self._lock:
            self._recent.append((1, gaps.add(stamp)))
            stamps.append(stamp)
            self._settle_depth(stamp)

    def _settle_depth(self, newest: float) -> None:
        """Depth stamps more than a second older than the newest stamp (`newest`, s) of either
        stream can no longer get their image: count those that no image matched."""
        if not self._depth_stamps or self._depth_stamps[0] >= newest - 1.0:
            return  # the usual case, per message: nothing to settle
        images = np.asarray(self._image_stamps)
        while self._depth_stamps and self._depth_stamps[0] < newest - 1.0:
            d = self._depth_stamps.popleft()
            if not (np.abs(images - d) <= self.slop_s).any():
                self.depth_unmatched += 1

    def report(self, profile_hint: str) -> InputLoss:
        """Counts and, when recent loss exceeds `warn_share`, a warning with `profile_hint`
        (where the Fast DDS profile is) in its fix."""
        with self._lock:
            received = sum(r for r, _ in self._recent)
            missing = sum(m for _, m in self._recent)
            warning = ''
            if missing > self.warn_share * max(received + missing, 1):
                warning = (
                    f'input loss: {missing} of the last {received + missing} camera frames never '
                    'arrived (gaps in their stamps). Large images are dropped by DDS over UDP: '
                    'start the camera driver with the same Fast DDS profile as this node '
                    f'(FASTDDS_DEFAULT_PROFILES_FILE={profile_hint}), or use a reliable QoS on '
                    'both sides (image_qos:=reliable)')
            return InputLoss(self.images.received, self.images.missing, self.depth.received,
                             self.depth.missing, self.depth_unmatched, warning)
