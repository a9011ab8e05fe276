"""Query latency and frame rate of fourd_node (backend rgbd) under a planner's query load.

    .venv/bin/python scripts/measure_query_load.py [--seconds 15] [--width 320 --height 240]

`fourd_synthetic_camera` publishes at 30 Hz; the node processes at its default 320-pixel
width. For `--seconds` without queries, then `--seconds` with `~/query_motion` called at 50 Hz
(100- and 10,000-pixel queries in turn, source = the newest cloud, fourd_ros/ros/query_load.py),
the frames the node processed per second come from its /diagnostics
(`fourd_ros.ros.node_bench.query_load`). Both processes and this one use config/fastdds.xml.
Prints Markdown (docs/measurements.md quotes it; `fourd bench --report` has the same table).
"""

from __future__ import annotations

import argparse
import sys

from fourd_ros.ros.bench_report import query_load_lines
from fourd_ros.ros.node_bench import query_load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=15.0)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    args = parser.parse_args()
    print('\n'.join(query_load_lines(query_load(args.seconds, args.width, args.height))))
    return 0


if __name__ == '__main__':
    sys.exit(main())
