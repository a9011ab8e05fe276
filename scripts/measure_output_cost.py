"""What the node's per-frame outputs cost it: the worker's whole time per frame (/diagnostics
`frame_ms_p50`: decode, engine, publishing) and its processing alone (`processing_ms_p50`) with
no subscriber to the per-frame outputs, then with one subscriber on each (clouds, tracks,
markers, objects, mask, path; as RViz would), then with none again. The node builds those
messages only while someone subscribes (docs/measurements.md, session 26).

Usage: .venv/bin/python scripts/measure_output_cost.py  (about 2.5 minutes: the synthetic RGB-D
camera at 320x240, 10 Hz, backend rgbd; nothing else should run)
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(120, 200)))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(REPO / 'config' / 'fastdds.xml')

import rclpy  # noqa: E402  (after the environment it reads)
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from fourd_ros_msgs.msg import MovingObjects, TrackedPoints  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from fourd_ros.ros.demo.processes import camera_argv, node_argv  # noqa: E402

OUTPUTS = ((PointCloud2, '/fourd/points'), (TrackedPoints, '/fourd/tracks'),
           (MarkerArray, '/fourd/track_markers'), (MovingObjects, '/fourd/objects'),
           (MarkerArray, '/fourd/object_markers'), (Image, '/fourd/motion_mask'),
           (PathMsg, '/fourd/path'))


def main() -> None:
    quiet = {'stdout': subprocess.DEVNULL, 'stderr': subprocess.DEVNULL}
    procs = [subprocess.Popen([sys.executable, *camera_argv(
                 'rate:=10.0', 'width:=320', 'height:=240', 'frames:=60')], **quiet),
             subprocess.Popen([sys.executable, *node_argv(
                 REPO / 'config', 'backend:=rgbd', 'diagnostics_period:=0.5')], **quiet)]
    rclpy.init()
    node = rclpy.create_node('output_cost_probe')
    diags: list[DiagnosticArray] = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)

    def phase(label: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        values = {kv.key: kv.value for kv in diags[-1].status[0].values}
        print(f"{label:<28} frame_ms_p50 {values['frame_ms_p50']:>6}  processing_ms_p50 "
              f"{values['processing_ms_p50']:>6}  fps {values['fps']}", flush=True)

    try:
        phase('warm-up, none subscribed', 20)
        phase('no subscriber', 25)
        subs = [node.create_subscription(t, n, lambda m: None, 5) for t, n in OUTPUTS]
        phase('subscribed (settling)', 15)
        phase('every output subscribed', 25)
        for sub in subs:
            node.destroy_subscription(sub)
        phase('unsubscribed (settling)', 15)
        phase('no subscriber again', 25)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
