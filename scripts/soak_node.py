"""Soak of fourd_node (backend rgbd): frames one after the other through the running node.

    .venv/bin/python scripts/soak_node.py [--frames 3000] [--size 160x120] [--plot soak.png]

A synthetic RGB-D clip played forward and back (fourd_ros/ros/node_soak.py) goes to a
fourd_node process (its default parameters, reliable input QoS, processing at the input size),
each frame after the last one's cloud. Every 50 frames: the node's resident memory, its median
processing time over its last 100 frames and its cache size. Prints the figures and exits 1 when
the soak fails (`fourd bench --check`'s rule: RSS growth after warm-up above the cache budget,
or processing time last/first above 1.1). Both processes use config/fastdds.xml.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rclpy
from tqdm import tqdm

from fourd_ros.core.eval.soak import plot_soak, soak_failure, soak_title
from fourd_ros.ros.demo.processes import (config_dir, node_argv, setup_environment,
                                          start_child, stop_children)
from fourd_ros.ros.node_soak import NodeSoak, soak_figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=3000)
    parser.add_argument('--size', default='160x120')
    parser.add_argument('--cache-mb', type=float, default=256.0)
    parser.add_argument('--plot', help='PNG of memory, processing time and cache size')
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split('x'))
    config = config_dir()
    setup_environment(None, config)
    child = start_child('fourd_node', node_argv(
        config, 'image_qos:=reliable', 'processing_width:=0',
        f'cache_budget_mb:={args.cache_mb}', 'diagnostics_period:=0.1'),
        Path(tempfile.mkdtemp(prefix='fourd-soak-')))
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('soak_driver', context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        soak = NodeSoak(node, lambda t: executor.spin_once(timeout_sec=t), child.proc.pid, (w, h))
        with tqdm(total=args.frames, desc='soak fourd_node') as bar:
            trace = soak.run(args.frames, progress=bar.update)
    finally:
        stop_children([child])
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    res = soak_figures(trace, args.cache_mb)
    for key, value in res.items():
        print(f'{key}: {value:.2f}' if isinstance(value, float) else f'{key}: {value}')
    if args.plot:
        print('plot: ' + plot_soak(
            args.plot, np.array(trace.frame), np.array(trace.rss_mb),
            np.array(trace.processing_ms), np.array(trace.cache_mb),
            soak_title(f'fourd_node soak {w}x{h}', res), args.cache_mb,
            'processing (ms, median of 100)'))
    failure = soak_failure(res)
    print(f'soak check failed: {failure}' if failure else 'soak check passed')
    return 1 if failure else 0


if __name__ == '__main__':
    sys.exit(main())
