"""A real rectified stereo pair with ground-truth disparity, for real-image tests.

``load_middlebury_motorcycle`` returns the Middlebury 2014 'Motorcycle' scene as shipped, at a
quarter of the original resolution (741 x 500 instead of 2964 x 2000), inside the scikit-image
wheel (``skimage.data.stereo_motorcycle``), so no download is needed.

Source and licence: Middlebury 2014 stereo benchmark by N. Nesic, P. Westling, X. Wang,
Y. Kitajima, G. Krathwohl and D. Scharstein (D. Scharstein et al., "High-resolution stereo
datasets with subpixel-accurate ground truth", GCPR 2014,
https://vision.middlebury.edu/stereo/data/scenes2014/), redistributed by scikit-image. It is not
CC0: the Middlebury authors ask users to cite the paper above; use it for tests and evaluation.

Frames and units: everything is expressed in the left (reference) camera, OpenCV axes (x right,
y down, z forward), metres and pixels; pixel centres are at integer coordinates. The pair is
rectified: the right camera has the same orientation and sits at ``+baseline_m`` along the left
camera's x axis, and its principal point is ``cx + doffs_px`` (``K_right``). The left pixel
(x, y) matches the right pixel (x - d, y), d = ``disparity[y, x]``, and the depth is
``z = baseline_m * fx / (d + doffs_px)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Calibration of the quarter-resolution images, from the docstring of
# skimage.data.stereo_motorcycle (scikit-image 0.25.2). These are exactly the published full
# resolution Middlebury 2014 Motorcycle values (cam0 f = 3979.911 px, cx = 1244.772,
# cy = 1019.507, doffs = 124.343 px, baseline = 193.001 mm) divided by 4, matching the
# 741 x 500 images and their disparities (7.2-59.9 px, full-resolution ndisp = 280).
_MOTORCYCLE_F = 994.978
_MOTORCYCLE_CX = 311.193
_MOTORCYCLE_CY = 254.877
_MOTORCYCLE_DOFFS = 31.086
_MOTORCYCLE_BASELINE_M = 0.193001


@dataclass
class StereoPair:
    """A rectified stereo pair with ground-truth disparity of the left image.

    Attributes:
        left: H x W x 3 uint8 RGB left (reference) image.
        right: H x W x 3 uint8 RGB right image.
        disparity: H x W float32 left-image disparity in pixels (left x minus right x);
            NaN where there is no ground truth.
        K: 3x3 float64 intrinsics of the left camera in pixels.
        baseline_m: distance between the camera centres in metres; the right camera is at
            ``+baseline_m`` along the left camera's x axis.
        doffs_px: principal point x of the right camera minus that of the left camera, in
            pixels (0 for a pair rectified to a common principal point).
    """

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    K: np.ndarray
    baseline_m: float
    doffs_px: float = 0.0

    @property
    def K_right(self) -> np.ndarray:
        """3x3 float64 intrinsics of the right camera (principal point shifted by doffs)."""
        K = self.K.copy()
        K[0, 2] += self.doffs_px
        return K

    def depth(self) -> np.ndarray:
        """H x W float32 depth (camera z) of the left image in metres; NaN where invalid."""
        d = self.disparity.astype(np.float64) + self.doffs_px
        with np.errstate(divide='ignore', invalid='ignore'):
            z = self.baseline_m * self.K[0, 0] / d
        z[~(np.isfinite(z) & (d > 0))] = np.nan
        return z.astype(np.float32)


def _resize_nearest(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel-centre aligned nearest-neighbour resize (no mixing of disparities across edges)."""
    h, w = a.shape[:2]
    rows = np.minimum(((np.arange(height) + 0.5) * (h / height)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w / width)).astype(np.int64), w - 1)
    return a[rows[:, None], cols[None, :]]


def load_middlebury_motorcycle(max_width: int | None = None) -> StereoPair:
    """The Middlebury 2014 'Motorcycle' pair (741 x 500) with ground-truth disparity.

    Ground-truth depths lie between about 2.1 and 5.0 m; about 93 % of the left pixels have a
    ground-truth disparity (the rest, occluded or unmeasured, are NaN).

    Args:
        max_width: when given and smaller than 741, the pair is downscaled to this width
            (images with ``cv2.INTER_AREA``, disparity with pixel-centre aligned nearest
            neighbour); ``K``, the disparity and ``doffs_px`` are scaled consistently, so depths
            are unchanged.

    Returns:
        The stereo pair; see the module docstring for frames and units.
    """
    import skimage.data  # imported lazily: scikit-image is only needed for this loader

    left, right, disp = skimage.data.stereo_motorcycle()
    left = np.ascontiguousarray(left[..., :3], np.uint8)
    right = np.ascontiguousarray(right[..., :3], np.uint8)
    disp = np.asarray(disp, np.float32)
    if disp.ndim == 3:
        disp = disp[..., 0]
    disp = np.where(np.isfinite(disp), disp, np.nan).astype(np.float32)
    K = np.array([[_MOTORCYCLE_F, 0.0, _MOTORCYCLE_CX],
                  [0.0, _MOTORCYCLE_F, _MOTORCYCLE_CY],
                  [0.0, 0.0, 1.0]])
    doffs = _MOTORCYCLE_DOFFS
    h, w = disp.shape
    if max_width is not None:
        if max_width < 1:
            raise ValueError(f'max_width must be >= 1, got {max_width}')
        if max_width < w:
            nw = int(max_width)
            nh = max(int(round(h * nw / w)), 1)
            sx, sy = nw / w, nh / h
            left = cv2.resize(left, (nw, nh), interpolation=cv2.INTER_AREA)
            right = cv2.resize(right, (nw, nh), interpolation=cv2.INTER_AREA)
            disp = _resize_nearest(disp, nw, nh) * np.float32(sx)
            # pixel centres at integers: x' = (x + 0.5) * s - 0.5
            K = K.copy()
            K[0, 0] *= sx
            K[1, 1] *= sy
            K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
            K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
            doffs *= sx
    return StereoPair(left=left, right=right, disparity=np.ascontiguousarray(disp, np.float32),
                      K=K, baseline_m=_MOTORCYCLE_BASELINE_M, doffs_px=float(doffs))
