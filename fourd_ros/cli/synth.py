"""`fourd synth`: render a procedural dynamic clip with exact ground truth and write it to disk."""

from __future__ import annotations

import argparse
import time

from fourd_ros.cli.common import positive_int, range_arg, size_arg
from fourd_ros.core.data.clip_format import write_clip
from fourd_ros.core.data.synthetic import CAMERA_MOTIONS, generate_clip, SceneConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'synth', help='render a synthetic dynamic clip with exact ground truth',
        description='Render a procedural scene (textured room, moving rigid objects, moving '
                    'camera) with exact depth, poses and 3D motion, in the fourd_synthetic_clip '
                    'format that `fourd run/eval --input` read.')
    p.add_argument('--out', required=True, help='output folder (created; files overwritten)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    p.add_argument('--frames', type=positive_int, default=24, help='number of frames (24)')
    p.add_argument('--size', type=size_arg, default=(256, 192), metavar='WxH',
                   help='image size in pixels (256x192)')
    p.add_argument('--fps', type=float, default=10.0, help='frame rate, Hz (10)')
    p.add_argument('--objects', type=range_arg, default=(1, 4), metavar='MIN-MAX',
                   help='number of rigid objects, inclusive range (1-4)')
    p.add_argument('--camera', choices=CAMERA_MOTIONS, default='smooth',
                   help='camera motion (smooth)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    w, h = args.size
    if args.frames < 1:
        raise ValueError('--frames must be at least 1')
    if args.fps <= 0:
        raise ValueError('--fps must be > 0')
    cfg = SceneConfig(frames=args.frames, width=w, height=h, seed=args.seed, fps=args.fps,
                      num_objects=tuple(args.objects), camera_motion=args.camera)
    t0 = time.perf_counter()
    clip = generate_clip(cfg)
    t1 = time.perf_counter()
    out = write_clip(clip, args.out)
    t2 = time.perf_counter()
    moving = int(clip.moving[1:].sum())
    dyn = float(sum(clip.dynamic_mask(i).mean() for i in range(len(clip))) / len(clip))
    print(f'wrote {len(clip)} frames {w}x{h} at {clip.fps:g} Hz to {out} '
          f'(seed {args.seed}, camera {args.camera}, {clip.num_objects} objects, {moving} moving, '
          f'{100 * dyn:.1f}% dynamic pixels; render {t1 - t0:.1f} s, write {t2 - t1:.1f} s)')
    return 0
