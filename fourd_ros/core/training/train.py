"""The training loop behind `fourd train`: single process, or DistributedDataParallel under
torchrun (gloo on CPUs, NCCL on GPUs). Resumable: ``<out>/last.pt`` holds weights, optimiser,
step and the configs; running the same command again continues from it.

Seeds: training scenes use seeds >= 1_000_000 and validation scenes 900_000+; the evaluation
seeds of the project (0-99 development, 100-199 held out) are never rendered for training.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fourd_ros.core.jsonsafe import json_safe
from fourd_ros.core.model.checkpoint import load_grown_model, read_checkpoint, save_checkpoint
from fourd_ros.core.model.config import ModelConfig
from fourd_ros.core.model.s4rc import S4RC
from fourd_ros.core.training.data import DataConfig, load_clip, render_clips, sample_batch
from fourd_ros.core.training.losses import LossConfig, TrainingStep

TRAIN_SEED0 = 1_000_000
VAL_SEED0 = 900_000


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        out: run folder (clips cache, last.pt, model.pt, log.jsonl).
        steps: optimiser steps in all.
        batch: sub-clips per step and process.
        frames: frames per sub-clip (the encoder runs causally over them).
        context_frames: cached frames each frame attends to (as the learned backend does).
        lr: peak AdamW learning rate (cosine decay after a linear warm-up).
        train_scenes, val_scenes: scenes rendered for training / validation.
        eval_every: steps between validations (and checkpoints).
        time_limit_min: stop cleanly (with a checkpoint) after this many minutes (0 = none).
        device: 'auto', 'cpu', 'cuda', 'cuda:N' (under torchrun: each rank its local GPU).
        threads: torch CPU threads per process (0 = torch's default).
        seed: random seed of batch sampling and initialisation.
        init: start from this checkpoint's weights and model config when not resuming ('' =
            random initialisation).
        train_only: train only the parameters whose names start with this prefix ('' = all;
            'motion' = the motion head, with the encoder and geometry heads frozen).
        motion_prior: give the motion head the scene-flow prior (None = as the init
            checkpoint, or ``model``, says).
        data, model, loss: sub-configs (``model`` is the init checkpoint's when given).
    """

    out: str = 'runs/train'
    steps: int = 1800
    batch: int = 4
    frames: int = 5
    context_frames: int = 3
    lr: float = 1e-3
    train_scenes: int = 1000
    val_scenes: int = 24
    eval_every: int = 250
    time_limit_min: float = 0.0
    device: str = 'auto'
    threads: int = 0
    seed: int = 0
    init: str = ''
    train_only: str = ''
    motion_prior: bool | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)


