"""`fourd train`: train the S-4RC model on procedural clips (resumable; DDP under torchrun).

    fourd train --out runs/train                    # CPU or the first GPU
    torchrun --nproc_per_node 4 -m fourd_ros.cli.main train --out runs/train   # several GPUs

Running the same command again resumes from ``<out>/last.pt``. ``<out>/model.pt`` is the exported
checkpoint (weights + model config + how it was trained); ``--install`` copies it to the
package's default checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil

from fourd_ros.cli.common import positive_int, size_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fourd_ros.core.training.train import TrainConfig
    d = TrainConfig()
    p = sub.add_parser('train', help='train the learned (S-4RC) model on procedural clips',
                       description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default=d.out, help=f'run folder ({d.out}); resumes from it')
    p.add_argument('--steps', type=positive_int, default=d.steps, help=f'steps ({d.steps})')
    p.add_argument('--batch', type=positive_int, default=d.batch,
                   help=f'sub-clips per step and process ({d.batch})')
    p.add_argument('--frames', type=positive_int, default=d.frames,
                   help=f'frames per sub-clip ({d.frames})')
    p.add_argument('--lr', type=float, default=d.lr, help=f'peak learning rate ({d.lr})')
    p.add_argument('--scenes', type=positive_int, default=d.train_scenes,
                   help=f'training scenes rendered ({d.train_scenes})')
    p.add_argument('--val-scenes', type=positive_int, default=d.val_scenes,
                   help=f'validation scenes ({d.val_scenes})')
    p.add_argument('--eval-every', type=positive_int, default=d.eval_every,
                   help=f'steps between validation + checkpoint ({d.eval_every})')
    p.add_argument('--time-limit', type=float, default=0.0, metavar='MIN',
                   help='stop with a checkpoint after MIN minutes (0 = run all steps)')
    p.add_argument('--train-size', type=size_arg, default=(d.data.width, d.data.height),
                   metavar='WxH', help=f'training image size ({d.data.width}x{d.data.height})')
    p.add_argument('--scale-jitter', type=float, default=d.data.scale_jitter, metavar='LOG',
                   help='sub-clip units = the anchor median depth x exp(U(-LOG, LOG)) '
                        f'({d.data.scale_jitter}; stage 1 of the shipped recipe: 0.25)')
    p.add_argument('--scene-frames', type=positive_int, default=d.data.frames, metavar='N',
                   help=f'frames rendered per training scene ({d.data.frames})')
    p.add_argument('--max-stride', type=positive_int, default=d.data.max_stride, metavar='S',
                   help='sub-clips take every 1st .. S-th frame, as the frames rendered allow '
                   f'({d.data.max_stride})')
    p.add_argument('--source-search', type=positive_int, default=d.data.source_search, metavar='N',
                   help="N > 0: each frame's cost volume matches the previous frame and the far "
                        'source the learned backend would pick among the N frames before it '
                        "(rendered frames before the sub-clip included); 0: the sub-clip's last "
                        f'two frames ({d.data.source_search})')
    p.add_argument('--min-moving', type=float, default=d.loss.min_moving, metavar='UNITS',
                   help='a point counts among the most-moving only if it moves this much '
                        f'({d.loss.min_moving}; stage 1 of the shipped recipe: 0)')
    p.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N (auto)')
    p.add_argument('--threads', type=int, default=0, help='CPU threads per process (default)')
    p.add_argument('--seed', type=int, default=0, help='random seed (0)')
    p.add_argument('--init', default='', metavar='CKPT',
                   help='start from these weights (and their model config) instead of random')
    p.add_argument('--train-only', default='', metavar='PREFIX',
                   help="train only parameters whose names start with PREFIX (e.g. 'motion')")
    p.add_argument('--motion-prior', action='store_true', default=None,
                   help="give the motion head the scene-flow prior (default: as --init's "
                        'checkpoint, else off)')
    p.add_argument('--install', action='store_true',
                   help="copy the exported model.pt to the package's default checkpoint")
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fourd_ros.core.model.checkpoint import DEFAULT_CHECKPOINT, load_model
    from fourd_ros.core.training.data import DataConfig
    from fourd_ros.core.training.losses import LossConfig
    from fourd_ros.core.training.train import TrainConfig, train
    w, h = args.train_size
    if w % 16 or h % 16:
        raise ValueError(f'--train-size {w}x{h}: both sides must be multiples of 16')
    cfg = TrainConfig(out=args.out, steps=args.steps, batch=args.batch, frames=args.frames,
                      lr=args.lr, train_scenes=args.scenes, val_scenes=args.val_scenes,
                      eval_every=args.eval_every, time_limit_min=args.time_limit,
                      device=args.device, threads=args.threads, seed=args.seed,
                      init=args.init, train_only=args.train_only,
                      motion_prior=args.motion_prior,
                      data=dataclasses.replace(DataConfig(), width=w, height=h,
                                               scale_jitter=args.scale_jitter,
                                               frames=args.scene_frames,
                                               max_stride=args.max_stride,
                                               source_search=args.source_search),
                      loss=dataclasses.replace(LossConfig(), min_moving=args.min_moving))
    if args.frames > cfg.data.frames:
        raise ValueError(f'--frames {args.frames}: sub-clips are cut from {cfg.data.frames}-frame '
                         'scenes; use at most that many')
    export = train(cfg, progress=not args.no_progress)
    if os.environ.get('RANK', '0') == '0' and export.exists():
        load_model(export)  # the exported file must load exactly as users will load it
        print(f'exported {export}')
        if args.install:
            shutil.copyfile(export, DEFAULT_CHECKPOINT)
            print(f'installed as {DEFAULT_CHECKPOINT}')
    return 0
