"""The learned backend's depth brought to its landmarks (`landmark_depth`): the map's scale and a
smooth correction that fixes a depth map's shape error near landmarks and nothing far from
them."""

from __future__ import annotations

import numpy as np

from fourd_ros.core.backends.landmark_depth import (fit_to_landmarks, LandmarkDepthConfig,
                                                    NO_FIT)
from fourd_ros.core.geometry import make_pose, transform_points

H, W = 96, 128
K = np.array([[100.0, 0, (W - 1) / 2], [0, 100.0, (H - 1) / 2], [0, 0, 1]])


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True depth (a slanted plane, metres), a camera pose, N landmark pixels and their world
    points."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    truth = 2.0 + 0.01 * u + 0.005 * v
    T_wc = make_pose(np.eye(3), np.array([0.3, -0.1, 0.5]))
    rng = np.random.default_rng(seed)
    pixels = np.stack([rng.uniform(2, W - 3, 200), rng.uniform(2, H - 3, 200)], 1)
    z = truth[np.round(pixels[:, 1]).astype(int), np.round(pixels[:, 0]).astype(int)]
    cam = np.stack([(pixels[:, 0] - K[0, 2]) / K[0, 0] * z,
                    (pixels[:, 1] - K[1, 2]) / K[1, 1] * z, z], 1)
    return truth, T_wc, pixels, transform_points(T_wc, cam)


def _absrel(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - truth) / truth))


def test_scale_and_shape_come_from_the_landmarks() -> None:
    truth, T_wc, pixels, points = _scene()
    u = np.arange(W, dtype=np.float32)[None]
    # the network's depth: wrong scale (x 0.4) and a shape error that grows to the right
    predicted = (0.4 * truth * (1.0 + 0.3 * u / W)).astype(np.float32)
    fit = fit_to_landmarks(predicted, pixels, points, T_wc)
    assert fit.points == 200
    scaled_only = predicted * np.float32(fit.scale)
    corrected = fit.apply(predicted)
    # the median ratio alone leaves the shape error, the correction removes most of it
    assert _absrel(scaled_only, truth) > 0.05
    assert _absrel(corrected, truth) < 0.4 * _absrel(scaled_only, truth)
    assert corrected.dtype == np.float32


def test_scale_only_when_the_field_is_off() -> None:
    truth, T_wc, pixels, points = _scene()
    fit = fit_to_landmarks((0.5 * truth).astype(np.float32), pixels, points, T_wc,
                           LandmarkDepthConfig(sigma=0.0))
    assert fit.correction is None
    assert abs(fit.scale - 2.0) < 1e-3
    np.testing.assert_allclose(fit.apply(0.5 * truth), truth, rtol=1e-4)


def test_the_correction_stays_local() -> None:
    truth, T_wc, pixels, points = _scene()
    left = pixels[:, 0] < W / 2    # landmarks on the left half only
    predicted = truth.copy()
    predicted[:, : W // 8] *= 0.8   # wrong on the left eighth only
    fit = fit_to_landmarks(predicted, pixels[left], points[left], T_wc)
    assert fit.correction is not None
    assert abs(fit.scale - 1.0) < 1e-3
    corrected = fit.apply(predicted)
    # bent towards the landmarks where it was wrong, untouched far from them
    assert _absrel(corrected[:, 2: W // 8 - 8], truth[:, 2: W // 8 - 8]) < 0.1
    np.testing.assert_allclose(fit.correction[:, -W // 4:], 1.0, atol=1e-3)


def test_too_few_landmarks_change_nothing() -> None:
    truth, T_wc, pixels, points = _scene()
    assert fit_to_landmarks(truth, pixels[:5], points[:5], T_wc) is NO_FIT
    missing = np.full_like(truth, np.nan)
    assert fit_to_landmarks(missing, pixels, points, T_wc) is NO_FIT
    np.testing.assert_array_equal(NO_FIT.apply(truth), truth)
