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
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray

REPO = Path(__file__).resolve().parents[1]


def measure(width: int, height: int, rate: float, seconds: float) -> dict[str, str]:
    """The node's last diagnostics values after `seconds` of camera frames."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(1, 100)),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / 'config' / 'fastdds.xml'))
    os.environ.update(env)
    frames = int(round(seconds * rate))
    node_proc = subprocess.Popen(
        [sys.executable, '-m', 'fourd_ros.ros.node', '--ros-args', '--params-file',
         str(REPO / 'config' / 'fourd.yaml'), '-r', 'image:=/camera/image_raw',
         '-r', 'camera_info:=/camera/camera_info', '-r', 'depth:=/camera/depth',
         '-p', 'diagnostics_period:=0.5'], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('latency_probe', context=context)
    last: dict[str, str] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(': fourd'):
                last.clear()
                last.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + 60.0
    while not last and time.monotonic() < deadline:  # the node is up
        executor.spin_once(timeout_sec=0.1)
    camera = subprocess.Popen(
        [sys.executable, '-m', 'fourd_ros.ros.synthetic_camera', '--ros-args',
         '-p', f'width:={width}', '-p', f'height:={height}', '-p', f'rate:={rate}',
         '-p', 'frames:=30', '-p', f'max_frames:={frames}'], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while last.get('frames_received', '0') == '0' and time.monotonic() < deadline + 60:
            executor.spin_once(timeout_sec=0.1)
        end = time.monotonic() + seconds + 2.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
    finally:
        for proc in (camera, node_proc):
            proc.terminate()
            proc.wait(timeout=15)
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
