"""Query latency and frame rate of fourd_node (backend rgbd) under a planner's query load.

    .venv/bin/python scripts/measure_query_load.py [--seconds 15] [--width 320 --height 240]

`fourd_synthetic_camera` publishes at 30 Hz; the node processes at its default 320-pixel
width. For `--seconds` without queries, then `--seconds` with `~/query_motion` called at 50 Hz
(100- and 10,000-pixel queries in turn, source = the newest cloud, fourd_ros/ros/query_load.py),
the frames the node processed per second come from its /diagnostics. Both processes and this
one use config/fastdds.xml. Prints a Markdown table (docs/measurements.md quotes it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from fourd_ros.ros.conversions import fourd_status
from fourd_ros.ros.demo.processes import (camera_argv, config_dir, node_argv, setup_environment,
                                          start_child, stop_children)
from fourd_ros.ros.query_load import QueryLoad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=15.0)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    args = parser.parse_args()
    config = config_dir()
    setup_environment(None, config)
    log_dir = Path(tempfile.mkdtemp(prefix='fourd-query-load-'))
    children = [start_child('fourd_node', node_argv(config, 'diagnostics_period:=0.5'),
                            log_dir)]
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('query_load', context=context)
    last: dict[str, str] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        found = fourd_status(msg)
        if found is not None:
            last.update(found[0])

    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    load = QueryLoad(node, '/fourd/query_motion', '/fourd/points', (100, 10_000), 50.0,
                     args.width, args.height)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin(seconds: float, until=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            executor.spin_once(timeout_sec=0.005)

    try:
        spin(60.0, lambda: bool(last))
        children.append(start_child('synthetic_camera', camera_argv(
            f'width:={args.width}', f'height:={args.height}', 'rate:=30.0', 'frames:=30'),
            log_dir))
        spin(60.0, lambda: int(last.get('frames_processed', '0')) > 5 and load.has_source())
        first = load.client.call_async(load.request(load.sizes[0]))  # both directions matched
        spin(60.0, first.done)
        fps = []
        for loaded in (False, True):
            if loaded:
                load.start()
            start_n, start_t = int(last['frames_processed']), time.monotonic()
            spin(args.seconds)
            fps.append((int(last['frames_processed']) - start_n) / (time.monotonic() - start_t))
        load.stop()
        spin(180.0, lambda: load.pending() == 0)  # the backlog drains after the load stops
        result = load.result()
    finally:
        stop_children(children)
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    print(f'camera {args.width}x{args.height} at 30 Hz; frames processed per second: '
          f'{fps[0]:.2f} without queries, {fps[1]:.2f} with queries at 50 Hz '
          f'(ratio {fps[1] / fps[0]:.2f})\n')
    print('| query size (pixels) | calls | unanswered | failed | latency p50 / p95 / p99 (ms) |')
    print('|---|---|---|---|---|')
    for n in load.sizes:
        p50, p95, p99 = result.latency_ms[n]
        print(f'| {n} | {result.calls[n]} | {result.unanswered[n]} | {result.failed[n]} | '
              f'{p50:.1f} / {p95:.1f} / {p99:.1f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
