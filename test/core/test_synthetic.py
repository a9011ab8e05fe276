"""Tests of the procedural scene generator and the synthetic clip format."""

import json
import time

import numpy as np
import pytest

from fourd_ros.core.data.clip_format import read_clip, write_clip
from fourd_ros.core.data.synthetic import (RigidObject, Room, Scene, SceneConfig, TextureBinding,
                                           generate_clip, render_clip)
from fourd_ros.core.data.textures import make_texture
from fourd_ros.core.types import Frame

W, H = 96, 72


def small(seed: int = 0, **kw) -> SceneConfig:
    kw.setdefault('frames', 8)
    return SceneConfig(width=W, height=H, seed=seed, texture_size=64, **kw)


@pytest.fixture(scope='module')
def clip():
    return generate_clip(small(2, frames=10, num_objects=(2, 3)))


def kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4x4 rigid transform minimising |R src + t - dst|."""
    ms, md = src.mean(0), dst.mean(0)
    U, _, Vt = np.linalg.svd((dst - md).T @ (src - ms))
    S = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    T = np.eye(4)
    T[:3, :3] = U @ S @ Vt
    T[:3, 3] = md - T[:3, :3] @ ms
    return T


def test_deterministic_per_seed():
    a = generate_clip(small(5))
    b = generate_clip(small(5))
    c = generate_clip(small(6))
    for name in ('rgb', 'depth', 'instance', 'T_wc', 'T_wo', 'K'):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.rgb, c.rgb)
    assert not np.allclose(a.K, c.K)


def test_rgb_noise_is_deterministic_and_leaves_geometry():
    a = generate_clip(small(5, frames=2, rgb_noise_std=4.0))
    b = generate_clip(small(5, frames=2, rgb_noise_std=4.0))
    clean = generate_clip(small(5, frames=2))
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, clean.depth)
    diff = a.rgb.astype(float) - clean.rgb
    assert 2.0 < diff.std() < 6.0


def test_basic_properties(clip):
    F = len(clip)
    assert F == 10 and clip.rgb.shape == (F, H, W, 3) and clip.rgb.dtype == np.uint8
    assert clip.depth.dtype == np.float32 and clip.instance.dtype == np.int32
    np.testing.assert_array_equal(clip.T_wc[0], np.eye(4))
    assert np.all(np.isfinite(clip.depth)) and clip.depth.min() > 0.1
    # rotations are orthonormal
    R = clip.T_wc[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.tile(np.eye(3), (F, 1, 1)),
                               atol=1e-12)
    K = clip.K
    hfov = np.rad2deg(2 * np.arctan(W / 2 / K[0, 0]))
    assert 49 < hfov < 81 and abs(K[1, 1] / K[0, 0] - 1) < 0.03
    assert abs(K[0, 2] - (W - 1) / 2) < 0.05 * W and abs(K[1, 2] - (H - 1) / 2) < 0.05 * H
    np.testing.assert_allclose(clip.stamps, np.arange(F) / 10.0)
    assert clip.instance.min() >= 0 and clip.instance.max() <= clip.num_objects
    assert clip.num_objects >= 1 and (clip.instance > 0).any()
    np.testing.assert_array_equal(clip.T_wo[:, 0], np.tile(np.eye(4), (F, 1, 1)))
    # textured, not flat: local contrast everywhere in the image
    gray = clip.rgb[0].astype(float).mean(-1)
    assert np.abs(np.diff(gray, axis=1)).mean() > 1.0
    f = clip.frame(3)
    assert isinstance(f, Frame) and f.name == '000003' and f.index == 3
    assert f.stamp == pytest.approx(0.3) and np.array_equal(f.depth, clip.depth[3])
    np.testing.assert_array_equal(f.T_wc_gt, clip.T_wc[3])


def test_config_validation():
    with pytest.raises(ValueError):
        SceneConfig(camera_motion='orbit')
    with pytest.raises(ValueError):
        SceneConfig(num_objects=(3, 1))


def test_camera_motion_kinds():
    st = generate_clip(small(1, camera_motion='static', frames=4))
    np.testing.assert_allclose(st.T_wc, np.tile(np.eye(4), (4, 1, 1)), atol=1e-12)
    rot = generate_clip(small(1, camera_motion='rotation', frames=4))
    np.testing.assert_allclose(rot.T_wc[:, :3, 3], 0.0, atol=1e-12)
    assert not np.allclose(rot.T_wc[-1, :3, :3], np.eye(3), atol=1e-3)
    sm = generate_clip(small(1, frames=4))
    assert np.linalg.norm(sm.T_wc[-1, :3, 3]) > 1e-3


def test_static_background_reprojects_exactly(clip):
    """Static pixels of frame i seen in j: the ray through the projected subpixel hits them."""
    fx = clip.K[0, 0]
    checked = 0
    for i, j in ((0, 9), (4, 1), (9, 5)):
        P, vis = clip.points_at(i, j)
        m = vis & (clip.instance[i] == 0)
        assert m.sum() > 0.05 * m.size
        # background points do not move
        np.testing.assert_allclose(P[m], clip.points_world(i)[m], atol=0)
        uv, z = clip.project(j, P[m])
        depth, inst, hit = clip.cast_rays(j, uv)
        keep = inst == 0
        assert keep.all()  # exact visibility: nothing covers the point at its subpixel
        err_px = np.linalg.norm(hit - P[m], axis=1)[keep] * fx / z[keep]
        assert err_px.max() < 0.5 and np.median(err_px) < 1e-3
        np.testing.assert_allclose(depth[keep], z[keep], rtol=1e-4)
        # and the depth rendered at the nearest pixel agrees within the visibility tolerance
        ui, vi = np.rint(uv).astype(int).T
        assert np.all(np.abs(clip.depth[j][vi, ui] - z) <= 0.01 * z + 0.01)
        checked += keep.sum()
    assert checked > 1000


@pytest.mark.parametrize('motion', ['static', 'rotation'])
def test_static_and_rotation_cameras_map_pixels_exactly(motion):
    c = generate_clip(small(3, camera_motion=motion, frames=6))
    u, v = np.meshgrid(np.arange(W, dtype=float), np.arange(H, dtype=float))
    pix = np.stack([u, v, np.ones_like(u)], -1)
    for j in (2, 5):
        P, vis = c.points_at(0, j)
        m = vis & (c.instance[0] == 0)
        assert m.any()
        uv, _ = c.project(j, P)
        # no translation: the mapping is the depth-independent homography K R_j0 K^-1
        Hm = c.K @ c.T_wc[j, :3, :3].T @ c.T_wc[0, :3, :3] @ np.linalg.inv(c.K)
        q = pix @ Hm.T
        np.testing.assert_allclose(uv[m], q[m][:, :2] / q[m][:, 2:], atol=1e-3)
        if motion == 'static':
            np.testing.assert_allclose(uv[m], pix[m][:, :2], atol=1e-3)


def test_object_points_move_rigidly(clip):
    fx = clip.K[0, 0]
    n_obj = 0
    for i, j in ((0, 9), (5, 2)):
        P_i = clip.points_world(i)
        P_j, vis = clip.points_at(i, j)
        for k in range(1, clip.num_objects + 1):
            m = clip.instance[i] == k
            if m.sum() < 10:
                continue
            n_obj += 1
            a, b = P_i[m], P_j[m]
            idx = np.random.default_rng(0).integers(len(a), size=(200, 2))
            da = np.linalg.norm(a[idx[:, 0]] - a[idx[:, 1]], axis=1)
            db = np.linalg.norm(b[idx[:, 0]] - b[idx[:, 1]], axis=1)
            np.testing.assert_allclose(da, db, atol=1e-9)
            T_gt = clip.T_wo[j, k] @ np.linalg.inv(clip.T_wo[i, k])
            np.testing.assert_allclose(kabsch(a, b), T_gt, atol=1e-7)
            if not clip.moving[k]:
                np.testing.assert_allclose(a, b, atol=1e-9)
            # visible object points: the ray through their projection in j hits them
            mv = vis[m]
            if mv.sum() == 0:
                continue
            uv, z = clip.project(j, b[mv])
            _, inst, hit = clip.cast_rays(j, uv)
            keep = inst == k
            assert keep.all()
            err_px = np.linalg.norm(hit - b[mv], axis=1)[keep] * fx / z[keep]
            assert err_px.max() < 0.5 and np.median(err_px) < 1e-3
    assert n_obj > 0


def test_depth_only_visibility_is_close_to_exact(clip):
    """Without the scene, visibility uses the rendered depth and instance maps only."""
    for i, j in ((0, 9), (3, 4)):
        _, exact = clip.points_at(i, j)
        _, approx = clip.points_at(i, j, exact=False)
        assert not (exact & ~approx).any()  # the exact test only removes points
        assert (approx & ~exact).mean() < 0.02 and exact.sum() > 0.05 * exact.size


def test_dynamic_mask(clip):
    for i in range(len(clip)):
        dm = clip.dynamic_mask(i)
        assert dm.dtype == bool
        np.testing.assert_array_equal(dm, clip.moving[clip.instance[i]])
    assert clip.moving.any() and not clip.moving[0]
    st = generate_clip(small(4, static_object_prob=1.0, num_objects=(2, 2), frames=3))
    assert st.num_objects > 0 and not st.moving.any()
    assert (st.instance > 0).any() and not st.dynamic_mask(0).any()
    P, _ = st.points_at(0, 2)
    np.testing.assert_array_equal(P, st.points_world(0))


def _occlusion_clip():
    """Static camera looking at a wall 3 m away; a sphere passes in front; last frame yaws."""
    rng = np.random.default_rng(0)
    textures = [make_texture(rng, 64) for _ in range(2)]
    room = Room(np.eye(4), (3.0, 1.5, 3.0), [TextureBinding(0, 1.0)] * 6)
    ball = RigidObject('sphere', (0.4, 0.4, 0.4), c0=(-1.2, 0.0, 1.8), velocity=(2.0, 0, 0),
                       texture=TextureBinding(1, 0.5))
    scene = Scene(room, [ball], textures)
    K = np.array([[60.0, 0, (W - 1) / 2], [0, 60.0, (H - 1) / 2], [0, 0, 1]])
    T_wc = np.tile(np.eye(4), (3, 1, 1))
    yaw = np.deg2rad(30)
    T_wc[2, :3, :3] = [[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]]
    stamps = np.array([0.0, 0.6, 0.6])
    return render_clip(scene, K, T_wc, stamps, W, H)


def test_visibility_occlusion_and_out_of_view():
    c = _occlusion_clip()
    assert c.moving[1] and (c.instance[0] == 1).any() and (c.instance[1] == 1).any()
    bg0 = c.instance[0] == 0
    # the ball moved in front of wall points seen in frame 0
    P, vis = c.points_at(0, 1)
    uv, z = c.project(1, P)
    ui, vi = np.rint(uv).astype(int).transpose(2, 0, 1)
    hidden = bg0 & (c.instance[1][vi, ui] == 1)
    assert hidden.sum() > 50 and not vis[hidden].any()
    assert vis[bg0 & ~hidden].all()
    # the ball's own points: its front is visible, and it moved by the GT translation
    ball0 = c.instance[0] == 1
    np.testing.assert_allclose(P[ball0] - c.points_world(0)[ball0],
                               np.broadcast_to([1.2, 0, 0], (ball0.sum(), 3)), atol=1e-9)
    assert vis[ball0].any()
    # yawed camera: points projecting outside image 2 are not visible
    P, vis = c.points_at(0, 2)
    uv, z = c.project(2, P)
    outside = (uv[..., 0] < -0.5) | (uv[..., 0] > W - 0.5) | (uv[..., 1] < -0.5) \
        | (uv[..., 1] > H - 0.5) | (z <= 0)
    assert outside.sum() > 100 and not vis[outside].any()
    assert vis[~outside].sum() > 100


def test_positions_at_time(clip):
    P, _ = clip.points_at(2, 7)
    np.testing.assert_allclose(clip.positions_at_time(2, float(clip.stamps[7])), P, atol=1e-9)
    P_half = clip.positions_at_time(2, 0.45)
    # interpolated poses (no scene) are close to the exact trajectory between frames
    exact = clip.object_poses_at(0.45)
    scene, clip.scene = clip.scene, None
    try:
        interp = clip.object_poses_at(0.45)
        np.testing.assert_allclose(clip.positions_at_time(2, 0.45), P_half, atol=0.05)
    finally:
        clip.scene = scene
    np.testing.assert_allclose(interp, exact, atol=0.05)


def test_clip_format_round_trip(clip, tmp_path):
    write_clip(clip, tmp_path / 'c')
    back = read_clip(tmp_path / 'c')
    assert len(back) == len(clip) and back.fps == clip.fps and back.seed == clip.seed
    np.testing.assert_array_equal(back.rgb, clip.rgb)
    np.testing.assert_array_equal(back.depth, clip.depth)
    np.testing.assert_array_equal(back.instance, clip.instance)
    np.testing.assert_array_equal(back.T_wo, clip.T_wo)
    np.testing.assert_array_equal(back.moving, clip.moving)
    np.testing.assert_array_equal(back.T_wc[0], np.eye(4))
    np.testing.assert_allclose(back.T_wc, clip.T_wc, atol=1e-12)
    np.testing.assert_allclose(back.K, clip.K, rtol=1e-15)
    np.testing.assert_allclose(back.stamps, clip.stamps, rtol=1e-15)
    assert back.info['config']['seed'] == clip.seed
    # the scene comes back: casting rays gives the same hits
    pix = np.array([[10.3, 20.7], [50.0, 40.0]])
    for a, b in zip(back.cast_rays(3, pix), clip.cast_rays(3, pix)):
        np.testing.assert_allclose(a, b, atol=1e-9)
    for name in ('rgb', 'depth', 'instance'):
        np.testing.assert_array_equal(getattr(back, name), getattr(clip, name))


def test_clip_format_errors(clip, tmp_path):
    with pytest.raises(FileNotFoundError, match='meta.json'):
        read_clip(tmp_path)
    d = write_clip(clip, tmp_path / 'c')
    (d / 'depth' / '000004.npy').unlink()
    with pytest.raises(FileNotFoundError, match='000004.npy'):
        read_clip(d)
    meta = json.loads((d / 'meta.json').read_text())
    meta['version'] = 99
    (d / 'meta.json').write_text(json.dumps(meta))
    with pytest.raises(ValueError, match='version'):
        read_clip(d)
    meta['format'] = 'other'
    (d / 'meta.json').write_text(json.dumps(meta))
    with pytest.raises(ValueError, match='meta.json'):
        read_clip(d)


def test_generation_time():
    t0 = time.perf_counter()
    c = generate_clip(SceneConfig(frames=24, width=256, height=192, seed=0))
    dt = time.perf_counter() - t0
    print(f'\nsynthetic: 24-frame 256x192 clip ({c.num_objects} objects) in {dt:.2f} s')
    assert len(c) == 24
