"""Metres for a monocular camera from the floor and the camera's known height
(`fourd_ros.core.backends.ground_scale`, the learned backend with `Frame.ground`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fourd_ros.core.backends.ground_scale import fit_floor, floor_pixels
from fourd_ros.core.data.synthetic import generate_clip, SceneConfig
from fourd_ros.core.geometry import invert_pose, unproject_depth
from fourd_ros.core.types import GroundPlane, PointStatus

# a ground robot's camera (fixed height, pitched down, planar path); development seed
GROUND = SceneConfig(frames=60, width=256, height=192, seed=2, fps=30.0,
                     camera_motion='ground')


@pytest.fixture(scope='module')
def clip():
    return generate_clip(GROUND)


def true_floor(clip, i: int) -> np.ndarray:
    """H x W bool: frame i's pixels on the room's floor."""
    room = clip.scene.room
    p = clip.points_world(i) @ invert_pose(room.T_wr)[:3, :3].T + invert_pose(room.T_wr)[:3, 3]
    return np.abs(p[..., 1] - room.half_extents[1]) < 1e-3


def exact_flow(clip, i: int, j: int) -> np.ndarray:
    """H x W x 2 flow from frame i to frame j of a static scene point (the floor's is exact)."""
    uv, _ = clip.project(j, clip.points_world(i))
    v, u = np.mgrid[0:clip.height, 0:clip.width]
    return np.stack([uv[..., 0] - u, uv[..., 1] - v], axis=-1).astype(np.float32)


def test_the_camera_height_is_read_from_the_floor_motion_in_any_map_units(clip) -> None:
    i, j = 20, 12
    ground = clip.ground_plane(i)
    floor = true_floor(clip, i)
    assert floor.sum() > 1000
    T_ref_cur = invert_pose(clip.T_wc[j]) @ clip.T_wc[i]
    for units_per_metre in (0.37, 1.0, 4.2):
        T = T_ref_cur.copy()
        T[:3, 3] *= units_per_metre
        fit = fit_floor(exact_flow(clip, i, j), clip.K, T, ground.up, floor)
        assert fit is not None and fit.pixels == floor.sum()
        # 1 / height in map units
        assert ground.height * units_per_metre * fit.inverse_height == pytest.approx(1.0, abs=1e-3)
        assert fit.inlier_share > 0.99 and fit.rel_error < 1e-3
    # no translation: the floor's motion says nothing of its distance
    still = T_ref_cur.copy()
    still[:3, 3] = 0.0
    assert fit_floor(exact_flow(clip, i, j), clip.K, still, ground.up, floor) is None


def test_flow_outliers_on_the_floor_do_not_move_the_height(clip) -> None:
    i, j = 30, 22
    ground = clip.ground_plane(i)
    floor = true_floor(clip, i)
    flow = exact_flow(clip, i, j)
    rng = np.random.default_rng(0)
    bad = floor & (rng.random(floor.shape) < 0.25)
    flow[bad] += rng.uniform(-20, 20, (int(bad.sum()), 2)).astype(np.float32)
    fit = fit_floor(flow, clip.K, invert_pose(clip.T_wc[j]) @ clip.T_wc[i], ground.up, floor)
    assert ground.height * fit.inverse_height == pytest.approx(1.0, abs=0.03)
    assert 0.6 < fit.inlier_share < 0.85


def test_floor_pixels_are_the_floor(clip) -> None:
    for i in (0, 30, 59):
        ground = clip.ground_plane(i)
        found = floor_pixels(unproject_depth(clip.depth[i], clip.K), ground.up,
                             np.ones(clip.depth[i].shape, bool), 25.0)
        truth = true_floor(clip, i)
        # the normals' 4-pixel differences cost the floor's edges
        assert (found & truth).sum() / (found | truth).sum() > 0.85, i
        # a known height (metres) picks the same pixels
        known = floor_pixels(unproject_depth(clip.depth[i], clip.K), ground.up,
                             np.ones(clip.depth[i].shape, bool), 25.0, ground.height)
        assert (known & truth).sum() / (known | truth).sum() > 0.85, i


def test_a_ground_plane_needs_a_direction_and_a_height() -> None:
    with pytest.raises(ValueError, match='height'):
        GroundPlane(up=np.zeros(3), height=1.0)
    with pytest.raises(ValueError, match='height'):
        GroundPlane(up=np.array([0.0, -1.0, 0.0]), height=0.0)
    plane = GroundPlane(up=np.array([0.0, -2.0, 0.0]), height=0.5)
    assert np.allclose(plane.up, [0, -1, 0])


@pytest.mark.slow
def test_learned_backend_is_metric_on_a_ground_robot(clip) -> None:
    from fourd_ros.core.backends import factory
    from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine

    def run(with_ground: bool) -> tuple[list[bool], np.ndarray]:
        engine = StreamingEngine(factory.make_backend('learned', device='cpu'),
                                 EngineConfig(width=0))
        metric, ratio, ids = [], [], []
        for i in range(len(clip)):
            frame = clip.frame(i)
            if not with_ground:
                frame = dataclasses.replace(frame, ground=None)
            result = engine.process(frame)
            assert result.metric == engine.metric
            metric.append(result.metric)
            ids.append(set(engine.track_snapshot().ids.tolist()))
            if len(metric) > 1 and metric[-1] != metric[-2]:
                # the tracks (old units) start again, under new ids
                assert ids[-1] and min(ids[-1]) > max(set().union(*ids[:-1]))
                switch = frame.stamp
            if with_ground and any(metric) and i == metric.index(True) + 2:
                # a query spanning the switch to metres is refused (the earlier frames keep
                # their up-to-scale positions); one after it is answered
                pixels = np.array([[128.0, 150.0], [60.0, 170.0]])
                across = engine.query_pixels(clip.frame(i - 4).stamp, pixels)
                assert (across.status == PointStatus.OUT_OF_WINDOW).all(), across.message
                assert 'switch to metres' in across.message, across.message
                after = engine.query_pixels(switch, pixels)
                assert (after.status == PointStatus.VALID).any(), after.message
                # the camera path starts again in metres
                assert [s for s, _ in engine.trajectory()] == [
                    clip.frame(k).stamp for k in range(i - 2, i + 1)]
            ok = result.depth > 0
            ratio.append(np.median(result.depth[ok] / clip.depth[i][ok]))
        return metric, np.array(ratio)

    metric, ratio = run(True)
    first = metric.index(True)
    error = np.abs(np.log(ratio[first:]))
    print(f'ground clip: metric from frame {first}; depth / true depth (median per frame) '
          f'{ratio[first:].min():.3f}-{ratio[first:].max():.3f}, |log| median '
          f'{np.median(error):.3f}')
    # measured: metric from frame 13, |log| median 0.03 (max 0.17 at the first frames)
    assert first <= 20 and all(metric[first:])
    assert np.median(error) < 0.1 and error.max() < 0.3
    metric, ratio = run(False)
    assert not any(metric)
