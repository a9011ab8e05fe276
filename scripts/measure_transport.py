"""Frames received / sent between two processes for RGB-D camera streams, with Fast DDS's
default transport and with the package's profile (config/fastdds.xml) on both sides.

    .venv/bin/python scripts/measure_transport.py [--frames 60]

For each size (320x240, 640x480) and rate (10, 30 Hz): `fourd_synthetic_camera` publishes
`--frames` RGB (rgb8) + depth (32FC1) images in its own process; this process subscribes with
the node's default QoS (sensor data: best effort) and counts what arrives. Prints a Markdown
table (docs/measurements.md quotes it).
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
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / 'config' / 'fastdds.xml'


def measure(width: int, height: int, rate: float, frames: int, profile: bool) -> tuple[int, int]:
    """(images received, depth images received) of `frames` sent; the receiving side runs in
    its own process too (Fast DDS reads its profile once per process)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(1, 100)),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    if profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(PROFILE)
    out = subprocess.run([sys.executable, __file__, '--probe', str(width), str(height),
                          str(rate), str(frames)], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    return int(out[-2]), int(out[-1])


def probe(width: int, height: int, rate: float, frames: int) -> tuple[int, int]:
    """Start the camera, count what arrives here (in this process's DDS settings)."""
    env = dict(os.environ)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('transport_probe', context=context)
    got = {'image': 0, 'depth': 0}
    node.create_subscription(Image, '/camera/image_raw',
                             lambda m: got.__setitem__('image', got['image'] + 1),
                             qos_profile_sensor_data)
    node.create_subscription(Image, '/camera/depth',
                             lambda m: got.__setitem__('depth', got['depth'] + 1),
                             qos_profile_sensor_data)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    camera = subprocess.Popen(
        [sys.executable, '-m', 'fourd_ros.ros.synthetic_camera', '--ros-args',
         '-p', f'width:={width}', '-p', f'height:={height}', '-p', f'rate:={rate}',
         '-p', 'frames:=20', '-p', f'max_frames:={frames}'],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # discovery and rendering happen before the first frame; then wait for the stream
        deadline = time.monotonic() + 120.0
        while got['image'] == 0 and got['depth'] == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        end = time.monotonic() + frames / rate + 3.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        camera.terminate()
        camera.wait(timeout=10)
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    return got['image'], got['depth']


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=60, help='frames sent per run (60)')
    parser.add_argument('--probe', nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        w, h, rate, frames = args.probe
        print(*probe(int(w), int(h), float(rate), int(frames)))
        return 0
    print('| size | rate | transport | images received / sent | depth received / sent |')
    print('|---|---|---|---|---|')
    for width, height in ((320, 240), (640, 480)):
        for rate in (10.0, 30.0):
            for profile in (False, True):
                images, depth = measure(width, height, rate, args.frames, profile)
                name = 'config/fastdds.xml' if profile else 'Fast DDS default'
                print(f'| {width}x{height} | {rate:.0f} Hz | {name} | {images} / {args.frames} '
                      f'| {depth} / {args.frames} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
