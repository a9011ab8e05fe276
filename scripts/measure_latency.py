"""Latency from the camera's stamp to the published cloud, and frames processed / sent, for
fourd_node (backend rgbd) beside a separate camera process, both with config/fastdds.xml.

    .venv/bin/python scripts/measure_latency.py [--seconds 8]

For 320x240 and 640x480 RGB-D at 10 and 30 Hz: `fourd_synthetic_camera` publishes for
`--seconds`; `fourd_node` processes at its default 320-pixel width; the node's own
/diagnostics give the latency (p50, p95 over its last 100 frames), the processing time and the
frames processed. Prints a Markdown table (docs/measurements.md quotes it).
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


def measure(width: int, height: int, rate: float, seconds: float) -> dict[str, str]:
    """The node's last diagnostics values after `seconds` of camera frames."""
    config = config_dir()
    setup_environment(None, config)
    log_dir = Path(tempfile.mkdtemp(prefix='fourd-latency-'))
    frames = int(round(seconds * rate))
    children = [start_child('fourd_node', node_argv(config, 'diagnostics_period:=0.5'),
                            log_dir)]
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('latency_probe', context=context)
    last: dict[str, str] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        found = fourd_status(msg)
        if found is not None:
            last.clear()
            last.update(found[0])

    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + 60.0
    while not last and time.monotonic() < deadline:  # the node is up
        executor.spin_once(timeout_sec=0.1)
    children.append(start_child('synthetic_camera', camera_argv(
        f'width:={width}', f'height:={height}', f'rate:={rate}', 'frames:=30',
        f'max_frames:={frames}'), log_dir))
    try:
        while last.get('frames_received', '0') == '0' and time.monotonic() < deadline + 60:
            executor.spin_once(timeout_sec=0.1)
        end = time.monotonic() + seconds + 2.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
    finally:
        stop_children(children)
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    return dict(last, sent=str(frames))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=8.0, help='camera run, s (8)')
    args = parser.parse_args()
    print('| camera | processed / sent | latency p50 / p95 (ms) | processing p50 (ms) | '
          'latency / processing (p50) |')
    print('|---|---|---|---|---|')
    for width, height in ((320, 240), (640, 480)):
        for rate in (10.0, 30.0):
            d = measure(width, height, rate, args.seconds)
            lat, proc = float(d.get('latency_ms_p50', 'nan')), float(
                d.get('processing_ms_p50', 'nan'))
            print(f"| {width}x{height} {rate:.0f} Hz | {d.get('frames_processed', '?')} / "
                  f"{d['sent']} | {lat:.0f} / {float(d.get('latency_ms_p95', 'nan')):.0f} | "
                  f'{proc:.0f} | {lat / proc:.2f} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
