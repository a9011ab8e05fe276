"""Camera geometry helpers (frames, projection, sampling)."""

import numpy as np

from fourd_ros.core.geometry import (R_BODY_FROM_OPTICAL, default_intrinsics, invert_pose,
                                     make_pose, mask_pixels, nan_to_zero, project,
                                     ray_midpoints, sample_bilinear, scale_intrinsics,
                                     transform_points, unproject_depth, vector_norm)


def test_optical_to_body_rotation_follows_rep103() -> None:
    # optical z (forward) -> body x, optical x (right) -> body -y, optical y (down) -> body -z
    assert np.allclose(R_BODY_FROM_OPTICAL @ [0, 0, 1], [1, 0, 0])
    assert np.allclose(R_BODY_FROM_OPTICAL @ [1, 0, 0], [0, -1, 0])
    assert np.allclose(R_BODY_FROM_OPTICAL @ [0, 1, 0], [0, 0, -1])
    assert np.isclose(np.linalg.det(R_BODY_FROM_OPTICAL), 1.0)


def test_pose_inverse_and_transform() -> None:
    angle = 0.3
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                  [0, 0, 1]])
    T = make_pose(R, [1.0, 2.0, 3.0])
    assert np.allclose(invert_pose(T) @ T, np.eye(4))
    p = np.array([[0.5, -1.0, 2.0]])
    assert np.allclose(transform_points(invert_pose(T), transform_points(T, p)), p)
    assert transform_points(T, p.astype(np.float32)).dtype == np.float32


def test_unproject_project_round_trip() -> None:
    K = default_intrinsics(64, 48, 60.0)
    depth = np.full((48, 64), 2.0, np.float32)
    depth[0, 0] = 0.0
    pts = unproject_depth(depth, K)
    assert np.isnan(pts[0, 0]).all()
    uv, z = project(pts[10:12, 20:22].reshape(-1, 3), K)
    assert np.allclose(uv, [[20, 10], [21, 10], [20, 11], [21, 11]], atol=1e-4)
    assert np.allclose(z, 2.0)


def test_sample_bilinear_keeps_invalid_invalid() -> None:
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    img[1, 2] = np.nan
    out = sample_bilinear(img, np.array([[1, 1], [1.5, 0.5], [0.5, 0.5], [np.nan, 0]],
                                        np.float32))
    assert out[0] == 5.0  # exact pixel next to a hole: the hole has zero weight
    assert np.isnan(out[1])  # the hole has weight
    assert out[2] == np.mean([0, 1, 4, 5])
    assert np.isnan(out[3])


def test_vector_norm_is_the_euclidean_length_over_the_last_axis() -> None:
    rng = np.random.default_rng(0)
    for shape in ((6, 5, 3), (7, 2)):
        v = rng.normal(size=shape).astype(np.float32)
        v.reshape(-1, shape[-1])[1, 0] = np.nan
        out = vector_norm(v)
        assert out.shape == shape[:-1] and out.dtype == np.float32
        assert np.allclose(out, np.linalg.norm(v, axis=-1), equal_nan=True)
        assert np.isnan(out.reshape(-1)[1])


def test_scale_intrinsics_pixel_centres() -> None:
    K = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
    Ks = scale_intrinsics(K, 0.5, 0.5)
    assert np.isclose(Ks[0, 0], 292.5) and np.isclose(Ks[0, 2], 159.75)


def test_midpoint_of_two_rays_is_the_point_they_see() -> None:
    X = np.array([[0.3, -0.2, 2.0], [1.0, 0.5, 4.0]])
    c0, c1 = np.zeros((2, 3)), np.tile([0.2, 0.0, 0.0], (2, 1))
    d0 = X - c0
    d1 = X - c1
    mid, front = ray_midpoints(c0, d0 / np.linalg.norm(d0, axis=1, keepdims=True),
                               c1, d1 / np.linalg.norm(d1, axis=1, keepdims=True))
    assert np.allclose(mid, X) and front.all()


def test_compiled_helpers_match_numpy() -> None:
    """`mask_pixels` and `nan_to_zero` give exactly numpy's `nonzero` and `nan_to_num`
    (order, dtype, infinities), also for an empty mask."""
    rng = np.random.default_rng(0)
    for mask in (rng.random((24, 32)) > 0.7, np.zeros((5, 4), bool)):
        for ours, numpy_ in zip(mask_pixels(mask), np.nonzero(mask)):
            np.testing.assert_array_equal(ours, numpy_)
            assert ours.dtype == numpy_.dtype
    for dtype in (np.float32, np.float64):
        values = rng.normal(size=(6, 7)).astype(dtype)
        values[0, :3] = [np.nan, np.inf, -np.inf]
        out = nan_to_zero(values)
        np.testing.assert_array_equal(out, np.nan_to_num(values, nan=0.0))
        assert out.dtype == dtype and np.isnan(values[0, 0])   # the input is left alone
