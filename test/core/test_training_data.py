"""Training sub-clips: the baselines the cost volume sees (strides of the rendered frames, and
the far source picked as the learned backend picks it)."""

from __future__ import annotations

import numpy as np
import pytest

from fourd_ros.core.data.synthetic import generate_clip, SceneConfig
from fourd_ros.core.training.data import sample_batch


@pytest.mark.parametrize('rendered, max_stride, strides', [
    (8, 3, {1}),            # 8 frames leave 5-frame sub-clips no room for another stride
    (16, 3, {1, 2, 3}),
    (16, 1, {1}),
])
def test_sub_clips_take_every_frame_up_to_max_stride(rendered, max_stride, strides) -> None:
    clip = generate_clip(SceneConfig(frames=rendered, width=32, height=32, seed=7, fps=10.0,
                                     num_objects=(0, 0)))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        batch = sample_batch([clip], rng, batch=1, frames=5, max_stride=max_stride)
        t = batch.t[0].numpy()  # seconds since the sub-clip's first frame
        seen.add(int(round(float(t[1]) * 10.0)))
        assert np.allclose(np.diff(t), t[1], atol=1e-4)
    assert seen == strides


def _frame_index(clip, rgb: np.ndarray) -> int:
    """Which rendered frame a batch image (3 x H x W in [0, 1]) is."""
    hits = [i for i in range(len(clip))
            if np.array_equal(np.round(rgb.transpose(1, 2, 0) * 255), clip.rgb[i])]
    assert len(hits) == 1
    return hits[0]


def test_far_sources_are_picked_as_the_backend_picks_them() -> None:
    """With ``source_search`` each frame's far cost-volume source is the newest of the N frames
    before it in the stream (before the sub-clip too) at least ``source_baseline`` of the
    previous frame's median depth away, else the oldest of them; its pose is that frame's."""
    clip = generate_clip(SceneConfig(frames=16, width=32, height=32, seed=7, fps=10.0,
                                     num_objects=(0, 0), camera_speed=(0.3, 0.3)))
    centres = clip.T_wc[:, :3, 3]
    rng = np.random.default_rng(1)
    search, baseline = 4, 0.03
    outside = far_not_previous = 0
    for _ in range(30):
        b = sample_batch([clip], rng, batch=1, frames=5, max_stride=1, pose_noise_deg=0.0,
                         pose_noise_rel=0.0, source_search=search, source_baseline=baseline)
        idx = [_frame_index(clip, b.rgb[0, k].numpy()) for k in range(5)]
        step = idx[1] - idx[0]
        for k in range(1, 5):
            before = [idx[k] - step * j for j in range(search, 0, -1)
                      if 0 <= idx[k] - step * j < len(clip)]        # oldest first
            far = [i for i in before if np.linalg.norm(centres[i] - centres[idx[k]])
                   >= baseline * np.median(clip.depth[idx[k] - step])]
            expected = far[-1] if far else before[0]
            got = _frame_index(clip, b.far_rgb[0, k].numpy())
            assert got == expected
            outside += got not in idx
            far_not_previous += got != idx[k - 1]
            # its pose (normalised units, anchor = the sub-clip's first frame) is the truth's
            T_true = np.linalg.inv(clip.T_wc[idx[0]]) @ clip.T_wc[got]
            T_far = b.T_far[0, k].numpy().astype(np.float64)
            s = np.linalg.norm(T_true[:3, 3]) / max(np.linalg.norm(T_far[:3, 3]), 1e-9)
            assert np.allclose(T_far[:3, :3], T_true[:3, :3], atol=1e-4)
            assert np.allclose(T_far[:3, 3] * s, T_true[:3, 3], atol=1e-4)
    assert outside > 0 and far_not_previous > 0


def test_without_source_search_batches_have_no_far_sources() -> None:
    clip = generate_clip(SceneConfig(frames=8, width=32, height=32, seed=7, fps=10.0,
                                     num_objects=(0, 0)))
    b = sample_batch([clip], np.random.default_rng(0), batch=2, frames=5)
    assert b.far_rgb is None and b.T_far is None
