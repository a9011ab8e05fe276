"""Queries over several frames follow the flows stored frame to frame (`core/flow.py`:
`FlowLink`, `CachedFlows`, shared by the rgbd and learned backends)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from fourd_ros.core.backends.learned import LearnedBackend
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
from fourd_ros.core.flow import (CachedFlows, compose_flows, DisFlow, FlowLink, full_flow,
                                 half_flow)
from fourd_ros.core.geometry import invert_pose, project, transform_points
from fourd_ros.core.types import PointStatus


class CountingDis(DisFlow):
    """DIS that returns a constant flow and counts its calls."""

    def __init__(self, du: float) -> None:
        super().__init__()
        self.du, self.calls = du, 0

    def __call__(self, first: np.ndarray, second: np.ndarray, init=None) -> np.ndarray:
        self.calls += 1
        flow = np.zeros((*first.shape, 2), np.float32)
        flow[..., 0] = self.du
        return flow


@dataclass
class GrayLatent(FlowLink):
    """The least a backend's latent needs for `CachedFlows`."""

    gray: np.ndarray


def entry(index: int, prev_index: int, du: float | None) -> SimpleNamespace:
    """A cached frame (the fields `CachedFlows` reads) whose stored flow is ``du`` px along u."""
    h, w = 6, 8
    flow = None
    if du is not None:
        flow = np.zeros((h, w, 2), np.float16)
        flow[..., 0] = du
    latent = GrayLatent(np.zeros((h, w), np.uint8), prev_index=prev_index, flow_from_prev=flow)
    return SimpleNamespace(index=index, stamp=float(index), latent=latent, T_wc=np.eye(4),
                           K=np.array([[5.0, 0, 4], [0, 5, 3], [0, 0, 1]]),
                           points_world=np.full((h, w, 3), np.nan, np.float32))


def test_consecutive_frames_compose_their_stored_flows_without_dis() -> None:
    frames = [entry(0, -1, None), entry(1, 0, 0.5), entry(2, 1, 1.0), entry(3, 2, 0.25)]
    dis = CountingDis(9.0)
    flows = CachedFlows(dis)
    flow = flows.between(frames[0], frames[3], frames[1:3])
    # interior pixels: the three steps add up (the border replicates the last column)
    assert np.allclose(flow[:, :4, 0], 1.75) and np.allclose(flow[..., 1], 0.0)
    assert dis.calls == 0
    # a frame missing in between: one DIS pass across the gap, memoised
    flows = CachedFlows(dis)
    assert np.allclose(flows.between(frames[0], frames[3], frames[1:2]), [9.0, 0.0])
    flows.between(frames[0], frames[3], frames[1:2])
    assert dis.calls == 1
    # a stored flow that does not start at the source is not used
    assert np.allclose(flows.step(frames[1], frames[3]), [9.0, 0.0])


def test_compose_flows_follows_each_step_from_where_the_last_one_ended() -> None:
    h, w = 5, 9
    first = np.zeros((h, w, 2), np.float32)
    first[..., 0] = 2.0
    second = np.zeros((h, w, 2), np.float32)
    second[:, 4:, 1] = 1.0  # only pixels right of column 4 move down
    out = compose_flows([first, second])
    assert np.allclose(out[:, 1, :], [2.0, 0.0]) and np.allclose(out[:, 2, :], [2.0, 1.0])


@pytest.fixture(scope='module')
def dds_clip():
    """The DDS node test's scene (test/ros/test_node_learned.py)."""
    return generate_clip(SceneConfig(frames=30, width=160, height=120, seed=2, fps=30.0))


def test_learned_query_10_frames_back_finds_the_moving_objects(dds_clip) -> None:
    clip = dds_clip
    engine = StreamingEngine(LearnedBackend(device='cpu'), EngineConfig(width=0))
    for i in range(11, 28):
        engine.process(clip.frame(i))
    src, tgt = 17, 27
    P, visible = clip.points_at(src, tgt)
    v, u = np.nonzero(clip.dynamic_mask(src) & visible)
    pixels = np.stack([u, v], axis=1)[::5].astype(np.float32)
    q = engine.query_pixels(float(clip.stamps[src]), pixels, float(clip.stamps[tgt]))
    ok = q.status == PointStatus.VALID
    assert ok.mean() > 0.5
    # where the answer is seen in the target image vs where the point truly is
    seen, _ = project(transform_points(invert_pose(engine.cached_pose(float(clip.stamps[tgt]))),
                                       q.positions[ok]), clip.K)
    truth, _ = clip.project(tgt, P[v, u][::5][ok])
    err = np.linalg.norm(seen - truth, axis=1)
    print(f'moving points, 10 frames back: {np.median(err):.1f} px off (median), '
          f'{ok.sum()} VALID')
    # measured 3.7 px with the composed flows; one DIS pass across the gap: 49 px
    assert np.median(err) < 8.0


def test_flows_stored_in_half_precision() -> None:
    """`half_flow` / `full_flow` (OpenCV's conversion) give numpy's float16 and float32 values,
    rounding included."""
    flow = np.random.default_rng(1).normal(0.0, 40.0, (12, 16, 2)).astype(np.float32)
    half = half_flow(flow)
    assert half.dtype == np.float16 and half.shape == flow.shape
    np.testing.assert_array_equal(half, flow.astype(np.float16))
    back = full_flow(half)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, half.astype(np.float32))
