"""The learned backend's two motion thresholds with the shipped checkpoint: what it publishes as
moving (`reported_rel`) is separate from where it stops seeding landmarks and what queries
answer (`dynamic_rel`), and a mask over most of the frame does not stop the seeding
(`max_moving_share`; docs/learned-model.md step 4)."""

from __future__ import annotations

import numpy as np
import pytest

from fourd_ros.core.backends.learned import LearnedBackend, LearnedConfig
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine


@pytest.fixture(scope='module')
def clip():
    return generate_clip(SceneConfig(frames=10, width=160, height=120, seed=2, fps=30.0))


def run(clip, **config) -> tuple[StreamingEngine, list]:
    engine = StreamingEngine(LearnedBackend(device='cpu', config=LearnedConfig(**config)),
                             EngineConfig(width=0))
    return engine, [engine.process(clip.frame(i)) for i in range(len(clip))]


def test_published_motion_and_query_motion_have_their_own_thresholds(clip) -> None:
    engine, results = run(clip)
    assert any(r.dynamic_mask.any() for r in results)  # this clip's objects are seen moving
    # nothing published as moving, the queries still answer with the decoded motion
    quiet, silent = run(clip, reported_rel=1e9)
    assert not any(r.dynamic_mask.any() or r.segments.any() or r.scene_flow.any()
                   for r in silent)
    v, u = np.nonzero(clip.dynamic_mask(2))
    pixels = np.stack([u, v], axis=1)[::20].astype(np.float64)
    moved = quiet.query_pixels(float(clip.stamps[2]), pixels).displacements
    assert np.isfinite(moved).all(axis=1).mean() > 0.9
    assert (np.linalg.norm(np.nan_to_num(moved), axis=1) > 0).mean() > 0.5


def test_a_mask_over_most_of_the_frame_does_not_stop_the_seeding(clip) -> None:
    # with dynamic_rel 0 every pixel the decoder gives any motion "moves"
    _, capped = run(clip, dynamic_rel=0.0)
    _, uncapped = run(clip, dynamic_rel=0.0, max_moving_share=1.0)
    kept = [r.extras['landmarks'] for r in capped[1:]]
    starved = [r.extras['landmarks'] for r in uncapped[1:]]
    # without the cap no landmark is seeded after the first frame: they only die out
    assert all(b <= a for a, b in zip(starved, starved[1:]))
    assert kept[-1] > starved[-1]


def test_scene_flow_is_the_displacement_across_the_view_ray_that_the_flow_shows() -> None:
    from fourd_ros.core.backends.learned import lateral_displacement
    from fourd_ros.core.flow import rigid_flow
    from fourd_ros.core.geometry import make_pose, transform_points, unproject_depth
    h, w = 48, 64
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    depth = np.full((h, w), 2.0, np.float32)
    depth[:, :20] = np.nan  # no depth: no displacement
    T_ref_cur = make_pose(np.eye(3), [0.05, -0.02, 0.1])  # this camera in the reference one
    # a static scene: the flow is the camera's alone, nothing moves
    points_world = transform_points(T_ref_cur, unproject_depth(depth, K)).astype(np.float32)
    static = rigid_flow(points_world, np.eye(4), K)
    assert np.abs(lateral_displacement(depth, K, T_ref_cur, static)).max() < 1e-5
    # a point seen 3 px to the right and 2 px up in the reference frame moved by 3 x z / f and
    # -2 x z / f there, at its depth in that frame (2.1); along the ray it is taken not to move
    moved = static.copy()
    moved[30, 40] += [3.0, -2.0]
    d = lateral_displacement(depth, K, T_ref_cur, moved)
    assert np.allclose(d[30, 40], [3.0 * 2.1 / 60, -2.0 * 2.1 / 60, 0.0], atol=1e-5)
    d[30, 40] = 0.0
    assert np.abs(d).max() < 1e-5
    # only the pixels asked for are computed (the published moving ones), the rest are zero
    where = np.zeros((h, w), bool)
    where[30, 40] = where[5, 5] = True
    d = lateral_displacement(depth, K, T_ref_cur, moved + 1.0, where)
    assert np.allclose(d[30, 40], [4.0 * 2.1 / 60, -1.0 * 2.1 / 60, 0.0], atol=1e-5)
    assert np.count_nonzero(d.any(axis=-1)) == 1  # (5, 5) has no depth
