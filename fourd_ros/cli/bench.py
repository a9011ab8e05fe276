"""`fourd bench`: long-stream speed and memory benchmark on a synthetic ping-pong stream.

It times the engine (`fourd_ros.core.eval.engine_bench`, whose docstring lists every
figure): a short clip (``--clip-frames``) rendered once and played forward and backward for
``--frames`` frames; with ``--real DIR`` also a real sequence read from disk (``--open3d``: next
to Open3D's RGB-D odometry); ``--backend learned`` adds an unbounded-context variant.

``--report DIR`` runs something else: the soak / latency / query-load / fault report of the
engine and the running node (`fourd_ros.ros.bench_report`, needs ROS 2).
"""

from __future__ import annotations

import argparse

from fourd_ros.cli.common import (add_cache_arguments, add_metric_depth_argument,
                                  add_model_arguments, positive_int, print_table, size_arg,
                                  write_json)
from fourd_ros.core.backends.factory import STREAM_BACKENDS
from fourd_ros.core.eval.engine_bench import benchmark, EngineBench, UNITS
from fourd_ros.core.eval.soak import soak_failure


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'bench', help='long-stream latency / memory / query benchmark (synthetic stream)',
        description=__doc__.split('\n\n')[0])
    p.add_argument('--frames', type=positive_int, default=2000, help='stream length (2000)')
    p.add_argument('--size', type=size_arg, default=(320, 240), metavar='WxH',
                   help='image size = processing size (320x240)')
    p.add_argument('--backend', choices=STREAM_BACKENDS, default='rgbd',
                   help='backend to time (rgbd)')
    add_cache_arguments(p)
    # 96 rendered frames play back with a period of 190 frames, which divides 2000 - 100: the
    # first and the last 100 frames then show the same images, so their latency ratio measures
    # growth with stream length rather than a change of scene content
    p.add_argument('--clip-frames', type=positive_int, default=96, metavar='N',
                   help='frames rendered for the ping-pong stream (96: with 2000 frames the '
                        'first and last 100 frames show the same images)')
    p.add_argument('--seed', type=int, default=0, help='scene seed (0)')
    p.add_argument('--json', metavar='FILE', help='write the results as JSON')
    p.add_argument('--plot', metavar='PNG',
                   help='plot resident memory, per-frame latency and cache size over the stream')
    p.add_argument('--check', action='store_true',
                   help='soak check: exit 1 when resident memory grows by more than the cache '
                        'budget after warm-up or the latency drifts up (last/first > 1.1)')
    p.add_argument('--real', metavar='DIR',
                   help='also time a real sequence read from disk (e.g. 7-Scenes)')
    p.add_argument('--real-frames', type=positive_int, default=300, metavar='N',
                   help='frames of --real to time (300)')
    p.add_argument('--open3d', action='store_true',
                   help="with --real: also run Open3D's RGB-D odometry on the same frames")
    p.add_argument('--report', metavar='DIR',
                   help='instead: the soak / latency / query-load / fault report of the engine '
                        'and the running node (ROS 2) into DIR/report.md and DIR/report.json '
                        '(10-15 minutes on 2 cores; exit 1 when a soak, load or fault check '
                        'fails); the other options do not apply')
    p.add_argument('--quick', action='store_true',
                   help='with --report: small sizes (a check that the report works, ~2 min)')
    p.add_argument('--unbounded-frames', type=int, default=300, metavar='N',
                   help='learned: frames of the unbounded-context variant, 0 = skip (300)')
    add_model_arguments(p)
    add_metric_depth_argument(p)
    p.set_defaults(func=run)


def bench_config(args: argparse.Namespace) -> EngineBench:
    """The engine benchmark that parsed `fourd bench` options ask for."""
    return EngineBench(
        frames=args.frames, size=args.size, backend=args.backend, cache_mb=args.cache_mb,
        cache_device_mb=args.cache_device_mb, metric_depth=args.metric_depth,
        clip_frames=args.clip_frames, seed=args.seed, plot=args.plot, real=args.real,
        real_frames=args.real_frames, open3d=args.open3d,
        unbounded_frames=args.unbounded_frames, device=args.device, checkpoint=args.checkpoint)


def run(args: argparse.Namespace) -> int:
    if args.report:
        return _report(args)
    res = benchmark(bench_config(args))
    rows = [(k, v, UNITS.get(k, '')) for k, v in res.items()
            if k not in ('backend', 'size', 'plot')]
    print_table(f"fourd bench: {args.backend}, {args.frames} frames {res['size']} "
                f"(ping-pong of {res['clip_frames']} rendered frames)", rows)
    if args.json:
        print(f'results: {write_json(args.json, res)}')
    if args.plot:
        print(f"plot: {res['plot']}")
    if args.check and not res['soak_ok']:
        print(f'soak check failed: {soak_failure(res)}')
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    """`--report DIR`: the node's soak / latency / load / fault report (needs ROS 2)."""
    try:
        from fourd_ros.ros.bench_report import write_report
    except ImportError as err:
        raise ValueError(f'--report needs ROS 2 (rclpy): {err}') from err
    return write_report(args.report, quick=args.quick, device=args.device,
                        checkpoint=args.checkpoint)
