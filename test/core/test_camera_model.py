"""Camera models from CameraInfo: distorted images brought to a pinhole camera
(`fourd_ros.core.data.camera_model`)."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fourd_ros.core.data.camera_model import (CalibrationError, CameraModel, Distortion,
                                              distort_image)
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.geometry import project, unproject_depth

LENSES = [Distortion('plumb_bob', (-0.3, 0.08, 0.001, -0.001, 0.0)),
          Distortion('rational_polynomial', (-0.3, 0.1, 0.0, 0.0, 0.0, 0.02, 0.0, 0.0)),
          Distortion('equidistant', (-0.05, 0.01, 0.0, 0.0))]


def camera_info(K: np.ndarray, size: tuple[int, int], lens: Distortion | SimpleNamespace,
                P: np.ndarray | None = None) -> SimpleNamespace:
    """The fields of a sensor_msgs/CameraInfo."""
    P = K if P is None else P
    return SimpleNamespace(k=list(K.ravel()), p=list(np.c_[P, np.zeros(3)].ravel()),
                           d=list(lens.coeffs), distortion_model=lens.model,
                           width=size[0], height=size[1])


@pytest.fixture(scope='module')
def frame():
    clip = generate_clip(SceneConfig(frames=1, width=256, height=192, seed=3))
    return clip.rgb[0], clip.depth[0].astype(np.float32), clip.K


def _point_error(depth: np.ndarray, K: np.ndarray, seen: np.ndarray, true_depth: np.ndarray,
                 K_true: np.ndarray) -> float:
    """Median distance (share of the depth) of the points that `depth` and `K` give from the
    true points: `seen` (H x W x 2) is the pixel of the true pinhole image (`K_true`,
    `true_depth`) that each pixel really shows."""
    points = unproject_depth(depth, K).reshape(-1, 3)
    q = np.round(seen.reshape(-1, 2)).astype(int)
    h, w = true_depth.shape
    ok = np.isfinite(points).all(1) & (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) \
        & (q[:, 1] < h)
    truth = unproject_depth(true_depth, K_true)[q[ok, 1], q[ok, 0]]
    return float(np.median(np.linalg.norm(points[ok] - truth, axis=1) / truth[:, 2]))


def _grid(w: int, h: int) -> np.ndarray:
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.stack([u, v], -1)


@pytest.mark.parametrize('lens', LENSES, ids=lambda d: d.model)
def test_a_distorted_frame_lands_on_the_true_surfaces(frame, lens: Distortion) -> None:
    rgb, depth, K = frame
    h, w = depth.shape
    raw_rgb = distort_image(rgb, K, lens)
    raw_depth = distort_image(depth, K, lens, depth=True)
    camera = CameraModel.from_camera_info(camera_info(K, (w, h), lens))
    und_rgb, und_depth, K_pinhole = camera.pinhole(raw_rgb, raw_depth)
    assert und_rgb.shape == rgb.shape and und_depth.shape == depth.shape
    # (the border the simulated lens sees beyond the pinhole render has no depth)
    assert np.isfinite(und_depth).mean() > 0.6
    # each undistorted pixel shows the ray of its pinhole pixel; a raw pixel the ray that
    # undistorting it gives
    grid = _grid(w, h)
    seen_und = (np.c_[grid.reshape(-1, 2), np.ones(h * w)] @ np.linalg.inv(K_pinhole).T
                @ K.T)[:, :2].reshape(h, w, 2)
    seen_raw = camera.pinhole_pixels(grid.reshape(-1, 2), w, h).reshape(h, w, 2)
    seen_raw = (np.c_[seen_raw.reshape(-1, 2), np.ones(h * w)] @ np.linalg.inv(K_pinhole).T
                @ K.T)[:, :2].reshape(h, w, 2)
    undistorted = _point_error(und_depth, K_pinhole, seen_und, depth, K)
    as_pinhole = _point_error(raw_depth, K, seen_raw, depth, K)  # what the node did before
    print(f'{lens.model}: median point error {undistorted:.4f} of the depth undistorted, '
          f'{as_pinhole:.4f} taken as a pinhole image')
    assert undistorted < 0.01 and as_pinhole > 5 * undistorted
    # colours land where the pinhole camera saw them
    points = unproject_depth(und_depth, K_pinhole)
    uv, _ = project(points.reshape(-1, 3), K)
    ok = np.isfinite(uv).all(1)
    true_rgb = cv2.remap(rgb, *uv.reshape(h, w, 2).astype(np.float32).transpose(2, 0, 1),
                         cv2.INTER_LINEAR)
    diff = np.abs(true_rgb.astype(int) - und_rgb.astype(int)).mean(-1).ravel()[ok]
    assert np.median(diff) < 6.0


@pytest.mark.parametrize('lens', LENSES, ids=lambda d: d.model)
def test_raw_pixels_map_to_where_the_undistorted_image_shows_them(frame, lens) -> None:
    _, depth, K = frame
    h, w = depth.shape
    camera = CameraModel(K, (w, h), lens)
    _, _, K_pinhole = camera.pinhole(np.zeros((h, w, 3), np.uint8))
    rng = np.random.default_rng(0)
    ideal = rng.uniform([20, 20], [w - 20, h - 20], (50, 2))  # pixels of the undistorted image
    rays = np.c_[ideal, np.ones(50)] @ np.linalg.inv(K_pinhole).T
    if lens.fisheye:
        raw = cv2.fisheye.projectPoints(rays[:, None], np.zeros(3), np.zeros(3), K,
                                        lens.array())[0]
    else:
        raw = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), K, lens.array())[0]
    assert np.abs(camera.pinhole_pixels(raw.reshape(-1, 2), w, h) - ideal).max() < 0.05


def test_camera_info_semantics(frame) -> None:
    _, depth, K = frame
    h, w = depth.shape
    lens = LENSES[0]
    P = K.copy()
    P[0, 0] = P[1, 1] = 0.8 * K[0, 0]
    # rectified images (image_rect): P's intrinsics, no undistortion
    rect = CameraModel.from_camera_info(camera_info(K, (w, h), lens, P), rectified=True)
    assert rect.distortion.is_pinhole and np.allclose(rect.K, P)
    img = np.full((h, w, 3), 7, np.uint8)
    same, _, K_half = rect.pinhole(img[::2, ::2])
    assert same is not None and np.array_equal(same, img[::2, ::2])
    assert np.isclose(K_half[0, 0], 0.4 * K[0, 0])  # scaled to the image received
    # a pinhole camera (all-zero coefficients) is left as it is, under any model name
    pin = CameraModel.from_camera_info(camera_info(K, (w, h), Distortion('none', (0.0,) * 5)))
    assert pin.distortion.is_pinhole and pin.pinhole(img)[0] is img
    # uncalibrated (REP 104: K[0] == 0)
    assert CameraModel.from_camera_info(camera_info(np.zeros((3, 3)), (w, h), lens)) is None
    # models OpenCV does not know, and wrong coefficient counts, are named
    with pytest.raises(CalibrationError, match="'double_sphere' is not supported"):
        CameraModel.from_camera_info(camera_info(K, (w, h), SimpleNamespace(
            model='double_sphere', coeffs=(0.1, 0.2, 0.0, 0.0, 0.0, 0.0))))
    with pytest.raises(CalibrationError, match='takes 4 or 5 coefficients'):
        Distortion('plumb_bob', (0.1, 0.2, 0.0))


def test_undistorted_depth_stays_on_its_surfaces_at_depth_edges(frame) -> None:
    """Nearest-pixel depth: no point between a near and a far surface."""
    _, depth, K = frame
    h, w = depth.shape
    step = np.where(np.arange(w)[None] < w // 2, 1.0, 3.0).astype(np.float32) * np.ones((h, 1))
    lens = LENSES[0]
    camera = CameraModel(K, (w, h), lens)
    raw = distort_image(step, K, lens, depth=True)
    _, und, _ = camera.pinhole(np.zeros((h, w, 3), np.uint8), raw)
    values = und[np.isfinite(und)]
    assert set(np.unique(values)) <= {1.0, 3.0}
