"""`fourd train`: a short 2-process DistributedDataParallel run (gloo on the CPU) and resuming."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from fourd_ros.core.model.checkpoint import load_model, read_checkpoint

TINY = ['--scenes', '4', '--val-scenes', '1', '--batch', '1', '--frames', '3',
        '--train-size', '64x48', '--threads', '1', '--device', 'cpu', '--no-progress']


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_process_ddp_run_trains_and_exports(tmp_path) -> None:
    out = tmp_path / 'ddp'
    proc = _run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                 '--nproc_per_node', '2', '-m', 'fourd_ros.cli.main', 'train', '--out',
                 str(out), '--steps', '2', '--eval-every', '2', *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, meta = load_model(out / 'model.pt')
    assert meta['world_size'] == 2 and meta['steps_done'] == 2
    assert read_checkpoint(out / 'last.pt')['step'] == 2
    # both ranks rendered their share of the scenes
    assert len(list((out / 'clips').glob('clip_*.npz'))) == 5


def test_training_resumes_from_its_last_checkpoint(tmp_path) -> None:
    out = tmp_path / 'single'
    base = [sys.executable, '-m', 'fourd_ros.cli.main', 'train', '--out', str(out),
            '--eval-every', '1', *TINY]
    first = _run(base + ['--steps', '2'])
    assert first.returncode == 0, first.stderr[-3000:]
    w2 = read_checkpoint(out / 'last.pt')['model']
    second = _run(base + ['--steps', '3'])
    assert second.returncode == 0, second.stderr[-3000:]
    state = read_checkpoint(out / 'last.pt')
    assert state['step'] == 3  # one more step, not three from scratch
    assert any(not torch.equal(w2[k], state['model'][k]) for k in w2)
    assert (out / 'log.jsonl').read_text().count('\n') == 3


def test_init_grows_an_older_checkpoint_that_first_computes_what_it_did(tmp_path) -> None:
    """`fourd train --init OLD --motion-prior`: the motion head's new input channels start at
    zero, so before any step the grown model decodes exactly what the old one did."""
    from fourd_ros.core.model.checkpoint import load_grown_model, save_checkpoint
    from fourd_ros.core.model.config import ModelConfig
    from fourd_ros.core.model.s4rc import S4RC

    torch.manual_seed(0)
    cfg = ModelConfig(width=64, height=48, dim=32, heads=2, blocks=1, motion_layers=1,
                      planes=8, feat8=8)
    old = S4RC(cfg).eval()
    torch.nn.init.normal_(old.motion_out.weight, std=0.1)  # a head that predicts something
    path = tmp_path / 'old.pt'
    save_checkpoint(path, old, {})
    grown = load_grown_model(path, 'cpu', motion_prior=True).eval()
    assert grown.config.motion_prior and not old.config.motion_prior
    rgb, K = torch.rand(1, 3, 48, 64), torch.tensor([[[50.0, 0, 31.5], [0, 50.0, 23.5],
                                                      [0, 0, 1]]])
    with torch.no_grad():
        a = [old.encode(rgb, K, torch.tensor([t]), [], None, t == 0).latent for t in (0.0, 0.1)]
        b = [grown.encode(rgb, K, torch.tensor([t]), [], None, t == 0).latent for t in (0.0, 0.1)]
        assert torch.allclose(old.motion(*a)[0], grown.motion(*b)[0], atol=1e-6)
