"""fourd_node soaked with frames (real processes over DDS): after warm-up its resident memory
grows by no more than its cache budget, and the cache stays within it. A reduced size runs here;
`scripts/soak_node.py` runs 3,000 frames and plots them (docs/measurements.md).

Whether the per-frame time drifts up is a benchmark figure (`fourd bench --report`, the soak's
last/first latency ratio), not asserted here: on a shared 2-core CI machine the ratio of an
800-frame run swung 0.9-1.13 with no change to the code (timed tests are not tests)."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip('rclpy')

from fourd_ros.ros.node_soak import NodeSoak, soak_figures  # noqa: E402
from test_node import node_args  # noqa: E402

pytestmark = pytest.mark.ros


def test_node_soak_stays_bounded(ros_context, start_process) -> None:
    # the cache reaches its steady size (9.5 MiB at this resolution: it evicts by frame count
    # from about frame 150) before the verdict's baseline at frame 200; a budget of 8 MiB made
    # it evict by size too, and RSS then grew 1.8-10.7 MiB over the 600 frames in CI runs
    # (allocator churn; 4.7-6.3 MiB at 16). The 3,000-frame soak grows 1.4 MiB after warm-up
    budget = 16.0
    proc = start_process(*node_args('image_qos:=reliable', f'cache_budget_mb:={budget}',
                                    'diagnostics_period:=0.1', 'processing_width:=0'),
                         name='node')
    node = rclpy.create_node('soak_driver', context=ros_context)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    soak = NodeSoak(node, lambda t: executor.spin_once(timeout_sec=t), proc.pid)
    # 800 frames: the node's median processing time swings by up to 30 % over a few hundred
    # frames (tracks and segments come and go); quarters of a 400-frame run were too short to
    # average that out (1.28 once in five runs)
    trace = soak.run(800, sample_every=25)
    figures = soak_figures(trace, budget)
    print(figures, trace.processing_ms, trace.rss_mb)
    # a frame whose cloud never comes was rejected: its depth image had not arrived 0.2 s
    # after it (logged; 0-0.6 % of frames here). The soak is about memory and time per frame
    assert trace.timeouts <= 0.01 * figures['frames'], figures
    assert max(trace.cache_mb) <= budget, trace.cache_mb
    assert figures['soak_rss_growth_mb'] <= budget, figures
    executor.shutdown()
    node.destroy_node()
