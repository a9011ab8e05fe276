"""Accuracy of the learned (monocular) backend with the shipped checkpoint, end to end, on
inputs it was never trained or tuned on: held-out synthetic seeds 100-103 and the real 7-Scenes
sample (the figures in docs/measurements.md). Floors are 25 % beyond the measured figures, so a
regression fails; issue 10's targets are not met yet (AbsRel 0.20 on 7-Scenes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fourd_ros.core.data.clip_format import write_clip
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.eval.evaluate import evaluate
from shared_data import SEVEN_SCENES, needs_7scenes

# held-out seed: depth AbsRel (median-scaled) and camera ATE after a Sim(3) alignment (m), the
# worst of the runs before and after session 32's landmark seeding (session 30: three runs
# whose CPUs' floating-point kernels differ, session 28's machine and an AVX-512 machine with
# torch's AVX2 and AVX-512 kernels, `ATEN_CPU_CAPABILITY`; session 32: the new seeding on the
# AVX-512 machine, 0.199 / 1.5 cm, 0.555 / 1.9, 0.163 / 1.3, 0.114 / 3.4): the landmark
# tracker turns small differences into different camera paths (ATE 1.1-1.6 cm on seed 100;
# docs/measurements.md)
HELD_OUT = {100: (0.199, 0.0156), 101: (0.555, 0.0196), 102: (0.177, 0.013),
            103: (0.114, 0.034)}


def report(name: str, metrics: dict) -> None:
    print(f"{name}: depth AbsRel {metrics['depth_absrel']:.3f} (constant depth "
          f"{metrics['baseline_const_depth_absrel']:.3f}), ATE Sim(3) "
          f"{metrics['ate_sim3_m'] * 100:.2f} cm")


@pytest.mark.slow
@pytest.mark.parametrize('seed', sorted(HELD_OUT))
def test_held_out_synthetic_seeds(tmp_path: Path, seed: int) -> None:
    clip = generate_clip(SceneConfig(frames=48, width=256, height=192, seed=seed, fps=30.0))
    write_clip(clip, tmp_path / 'clip')
    metrics = evaluate('learned', tmp_path / 'clip', width=0, device='cpu',
                       progress=False).metrics
    report(f'seed {seed}', metrics)
    absrel, ate = HELD_OUT[seed]
    assert metrics['depth_absrel'] < 1.25 * absrel
    assert metrics['ate_sim3_m'] < 1.25 * ate


@pytest.mark.slow
@needs_7scenes
def test_seven_scenes() -> None:
    metrics = evaluate('learned', SEVEN_SCENES, device='cpu', progress=False).metrics
    report('7-Scenes', metrics)
    # measured 0.228-0.229 and 3.68 / 4.12 / 4.87 cm (the three CPU kernel variants above);
    # session 32's seeding on the AVX-512 machine 0.232, 3.69 cm
    assert metrics['depth_absrel'] < 1.25 * 0.232
    assert metrics['ate_sim3_m'] < 1.25 * 0.0487


def test_focal_from_the_camera_head_when_no_intrinsics_are_given() -> None:
    """Without intrinsics the learned backend uses the camera head's focal (of the stream's
    first frame); given intrinsics override it. Measured on the held-out seeds 100-103: 0.81-1.21
    of the true focal (docs/measurements.md, "Focal length without intrinsics")."""
    import dataclasses

    from fourd_ros.core.backends.learned import LearnedBackend
    from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
    backend = LearnedBackend(device='cpu')
    for seed in sorted(HELD_OUT):
        frame = generate_clip(SceneConfig(frames=1, width=256, height=192, seed=seed,
                                          fps=30.0)).frame(0)
        engine = StreamingEngine(backend, EngineConfig(width=0))
        given = engine.process(frame).K
        assert given[0, 0] == pytest.approx(frame.K[0, 0])
        engine.reset()
        guessed = engine.process(dataclasses.replace(frame, K=None)).K
        ratio = guessed[0, 0] / frame.K[0, 0]
        print(f'seed {seed}: camera head focal / true focal {ratio:.3f}')
        assert 0.75 < ratio < 1.33
