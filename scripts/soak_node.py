"""Soak of fourd_node (backend rgbd): frames one after the other through the running node.

    .venv/bin/python scripts/soak_node.py [--frames 3000] [--size 160x120] [--plot soak.png]

A synthetic RGB-D clip played forward and back (fourd_ros/ros/node_soak.py) goes to a
fourd_node process (its default parameters, reliable input QoS, processing at the input size),
each frame after the last one's cloud. Every 50 frames: the node's resident memory, its median
processing time over its last 100 frames and its cache size (`fourd_ros.ros.node_bench`).
Prints the figures and exits 1 when the soak fails (`fourd bench --check`'s rule: RSS growth
after warm-up above the cache budget, or processing time last/first above 1.1). Both processes
use config/fastdds.xml.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from fourd_ros.ros.node_bench import node_soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=3000)
    parser.add_argument('--size', default='160x120')
    parser.add_argument('--cache-mb', type=float, default=256.0)
    parser.add_argument('--plot', help='PNG of memory, processing time and cache size')
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split('x'))
    with tqdm(total=args.frames, desc='soak fourd_node') as bar:
        res = node_soak(args.frames, w, h, args.cache_mb, args.plot, progress=bar.update)
    for key, value in res.items():
        print(f'{key}: {value:.2f}' if isinstance(value, float) else f'{key}: {value}')
    print(f"soak check failed: {res['soak_failure']}" if res['soak_failure']
          else 'soak check passed')
    return 0 if res['soak_ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