def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 otherwise)."""
    return (int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1)),
            int(os.environ.get('LOCAL_RANK', 0)))


def _device(name: str, local_rank: int) -> torch.device:
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda':
        name = f'cuda:{local_rank}'
    return torch.device(name)


def _out_of_time(cfg: TrainConfig, t_start: float, world: int, device: torch.device) -> bool:
    """Whether the time limit is reached; under DDP rank 0 decides for all ranks (their clocks
    differ, and a rank that stops alone would hang the others in the next all-reduce)."""
    late = cfg.time_limit_min > 0 and time.monotonic() - t_start > cfg.time_limit_min * 60
    if world > 1:
        flag = torch.tensor([1.0 if late else 0.0], device=device)
        dist.broadcast(flag, src=0)
        late = bool(flag.item() > 0)
    return late


def lr_at(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@torch.no_grad()
def validate(step_module: TrainingStep, clips: list, device: torch.device, frames: int,
             data: DataConfig, batches: int = 6, batch: int = 4) -> dict[str, float]:
    """Mean losses and metrics on fixed validation batches (all points supervised), sampled
    as training samples them (`data`: stride, cost-volume sources)."""
    rng = np.random.default_rng(12345)
    step_module.eval()
    acc: dict[str, list[float]] = {}
    for _ in range(batches):
        out = step_module(sample_batch(clips, rng, batch, frames, max_stride=data.max_stride,
                                       source_search=data.source_search,
                                       source_baseline=data.source_baseline
                                       ).to(device), top_only=False)
        for k, v in out.items():
            acc.setdefault(k, []).append(float(v))
    step_module.train()
    return {f'val_{k}': float(np.mean(v)) for k, v in acc.items()}


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Run (or resume) training; returns the path of the exported weights (``model.pt``)."""
    from tqdm import tqdm

    rank, world, local_rank = _dist_info()
    device = _device(cfg.device, local_rank)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    out = Path(cfg.out)
    t_start = time.monotonic()
    # scenes: each rank renders its share, then every rank loads all of its training share
    train_seeds = [TRAIN_SEED0 + i for i in range(cfg.train_scenes)]
    val_seeds = [VAL_SEED0 + i for i in range(cfg.val_scenes)]
    mine = train_seeds[rank::world] + (val_seeds if rank == 0 else [])
    bar = tqdm(total=len(mine), desc='render scenes', disable=not progress or rank != 0,
               unit='scene')
    workers = max(1, min(8, (os.cpu_count() or 1) // world))
    render_clips(out / 'clips', mine, cfg.data, workers=workers, progress=lambda: bar.update(1))
    bar.close()
    if world > 1:
        dist.barrier()
    clips = [load_clip(out / 'clips' / f'clip_{s:06d}.npz') for s in train_seeds[rank::world]]
    val_clips = ([load_clip(out / 'clips' / f'clip_{s:06d}.npz') for s in val_seeds]
                 if rank == 0 else [])

    torch.manual_seed(cfg.seed)
    last = out / 'last.pt'
    if cfg.init:
        model = load_grown_model(cfg.init, device, cfg.motion_prior)
        cfg = dataclasses.replace(cfg, model=model.config)
    else:
        if cfg.motion_prior is not None:
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(
                cfg.model, motion_prior=cfg.motion_prior))
        model = S4RC(cfg.model).to(device)
    # stored in every checkpoint; its model config is the trained model's (grown from --init)
    train_cfg = json_safe(dataclasses.asdict(cfg))
    trained = [p for n, p in model.named_parameters() if n.startswith(cfg.train_only)]
    if not trained:
        raise ValueError(f"train_only '{cfg.train_only}' matches no parameter of the model")
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith(cfg.train_only))
    step_module = TrainingStep(model, cfg.loss, cfg.context_frames).to(device)
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=0.01)
    start_step = 0
    if last.exists():
        state = read_checkpoint(last, device)
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['optimizer'])
        start_step = int(state['step'])
    ddp = (DistributedDataParallel(step_module, device_ids=[device.index]
                                   if device.type == 'cuda' else None)
           if world > 1 else step_module)
    rng = np.random.default_rng([cfg.seed, rank, start_step])
    log = (out / 'log.jsonl').open('a') if rank == 0 else None
    bar = tqdm(total=cfg.steps, initial=start_step, desc='train', unit='step',
               disable=not progress or rank != 0)
    step = start_step
    t_last, samples = time.monotonic(), 0
    stopped_early = False
    while step < cfg.steps:
        if _out_of_time(cfg, t_start, world, device):
            stopped_early = True
            break
        for g in opt.param_groups:
            g['lr'] = lr_at(step, cfg.steps, cfg.lr)
        batch = sample_batch(clips, rng, cfg.batch, cfg.frames, max_stride=cfg.data.max_stride,
                             scale_jitter=cfg.data.scale_jitter,
                             source_search=cfg.data.source_search,
                             source_baseline=cfg.data.source_baseline).to(device)
        top_only = bool(rng.random() < cfg.loss.top_moving_prob)
        losses = ddp(batch, top_only)
        opt.zero_grad(set_to_none=True)
        losses['loss'].backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        step += 1
        samples += cfg.batch * world
        now = time.monotonic()
        bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}",
                        absrel=f'{float(losses["absrel_last"]):.3f}',
                        clips_s=f'{samples / max(1e-9, now - t_last):.1f}')
        bar.update(1)
        if rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            record = {'step': step, 'minutes': (now - t_start) / 60,
                      **{k: float(v.detach()) for k, v in losses.items()},
                      **validate(step_module, val_clips, device, cfg.frames, cfg.data)}
            log.write(json.dumps(record) + '\n')
            log.flush()
            bar.write(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                               for k, v in record.items()))
            save_checkpoint(last, model, {'train': train_cfg}, optimizer=opt.state_dict(),
                            step=step)
    bar.close()
    if stopped_early and rank == 0:
        save_checkpoint(last, model, {'train': train_cfg}, optimizer=opt.state_dict(),
                        step=step)
    export = out / 'model.pt'
    if rank == 0:
        meta = {'train': train_cfg, 'steps_done': step,
                'wall_minutes': (time.monotonic() - t_start) / 60, 'world_size': world,
                'device': str(device), 'torch': str(torch.__version__)}
        save_checkpoint(export, model, meta)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return export
