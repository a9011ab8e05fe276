"""Metres for a monocular map from per-frame estimates (`fourd_ros.core.backends.metric_scale`):
the correction logic, and the learned backend on an RGB-D camera's depth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fourd_ros.core.backends.metric_scale import MetricScale, MetricScaleConfig, depth_sensor_scale


def test_metric_scale_waits_for_estimates_then_corrects_in_bounded_steps() -> None:
    cfg = MetricScaleConfig(first_estimates=3, window=5, gain=0.5, max_step=0.02)
    scale = MetricScale(cfg)
    assert scale.step(None) == 1.0 and scale.step(2.0) == 1.0 and scale.step(2.2) == 1.0
    assert not scale.metric
    first = scale.step(1.8)  # the median of the first three sets the units at once
    assert scale.metric and first == pytest.approx(2.0)
    # the map is metric now: estimates of 1 leave it
    assert scale.step(1.0) == pytest.approx(1.0, abs=1e-9)
    # a drift the floor keeps seeing is corrected (once most of the window sees it) a
    # bounded step per frame
    steps = [scale.step(1.5) for _ in range(5)]
    assert all(1.0 <= s <= np.exp(0.02) + 1e-9 for s in steps) and steps[-1] > 1.0
    # no floor in view: the map keeps its scale, and old estimates are forgotten
    assert all(scale.step(None) == 1.0 for _ in range(2 * cfg.window + 1))
    assert scale.frames_since_estimate > cfg.window
    assert scale.step(1.0) == pytest.approx(1.0)  # alone in the window now
    scale.reset()
    assert not scale.metric and scale.step(3.0) == 1.0


def test_depth_sensor_scale_is_the_median_ratio_over_usable_pixels() -> None:
    depth = np.full((20, 30), 2.0, np.float32)
    sensor = np.full((20, 30), 3.0, np.float32)
    sensor[:5] = np.nan  # holes
    sensor[5:8] = 0.0
    usable = np.ones((20, 30), bool)
    usable[:, :3] = False
    sensor[:, :3] = 100.0  # a moving object's pixels: not used
    assert depth_sensor_scale(sensor, depth, usable, 100) == pytest.approx(1.5)
    assert depth_sensor_scale(sensor, depth, usable, 10_000) is None


def test_learned_backend_takes_metres_from_a_depth_sensor() -> None:
    """`LearnedConfig.scale_from_depth`: an RGB-D camera's depth makes the learned output metric
    from the first frame (the landmarks start at the sensor's points, each depth is brought to
    the sensor's scale), the camera path included, also where the sensor has holes; without it
    the depth is ignored."""
    from fourd_ros.core.backends.learned import LearnedBackend, LearnedConfig
    from fourd_ros.core.data.synthetic import generate_clip, SceneConfig
    from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
    from fourd_ros.core.eval.metrics import ate
    clip = generate_clip(SceneConfig(frames=20, width=128, height=96, seed=3, fps=30.0))

    def run(from_depth: bool, sensed: float = 1.0) -> tuple[list[bool], list[float], float, int]:
        """The sensor's depth on the image's left `sensed` share only. Per frame: metric,
        median depth / true depth (where the sensor has none, when it has holes); the camera
        path's ATE after an SE(3) alignment (m; no scale); frames whose tracking was lost."""
        backend = LearnedBackend(device='cpu',
                                 config=LearnedConfig(scale_from_depth=from_depth))
        engine = StreamingEngine(backend, EngineConfig(width=0))
        metric, ratio, lost = [], [], 0
        for i in range(len(clip)):
            frame = clip.frame(i)
            assert frame.depth is not None
            hole = np.zeros(frame.depth.shape, bool)
            hole[:, int(sensed * frame.depth.shape[1]):] = True
            frame = dataclasses.replace(frame, depth=np.where(hole, 0.0, frame.depth))
            result = engine.process(frame)
            metric.append(result.metric)
            lost += result.extras.get('tracking_ok') is False
            ok = (result.depth > 0) & (hole if hole.any() else True)
            ratio.append(float(np.median(result.depth[ok] / clip.depth[i][ok])))
        T = np.array([T for _, T in engine.trajectory()])
        return metric, ratio, ate(T, clip.T_wc, align='se3')['ate_m'], lost

    travel = np.linalg.norm(clip.T_wc[-1][:3, 3] - clip.T_wc[0][:3, 3])
    for sensed in (1.0, 0.5):
        metric, ratio, ate_m, lost = run(True, sensed)
        print(f'learned + depth sensor on {sensed:.0%} of the image: depth / true depth '
              f'{min(ratio):.3f}-{max(ratio):.3f}, ATE SE(3) {ate_m * 1000:.1f} mm over '
              f'{travel * 1000:.0f} mm of travel')
        assert all(metric) and not lost
        # the path in metres, no scale alignment (measured: 7.6 mm, 14.2 with half the depth)
        assert ate_m < 0.06 * travel
        # where the sensor has depth the output takes its scale (measured 0.98-1.00); in its
        # holes it is the learned depth at that scale: 1.5-1.8 times too far on the first 6
        # frames (before the cost volume has parallax), 0.95-1.04 from then on
        if sensed < 1:
            assert np.all(np.abs(np.log(ratio[8:])) < 0.1)
        else:
            assert np.all(np.abs(np.log(ratio)) < 0.05)
    # a sensor that sees too little to track on (a strip of 5 %): the learned depth seeds the
    # landmarks elsewhere, so the camera is still followed (without that: tracking lost on 29
    # of the 30 frames of the same scene)
    metric, _, _, lost = run(True, 0.05)
    assert all(metric) and not lost
    metric, *_ = run(False)
    assert not any(metric)
