"""A calibrated camera as ROS describes it (``sensor_msgs/CameraInfo``), and its images brought to
the pinhole camera every backend assumes (no ROS needed: any object with CameraInfo's fields).

A raw image (``image_raw``) of a lens with distortion is not a pinhole image: fed as it is,
its points near the border land pixels off their rays, bending the cloud and the camera path
(a synthetic RGB-D camera with k1 = -0.25 over DDS: camera path 18.5 mm and query answers
43.5 mm off, 0.9 and 0.6 mm undistorted). ``CameraModel.pinhole`` undistorts it first (OpenCV's
maps, made once per calibration and image size) onto a pinhole camera of the same size that
keeps only pixels the camera saw (OpenCV's ``alpha = 0``): colour bilinearly, registered depth
bilinearly within a surface and by its nearest pixel across a depth edge (`remap_depth`). An
image that is already rectified (``image_rect``, as image_proc publishes it) takes its
intrinsics from ``P`` and is left as it is, as image_geometry's ``PinholeCameraModel`` does.

Distortion models (CameraInfo's ``distortion_model``, REP 104 / sensor_msgs'
``distortion_models.hpp``): ``plumb_bob`` (k1 k2 p1 p2 k3), ``rational_polynomial`` (k1 k2 p1 p2
k3 k4 k5 k6) and ``equidistant`` (fisheye: k1 k2 k3 k4). All-zero or empty coefficients are a
pinhole camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numba
import numpy as np

from fourd_ros.core.geometry import scale_intrinsics

DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'equidistant')


class CalibrationError(ValueError):
    """A CameraInfo this camera model cannot use (says which field and why)."""


@dataclass(frozen=True)
class Distortion:
    """Lens distortion: a CameraInfo model name and its coefficients (``D``)."""

    model: str
    coeffs: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.is_pinhole:
            return
        if self.model not in DISTORTION_MODELS:
            raise CalibrationError(
                f"distortion model '{self.model}' is not supported (supported: "
                f"{', '.join(DISTORTION_MODELS)}); rectify the images first (image_proc) and "
                'set image_rectified to true')
        need = {'plumb_bob': (4, 5), 'rational_polynomial': (8,), 'equidistant': (4,)}
        if len(self.coeffs) not in need[self.model]:
            raise CalibrationError(
                f"distortion model '{self.model}' takes {' or '.join(map(str, need[self.model]))}"
                f' coefficients, CameraInfo.d has {len(self.coeffs)}')
        if not np.all(np.isfinite(self.coeffs)):
            raise CalibrationError(f'non-finite distortion coefficients {self.coeffs}')

    @property
    def is_pinhole(self) -> bool:
        """No distortion (empty or all-zero coefficients)."""
        return not any(self.coeffs)

    @property
    def fisheye(self) -> bool:
        return self.model == 'equidistant'

    def array(self) -> np.ndarray:
        return np.asarray(self.coeffs, dtype=np.float64)


class Undistorter:
    """Remaps images of a distorted camera onto a pinhole camera of the same size.

    Attributes:
        K: 3x3 intrinsics (pixels) of the undistorted images: chosen so that every pixel of
            them was seen by the camera (no black border; OpenCV's ``alpha = 0`` / fisheye
            ``balance = 0``).
    """

    def __init__(self, K: np.ndarray, distortion: Distortion, size: tuple[int, int]) -> None:
        """``K``: intrinsics of the distorted images; ``size``: (width, height) in pixels."""
        K = np.asarray(K, dtype=np.float64)
        D = distortion.array()
        if distortion.fisheye:
            self.K = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
                K, D, size, np.eye(3), balance=0.0)
            self._map_x, self._map_y = cv2.fisheye.initUndistortRectifyMap(
                K, D, np.eye(3), self.K, size, cv2.CV_32FC1)
        else:
            self.K, _ = cv2.getOptimalNewCameraMatrix(K, D, size, 0.0, size)
            self._map_x, self._map_y = cv2.initUndistortRectifyMap(
                K, D, None, self.K, size, cv2.CV_32FC1)
        self.size = size
        self._K_raw, self._distortion = K, distortion

    def pixels(self, raw: np.ndarray) -> np.ndarray:
        """N x 2 float64 pixels of the undistorted image seen at the N x 2 pixels (column,
        row) ``raw`` of the distorted one."""
        pts = np.asarray(raw, dtype=np.float64).reshape(-1, 1, 2)
        if len(pts) == 0:
            return np.zeros((0, 2))
        return _undistort_points(pts, self._K_raw, self._distortion, self.K).reshape(-1, 2)

    def rgb(self, image: np.ndarray) -> np.ndarray:
        """H x W x C image (any dtype) undistorted, bilinear."""
        return cv2.remap(image, self._map_x, self._map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """H x W float32 depth undistorted (`remap_depth`); NaN where there is none."""
        return remap_depth(depth, self._map_x, self._map_y)


def remap_depth(depth: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
                max_step: float = 0.05) -> np.ndarray:
    """float32 depth (0 or NaN = none) resampled at (map_x, map_y) like cv2.remap:
    bilinear where the 2 x 2 pixels around a sample lie on one surface (depths within
    ``max_step`` of each other), else the nearest pixel's depth, so that no point lands between
    a near and a far surface. (Nearest everywhere turns smooth surfaces into steps that bent
    the rgbd camera path: 11.7 instead of 5.3 mm on a zoomed synthetic clip, docs/history.md.)
    NaN outside the image and where the nearest pixel has no depth."""
    return _remap_depth(np.ascontiguousarray(depth, dtype=np.float32),
                        np.ascontiguousarray(map_x, dtype=np.float32),
                        np.ascontiguousarray(map_y, dtype=np.float32), np.float32(max_step))


@numba.njit(cache=True, nogil=True)
def _remap_depth(depth: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
                 max_step: np.float32) -> np.ndarray:
    """`remap_depth` in one compiled pass (pixel centres at integer coordinates)."""
    h, w = depth.shape
    out = np.full(map_x.shape, np.nan, np.float32)
    for r in range(map_x.shape[0]):
        for c in range(map_x.shape[1]):
            x, y = map_x[r, c], map_y[r, c]
            if not (x > -0.5 and y > -0.5 and x < w - 0.5 and y < h - 0.5):
                continue
            x0 = min(max(int(np.floor(x)), 0), w - 2) if w > 1 else 0
            y0 = min(max(int(np.floor(y)), 0), h - 2) if h > 1 else 0
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            a, b = depth[y0, x0], depth[y0, x1]
            d, e = depth[y1, x0], depth[y1, x1]
            lo = min(min(a, b), min(d, e))
            hi = max(max(a, b), max(d, e))
            if lo > 0 and hi <= lo * (1 + max_step):  # one surface (NaN fails both tests)
                fx = min(max(x - x0, 0.0), 1.0)
                fy = min(max(y - y0, 0.0), 1.0)
                out[r, c] = ((a * (1 - fx) + b * fx) * (1 - fy)
                             + (d * (1 - fx) + e * fx) * fy)
            else:
                z = depth[int(np.floor(y + 0.5)), int(np.floor(x + 0.5))]
                if z > 0:
                    out[r, c] = z
    return out


def distort_image(image: np.ndarray, K: np.ndarray, distortion: Distortion,
                  depth: bool = False) -> np.ndarray:
    """What a camera with intrinsics ``K`` and this distortion sees of a pinhole image taken
    with ``K`` (same size): for simulated cameras and tests. ``depth``: the image is a depth
    map (`remap_depth`)."""
    h, w = image.shape[:2]
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pixels = np.stack([u, v], -1).reshape(-1, 1, 2)
    K = np.asarray(K, dtype=np.float64)
    ideal = _undistort_points(pixels, K, distortion, K).reshape(h, w, 2).astype(np.float32)
    if depth:
        return remap_depth(image, ideal[..., 0], ideal[..., 1])
    return cv2.remap(image, ideal[..., 0], ideal[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _undistort_points(pixels: np.ndarray, K: np.ndarray, distortion: Distortion,
                      P: np.ndarray) -> np.ndarray:
    """N x 1 x 2 pixels of the camera (K, distortion) where the pinhole camera P sees them:
    OpenCV's undistortPoints (fisheye's for equidistant), solved to convergence (the default 5
    iterations leave strong distortion a few hundredths of a pixel off)."""
    D = distortion.array()
    if distortion.fisheye:
        return cv2.fisheye.undistortPoints(pixels, K, D, P=P)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)
    return cv2.undistortPointsIter(pixels, K, D, None, P, criteria)


@dataclass
class CameraModel:
    """Intrinsics and distortion of a camera at its calibrated size.

    Attributes:
        K: 3x3 intrinsics (pixels) of the images at ``size``: ``K`` of a raw camera, ``P``'s
            left 3x3 of a rectified one.
        size: (width, height) the calibration is for.
        distortion: lens distortion of the images (pinhole for rectified images).
    """

    K: np.ndarray
    size: tuple[int, int]
    distortion: Distortion = Distortion('plumb_bob', ())
    _undistorters: dict[tuple[int, int], Undistorter] = field(default_factory=dict, repr=False)

    @classmethod
    def from_camera_info(cls, msg: Any, rectified: bool = False) -> CameraModel | None:
        """The model of a CameraInfo, or None for an uncalibrated camera (``K[0] == 0``, REP
        104). ``rectified``: the images are already rectified (intrinsics from ``P``,
        distortion ignored) rather than raw.

        Raises:
            CalibrationError: a distortion model or coefficient count this class cannot use.
        """
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        size = (int(msg.width), int(msg.height))
        if K[0, 0] <= 0.0 or not np.all(np.isfinite(K)) or 0 in size:
            return None
        if rectified:
            P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
            if P[0, 0] > 0.0 and np.all(np.isfinite(P)):
                K = P[:, :3].copy()
            return cls(K, size)
        return cls(K, size, Distortion(str(msg.distortion_model),
                                       tuple(float(x) for x in msg.d)))

    def pinhole(self, rgb: np.ndarray, depth: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(image, depth, K) of an image of any size from this camera, as a pinhole camera:
        intrinsics scaled to the image's size and, with distortion, the image (and registered
        depth) undistorted."""
        h, w = rgb.shape[:2]
        if self.distortion.is_pinhole:
            return rgb, depth, scale_intrinsics(self.K, w / self.size[0], h / self.size[1])
        undistort = self._undistorter(w, h)
        return (undistort.rgb(rgb), None if depth is None else undistort.depth(depth),
                undistort.K.copy())

    def pinhole_pixels(self, pixels: np.ndarray, width: int, height: int) -> np.ndarray:
        """N x 2 pixels (column, row) of a width x height image from this camera, where
        `pinhole` puts them (the same pixels without distortion)."""
        if self.distortion.is_pinhole:
            return np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        return self._undistorter(width, height).pixels(pixels)

    def _undistorter(self, width: int, height: int) -> Undistorter:
        """The maps for images of this size (made once)."""
        undistort = self._undistorters.get((width, height))
        if undistort is None:
            K = scale_intrinsics(self.K, width / self.size[0], height / self.size[1])
            undistort = Undistorter(K, self.distortion, (width, height))
            self._undistorters[(width, height)] = undistort
        return undistort
