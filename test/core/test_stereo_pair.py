"""Tests of the real Middlebury stereo pair accessor."""

import numpy as np
import pytest

from fourd_ros.core.data.stereo_pair import load_middlebury_motorcycle


@pytest.fixture(scope='module')
def pair():
    return load_middlebury_motorcycle()


def test_shapes_and_types(pair):
    assert pair.left.shape == (500, 741, 3) and pair.left.dtype == np.uint8
    assert pair.right.shape == pair.left.shape and pair.right.dtype == np.uint8
    assert pair.disparity.shape == (500, 741) and pair.disparity.dtype == np.float32
    assert pair.K.shape == (3, 3) and pair.K.dtype == np.float64
    assert pair.baseline_m == pytest.approx(0.193001)
    # invalid disparities are NaN, never inf
    assert not np.isinf(pair.disparity).any()
    assert 0.85 < np.isfinite(pair.disparity).mean() < 0.99


def test_depth_range(pair):
    z = pair.depth()
    assert z.shape == pair.disparity.shape and z.dtype == np.float32
    assert np.array_equal(np.isfinite(z), np.isfinite(pair.disparity))
    valid = z[np.isfinite(z)]
    assert valid.min() > 1.5 and valid.max() < 5.5
    assert 2.0 < np.median(valid) < 4.0


def test_disparity_convention(pair):
    """Left (x, y) matches right (x - d, y): photometric error far below that of x + d."""
    L = pair.left.astype(np.float32).mean(2)
    R = pair.right.astype(np.float32).mean(2)
    ys, xs = np.nonzero(np.isfinite(pair.disparity))
    d = pair.disparity[ys, xs]
    errs = []
    for sign in (-1, 1):
        xr = np.round(xs + sign * d).astype(int)
        ok = (xr >= 0) & (xr < L.shape[1])
        errs.append(np.abs(L[ys[ok], xs[ok]] - R[ys[ok], xr[ok]]).mean())
    assert errs[0] < 12.0 and errs[0] < 0.4 * errs[1]


def test_resize_scales_consistently(pair):
    small = load_middlebury_motorcycle(max_width=370)
    h, w = small.disparity.shape
    assert w == 370 and h == round(500 * 370 / 741)
    assert small.left.shape == (h, w, 3) and small.right.shape == (h, w, 3)
    sx, sy = w / 741, h / 500
    assert small.K[0, 0] == pytest.approx(pair.K[0, 0] * sx)
    assert small.K[1, 1] == pytest.approx(pair.K[1, 1] * sy)
    assert small.K[0, 2] == pytest.approx((pair.K[0, 2] + 0.5) * sx - 0.5)
    assert small.K[1, 2] == pytest.approx((pair.K[1, 2] + 0.5) * sy - 0.5)
    assert small.doffs_px == pytest.approx(pair.doffs_px * sx)
    assert small.baseline_m == pair.baseline_m
    # disparities scale with the width, so depths are unchanged
    d0, d1 = pair.disparity, small.disparity
    assert np.nanmax(d1) == pytest.approx(np.nanmax(d0) * sx, rel=0.02)
    assert np.nanmedian(small.depth()) == pytest.approx(np.nanmedian(pair.depth()), rel=0.03)
    # no resize when max_width is not smaller than the image
    same = load_middlebury_motorcycle(max_width=2000)
    assert np.array_equal(same.K, pair.K) and same.disparity.shape == pair.disparity.shape
