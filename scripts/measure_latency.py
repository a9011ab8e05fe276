"""Latency from the camera's stamp to the published cloud, and frames processed / sent, for
fourd_node (backend rgbd) beside a separate camera process, both with config/fastdds.xml.

    .venv/bin/python scripts/measure_latency.py [--seconds 8] [--param NAME:=VALUE ...]

For 320x240 and 640x480 RGB-D at 10 and 30 Hz: `fourd_synthetic_camera` publishes for
`--seconds`; `fourd_node` processes at its default 320-pixel width; the node's own
/diagnostics give the latency (p50, p95 over its last 100 frames), the processing time (decode
+ inference), the frame time (+ publishing the outputs) and the frames processed
(`fourd_ros.ros.node_bench`). Prints a Markdown table (docs/measurements.md quotes it;
`fourd bench --report` has the same table).
"""

from __future__ import annotations

import argparse
import sys

from fourd_ros.ros.bench_report import FULL, LATENCY_HEADER, latency_row
from fourd_ros.ros.node_bench import node_latency


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=8.0, help='camera run, s (8)')
    parser.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra fourd_node parameter (repeatable)')
    args = parser.parse_args()
    print(LATENCY_HEADER)
    for width, height, rate in FULL.cameras:
        print(latency_row(node_latency(width, height, rate, args.seconds, tuple(args.param))),
              flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
