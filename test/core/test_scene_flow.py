"""The motion decoder's fixed scene-flow prior, on exact synthetic geometry."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from fourd_ros.core.data.synthetic import generate_clip, SceneConfig
from fourd_ros.core.geometry import invert_pose
from fourd_ros.core.model.scene_flow import motion_geometry, scene_flow_prior, static_flow


def test_static_flow_is_the_projection_of_the_depth_through_the_pose() -> None:
    K = torch.tensor([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])[None]
    depth = torch.full((1, 1, 48, 64), 2.0)
    T = torch.eye(4)[None]
    T[0, 0, 3] = -0.1  # camera moves +10 cm along x: the scene moves 5 px left
    flow = static_flow(depth, K, T)
    assert torch.allclose(flow[0, 0], torch.full((48, 64), -5.0), atol=1e-4)
    assert torch.allclose(flow[0, 1], torch.zeros(48, 64), atol=1e-4)


def test_prior_moves_moving_objects_and_leaves_static_points_at_zero() -> None:
    clip = generate_clip(SceneConfig(frames=6, width=192, height=144, seed=21, fps=10.0,
                                     num_objects=(3, 3), static_object_prob=0.0,
                                     rgb_noise_std=0.0))
    i, j = 0, 3
    gray = [cv2.cvtColor(clip.rgb[k], cv2.COLOR_RGB2GRAY) for k in (i, j)]
    T = invert_pose(clip.T_wc[j]) @ clip.T_wc[i]
    geo = motion_geometry(
        gray[0][None], gray[1][None], torch.from_numpy(clip.depth[i])[None, None].float(),
        torch.from_numpy(clip.depth[j])[None, None].float(),
        torch.from_numpy(clip.K).float()[None], torch.from_numpy(T).float()[None])
    prior = scene_flow_prior(geo, stride=1)[0, :3].permute(1, 2, 0).numpy()
    P_j, visible = clip.points_at(i, j)
    truth = (P_j - clip.points_world(i)) @ clip.T_wc[i][:3, :3]  # world -> camera-i axes
    moving = clip.dynamic_mask(i) & visible
    static = ~clip.dynamic_mask(i) & visible
    assert moving.sum() > 200
    err = np.linalg.norm(prior[moving] - truth[moving], axis=1)
    size = np.linalg.norm(truth[moving], axis=1)
    # measured: median error 0.22 x the median motion (56 % of the moving points found, the
    # rest left at zero), 99.2 % of the static points exactly zero
    print(f'scene flow prior: {np.median(err) / np.median(size):.3f} x motion, static zero '
          f'{(np.linalg.norm(prior[static], axis=1) == 0).mean():.4f}')
    assert np.median(err) < 0.27 * np.median(size)
    assert (np.linalg.norm(prior[static], axis=1) == 0).mean() > 0.97


def test_learned_backend_runs_a_model_with_the_prior_end_to_end() -> None:
    """The backend gives a `motion_prior` model its geometry (depths, poses, grey images) in
    the dynamic mask and in queries; an untrained one still answers every point."""
    from fourd_ros.core.backends.learned import LearnedBackend
    from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
    from fourd_ros.core.model.config import ModelConfig
    from fourd_ros.core.model.s4rc import S4RC
    from fourd_ros.core.types import PointStatus

    torch.manual_seed(0)
    model = S4RC(ModelConfig(width=96, height=64, dim=32, heads=2, blocks=1, motion_layers=1,
                             planes=8, feat8=8, motion_prior=True))
    clip = generate_clip(SceneConfig(frames=6, width=96, height=72, seed=5, fps=10.0))
    engine = StreamingEngine(LearnedBackend(model=model), EngineConfig(width=0))
    for i in range(len(clip)):
        engine.process(clip.frame(i))
    out = engine.query_pixels(float(clip.stamps[1]), np.array([[10.0, 10.0], [50.0, 40.0]]))
    assert len(out.status) == 2 and set(out.status) <= {int(s) for s in PointStatus}
    assert np.isfinite(out.source_positions).all()
