"""Accuracy of the rgbd backend end to end (the figures in docs/measurements.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fourd_ros.core.backends.rgbd import RgbdBackend
from fourd_ros.core.data.clip_format import write_clip
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
from fourd_ros.core.eval.evaluate import evaluate
from fourd_ros.core.types import PointStatus
from shared_data import SEVEN_SCENES, needs_7scenes


# APD3D on moving points and camera ATE (mm) of every seed of the development set (tuned on)
# and of held-out seeds 100-105 (never tuned on), as measured (`scripts/measure_queries.py`,
# docs/measurements.md; deterministic). Each reference is the best build's (session 16, 19 or 21;
# session 19's mask moved some figures down, e.g. seed 6's APD3D 84.3 -> 80.6, held-out 100's
# 88.6 -> 85.6, seed 0's ATE 0.59 -> 0.62 mm, all within these floors): the floors are 80 % of
# the APD3D and 125 % of the ATE, or the ATE + 0.2 mm where that is more
MEASURED = {0: (85.1, 0.59), 1: (98.4, 0.41), 2: (98.3, 0.23), 3: (99.5, 0.3), 4: (94.5, 2.34),
            5: (98.1, 0.42), 6: (84.3, 0.58), 7: (91.7, 0.16), 8: (97.6, 2.86), 9: (96.7, 1.85),
            10: (95.8, 0.29), 11: (95.3, 0.25), 12: (93.3, 0.54), 13: (96.2, 0.18),
            14: (94.9, 2.83), 15: (84.1, 2.49), 100: (88.6, 0.42), 101: (98.1, 8.1),
            102: (84.6, 0.34), 103: (98.2, 2.39), 104: (96.6, 4.86), 105: (95.1, 0.36)}

# APD3D of every queried static and every queried moving point of the same runs, whatever their
# visibility at the target (visible, hidden, out of view; docs/measurements.md): a static point
# stays where its source frame put it, a moving one follows its object. References as above
# (the best build's); floors: 90 % (static) and 80 % (moving) of these
MEASURED_EVERY = {0: (99.8, 76.4), 1: (99.7, 97.4), 2: (99.3, 96.0), 3: (99.2, 99.5),
                  4: (99.8, 88.5), 5: (98.9, 94.0), 6: (99.2, 83.7), 7: (99.3, 90.3),
                  8: (99.0, 96.8), 9: (99.1, 96.1), 10: (99.1, 95.3), 11: (98.6, 90.6),
                  12: (98.4, 91.2), 13: (99.7, 96.3), 14: (98.3, 93.6), 15: (95.4, 73.6),
                  100: (99.3, 85.0), 101: (99.1, 96.6), 102: (98.6, 80.7), 103: (99.6, 96.5),
                  104: (98.5, 94.6), 105: (99.1, 92.3)}

# APD3D of the static points the target does not show, hidden behind something nearer / out of
# view (the same runs, session 21): they stay where they were, also beside a moving object
# whose dynamic mask held them at the source, and where the flow slid along the image border
# (before session 21: hidden 73.8-97.2, out of view 89.5-100); floors 90 % / 95 % of these
MEASURED_STATIC_UNSEEN = {0: (99.4, 100.0), 1: (96.4, 100.0), 2: (95.7, 99.6), 3: (90.3, 100.0),
                          4: (98.7, 99.3), 5: (97.4, 98.1), 6: (96.4, 99.0), 7: (96.0, 100.0),
                          8: (97.2, 100.0), 9: (87.1, 98.7), 10: (93.1, 99.5), 11: (90.6, 99.3),
                          12: (96.5, 96.2), 13: (94.7, 100.0), 14: (92.1, 99.3), 15: (84.9, 94.7),
                          100: (95.7, 99.8), 101: (97.5, 97.8), 102: (96.1, 95.2),
                          103: (97.5, 100.0), 104: (89.2, 99.8), 105: (91.4, 100.0)}


@pytest.mark.slow
@pytest.mark.parametrize('seed', sorted(MEASURED))
def test_moving_objects_apd3d(tmp_path: Path, seed: int) -> None:
    clip = generate_clip(SceneConfig(frames=48, width=256, height=192, seed=seed, fps=30.0,
                                     num_objects=(3, 5)))
    write_clip(clip, tmp_path / 'clip')
    metrics = evaluate('rgbd', tmp_path / 'clip', width=0, progress=False).metrics
    apd3d, ate_mm = MEASURED[seed]
    static_every, dynamic_every = MEASURED_EVERY[seed]
    print(f"seed {seed}: APD3D dynamic {metrics['apd3d_dynamic']:.1f}, ATE "
          f"{metrics['ate_m'] * 1e3:.2f} mm; every queried point: static "
          f"{metrics['apd3d_static_every']:.1f}, moving {metrics['apd3d_dynamic_every']:.1f}")
    assert metrics['apd3d_static_every'] >= 0.9 * static_every
    assert metrics['apd3d_dynamic_every'] >= 0.8 * dynamic_every
    hidden, out_of_view = MEASURED_STATIC_UNSEEN[seed]
    print(f"  static points hidden at the target {metrics['apd3d_static_hidden']:.1f}, out of "
          f"view {metrics['apd3d_static_out_of_view']:.1f}")
    assert metrics['apd3d_static_hidden'] >= 0.9 * hidden
    assert metrics['apd3d_static_out_of_view'] >= 0.95 * out_of_view
    # the query confidence tells good answers from bad ones: answers at >= 0.5 score higher
    # (measured 13.8-85.5 points higher on every seed, development and held out)
    print(f"  confidence >= 0.5: {metrics['apd3d_confidence_high']:.1f}, below: "
          f"{metrics['apd3d_confidence_low']:.1f}")
    assert metrics['apd3d_confidence_high'] >= metrics['apd3d_confidence_low'] + 5.0
    # the static background stays still: the camera (tracked on it) is right to millimetres
    assert metrics['ate_m'] * 1e3 < max(1.25 * ate_mm, ate_mm + 0.2)
    assert metrics['track_points_dynamic'] > 30
    assert metrics['apd3d_dynamic'] >= 0.8 * apd3d


@pytest.mark.slow
@needs_7scenes
def test_seven_scenes_pose_and_query_accuracy() -> None:
    metrics = evaluate('rgbd', SEVEN_SCENES, width=320, progress=False).metrics
    # measured 2.46 cm and 0.93 cm (deterministic; docs/measurements.md; 2.55 and 0.96 before
    # session 19): floors 25 % above
    assert metrics['ate_m'] <= 0.031
    assert metrics['track_median_err_m'] <= 0.0117


# seed, source frame, then the median errors (cm) measured for static and moving points out of
# view and for static points hidden at the target, and the share of those answered OCCLUDED
# (the error floors are 25 % above, the share's 20 % below)
@pytest.mark.parametrize('seed, source, static_cm, moving_cm, hidden_cm, hidden_occluded',
                         [(2, 18, 0.20, 0.32, 0.09, 0.98), (8, 22, 0.77, 0.75, 0.56, 0.36)])
def test_points_leaving_the_view_keep_their_positions(seed: int, source: int, static_cm: float,
                                                      moving_cm: float, hidden_cm: float,
                                                      hidden_occluded: float) -> None:
    """Query every pixel of a frame 10 frames later, where a moving object has partly left the
    view (development seeds 2 and 8, 128x96): out-of-view points carry positions, not only a
    status. Static points are placed exactly by geometry; moving points out of view move with
    their object (they used to stay at their source position: errors of 26-53 cm, now
    0.3-0.8 cm). Static points hidden at the target stay where they were: on seed 2 a moving
    object passes in front of them, and their flow followed it (median error 20.6 cm, 27 %
    OCCLUDED; now 0.09 cm, 98 %)."""
    clip = generate_clip(SceneConfig(frames=40, width=128, height=96, seed=seed, fps=30.0))
    engine = StreamingEngine(RgbdBackend(), EngineConfig(width=0))
    target = source + 10
    for k in range(target + 1):
        engine.process(clip.frame(k))
    v, u = np.mgrid[0:96, 0:128]
    answer = engine.query_pixels(clip.stamps[source], np.stack([u.ravel(), v.ravel()], 1)
                                 .astype(np.float32), clip.stamps[target])
    P, visible = clip.points_at(source, target, exact=False)
    uv, z = clip.project(target, P)
    in_view = (np.isfinite(uv).all(-1) & (z > 0) & (uv[..., 0] >= -0.5)
               & (uv[..., 0] <= 127.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] <= 95.5)).ravel()
    moving = np.isin(clip.instance[source], np.flatnonzero(clip.moving)).ravel()
    err = np.linalg.norm(answer.positions - P.reshape(-1, 3), axis=1)
    status = answer.status
    static_out = ~moving & ~in_view
    hidden = ~moving & in_view & ~visible.ravel()
    moving_out = moving & ~in_view
    print(f'seed {seed}: static out of view {static_out.sum()} px, median error '
          f'{np.median(err[static_out]) * 100:.2f} cm, OUT_OF_VIEW '
          f'{(status[static_out] == PointStatus.OUT_OF_VIEW).mean():.0%}; static hidden '
          f'{hidden.sum()} px, {np.median(err[hidden]) * 100:.2f} cm, OCCLUDED '
          f'{(status[hidden] == PointStatus.OCCLUDED).mean():.0%}; moving out of view '
          f'{moving_out.sum()} px, {np.median(err[moving_out]) * 100:.2f} cm, OUT_OF_VIEW '
          f'{(status[moving_out] == PointStatus.OUT_OF_VIEW).mean():.0%}')
    # static points out of view at the target: exact positions from the source geometry and
    # the poses, and a status that says they are not seen
    assert static_out.sum() > 20
    assert np.median(err[static_out]) < 0.0125 * static_cm
    assert (status[static_out] == PointStatus.OUT_OF_VIEW).mean() > 0.75  # measured 82, 99 %
    # moving points out of view: with their object's rigid motion
    assert moving_out.sum() > 500
    assert (status[moving_out] == PointStatus.OUT_OF_VIEW).mean() > 0.95  # measured 99, 100 %
    assert np.median(err[moving_out]) < 0.0125 * moving_cm
    # static points hidden at the target: where they were, and said to be hidden
    assert hidden.sum() > 500
    assert np.median(err[hidden]) < 0.0125 * hidden_cm
    assert (status[hidden] == PointStatus.OCCLUDED).mean() > 0.8 * hidden_occluded


@pytest.mark.parametrize('gap', [10, 15])
def test_frames_lost_in_a_stall_do_not_break_the_camera_path(gap: int) -> None:
    """A stall drops `gap` frames (a third to half a second of this fast clip, 10-25 cm of
    camera motion): the constant-velocity guess is then far off, and the path used to run away
    by metres (4.2 m ATE at gap 12, extrapolating a wrong velocity frame after frame). The
    tracker relocalises against its keyframe and the path stays at the millimetre level."""
    clip = generate_clip(SceneConfig(frames=30, width=160, height=120, seed=2, fps=30.0))
    engine = StreamingEngine(RgbdBackend(), EngineConfig(width=0))
    kept = [k for k in range(30) if not 13 <= k < 13 + gap]
    results = [engine.process(clip.frame(k)) for k in kept]
    after = kept.index(13 + gap)
    assert results[after].extras['tracking_relocalized']
    assert all(r.extras['tracking_ok'] for r in results)
    align = clip.T_wc[0] @ np.linalg.inv(results[0].T_wc)
    err = [np.linalg.norm((align @ r.T_wc)[:3, 3] - clip.T_wc[k][:3, 3])
           for r, k in zip(results, kept)]
    # measured max 3.3 mm (gaps 10 and 15)
    assert max(err) < 0.0041, np.round(np.array(err) * 1e3, 1)
