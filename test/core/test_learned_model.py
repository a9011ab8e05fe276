"""The S-4RC model and its checkpoints: causality, flat per-frame work, loading errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fourd_ros.core.model import ModelConfig, S4RC, SourceViews
from fourd_ros.core.model.checkpoint import (CheckpointError, DEFAULT_CHECKPOINT, load_model,
                                             save_checkpoint)

SMALL = ModelConfig(width=64, height=48, dim=32, heads=2, blocks=2, motion_layers=1,
                    planes=8, feat8=8)


@pytest.fixture(scope='module')
def model() -> S4RC:
    torch.manual_seed(0)
    return S4RC(SMALL).eval()


def _frames(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(1, 3, 48, 64, generator=g) for _ in range(n)]


K = torch.tensor([[[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]])


def _stream(model: S4RC, frames: list[torch.Tensor], context_frames: int = 3):
    latents, outs = [], []
    with torch.inference_mode():
        for i, rgb in enumerate(frames):
            ctx = latents[-context_frames:]
            src = None
            if ctx:
                T = torch.eye(4).repeat(1, 1, 1, 1)
                T[..., 0, 3] = -0.05
                src = SourceViews(gray=ctx[-1].gray[:, None], T_src_ref=T)
            out = model.encode(rgb, K, torch.tensor([0.1 * i]), ctx, src, is_anchor=i == 0)
            latents.append(out.latent)
            outs.append(out)
    return latents, outs


def test_outputs_of_a_frame_do_not_change_when_later_frames_arrive(model) -> None:
    frames = _frames(8)
    short_lat, short = _stream(model, frames[:4])
    snapshot = [t.clone() for t in short_lat[3].tensors()]
    long_lat, long = _stream(model, frames)
    for a, b in zip(short, long[:4]):
        assert torch.equal(a.depth, b.depth) and torch.equal(a.T_anchor_cam, b.T_anchor_cam)
    # pushing later frames never touches a cached latent (nothing of a past frame is recomputed)
    for before, now in zip(snapshot, long_lat[3].tensors()):
        assert torch.equal(before, now)
    # and the motion head decodes from cached latents only
    with torch.inference_mode():
        d1, _ = model.motion(short_lat[1], short_lat[3])
        d2, _ = model.motion(long_lat[1], long_lat[3])
    assert torch.equal(d1, d2)


@pytest.mark.parametrize('anchor_and_keyframes', [False, True])
def test_per_frame_attention_is_bounded_by_the_context_not_the_stream(
        model, anchor_and_keyframes: bool) -> None:
    """Through the real backend and engine: frame 40 attends to as many cached keys/values as
    frame 3 (the last 3 frames; or also the anchor and 2 keyframes), while the cache holds
    many more frames."""
    from fourd_ros.core.backends.learned import LearnedBackend, LearnedConfig
    from fourd_ros.core.data.synthetic import generate_clip, SceneConfig
    from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
    clip = generate_clip(SceneConfig(frames=12, width=64, height=48, seed=4, fps=30.0))
    config = LearnedConfig(context_anchor=True, context_keyframes=2) if anchor_and_keyframes \
        else LearnedConfig()
    engine = StreamingEngine(LearnedBackend(model=model, config=config), EngineConfig(width=0))
    counts = []
    for k in range(40):
        i = k % 12 if (k // 12) % 2 == 0 else 11 - k % 12  # ping-pong, increasing stamps
        f = clip.frame(i)
        f.stamp = k / 30.0
        counts.append(engine.process(f).extras['attended_tokens'])
    tokens = SMALL.tokens + 2  # patch tokens + camera token + time token
    print('attended frames per frame:', [c // tokens for c in counts])
    assert counts[:4] == [tokens, 2 * tokens, 3 * tokens, 4 * tokens]
    if anchor_and_keyframes:
        # then the anchor too, then up to 2 keyframes
        assert counts[4] == 5 * tokens
        assert max(counts) == counts[-1] == 7 * tokens and len(set(counts[-10:])) == 1
    else:
        assert set(counts[3:]) == {4 * tokens}
    assert len(engine.cache) >= 30  # the cache is far larger than what a frame attends to


def test_motion_head_predicts_dense_displacements(model) -> None:
    lat, _ = _stream(model, _frames(2))
    with torch.inference_mode():
        dP, conf = model.motion(lat[0], lat[1])
    assert dP.shape == (1, 3, 6, 8) and conf.shape == (1, 1, 6, 8)
    assert torch.all(conf >= 1)


def test_checkpoint_round_trip_keeps_config_and_weights(model, tmp_path) -> None:
    path = save_checkpoint(tmp_path / 'm.pt', model, {'note': 'test'})
    loaded, meta = load_model(path)
    assert loaded.config == SMALL and meta == {'note': 'test'}
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize('damage', ['missing', 'truncated', 'garbage', 'foreign', 'config',
                                    'weights'])
def test_bad_checkpoints_give_one_clear_error_naming_the_file(model, tmp_path, damage) -> None:
    path = tmp_path / f'{damage}.pt'
    if damage != 'missing':
        save_checkpoint(path, model)
    if damage == 'truncated':
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == 'garbage':
        path.write_bytes(b'not a checkpoint at all' * 100)
    elif damage == 'foreign':
        torch.save({'state_dict': model.state_dict()}, path)
    elif damage in ('config', 'weights'):
        payload = torch.load(path, weights_only=True)
        if damage == 'config':
            payload['config']['dim'] = 48  # weights no longer fit the architecture
        else:
            payload['config']['wings'] = 2
        torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    text = str(err.value)
    assert str(path) in text and '\n' not in text
    expected = {'missing': 'not found', 'truncated': 'unreadable', 'garbage': 'unreadable',
                'foreign': 'not an S-4RC checkpoint', 'config': 'do not match',
                'weights': 'bad model config'}[damage]
    assert expected in text


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / 'evil.pt'
    torch.save({'format': 'fourd_ros.s4rc', 'payload': np.float64}, path)
    with pytest.raises(CheckpointError, match='unreadable'):
        load_model(path)


def test_the_shipped_checkpoint_loads() -> None:
    assert DEFAULT_CHECKPOINT.is_file(), f'default checkpoint missing: {DEFAULT_CHECKPOINT}'
    assert DEFAULT_CHECKPOINT.stat().st_size <= 25 * 2**20
    model, meta = load_model()
    assert meta.get('steps_done', 0) > 0 and 'train' in meta
