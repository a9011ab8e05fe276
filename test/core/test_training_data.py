"""Training sub-clips: the baselines the cost volume sees (strides of the rendered frames)."""

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
