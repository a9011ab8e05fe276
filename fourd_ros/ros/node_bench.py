"""Benchmarks of a running fourd_node (backend rgbd) over DDS: latency beside a camera process,
frame rate and query latency under a planner's query load, and a soak.

Each function starts its own fourd_node (and `fourd_synthetic_camera` where it needs one) as
child processes with config/fastdds.xml, drives them from a private rclpy context in this
process, stops them and returns plain figures. `fourd bench --report` and the scripts in
scripts/ call these; the pass/fail versions of the same checks are DDS tests in test/ros/.
Times in ms unless named otherwise.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from fourd_ros.core.eval.soak import plot_soak, soak_failure, soak_title
from fourd_ros.ros.conversions import fourd_status
from fourd_ros.ros.demo.processes import (Child, camera_argv, config_dir, node_argv,
                                          setup_environment, start_child, stop_children)
from fourd_ros.ros.node_soak import NodeSoak, soak_figures
from fourd_ros.ros.query_load import QueryLoad

STARTUP_TIMEOUT_S = 60.0


@dataclass
class _Probe:
    """This process's side of a benchmark: an rclpy node, its executor and the node's latest
    /diagnostics values (fourd_node's status, as strings)."""

    node: Any
    executor: Any
    children: list[Child]
    log_dir: Path
    diagnostics: dict[str, str] = field(default_factory=dict)

    def spin(self, seconds: float, until: Callable[[], bool] = lambda: False,
             step: float = 0.05) -> bool:
        """Spin for up to `seconds`; True when `until()` became true."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if until():
                return True
            self.executor.spin_once(timeout_sec=step)
        return until()

    def count(self, key: str) -> int:
        return int(self.diagnostics.get(key, '0') or 0)

    def start_camera(self, *params: str) -> None:
        self.children.append(start_child('synthetic_camera', camera_argv(*params), self.log_dir))


@contextmanager
def _probe(name: str, *node_params: str) -> Iterator[_Probe]:
    """Start fourd_node with `node_params`, wait for its first /diagnostics, yield the probe;
    stop every child process at the end."""
    config = config_dir()
    setup_environment(None, config)
    log_dir = Path(tempfile.mkdtemp(prefix=f'fourd-{name}-'))
    children = [start_child('fourd_node', node_argv(config, *node_params), log_dir)]
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name.replace('-', '_'), context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    probe = _Probe(node, executor, children, log_dir)

    def on_diag(msg: DiagnosticArray) -> None:
        found = fourd_status(msg)
        if found is not None:
            probe.diagnostics.update(found[0])

    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    try:
        if not probe.spin(STARTUP_TIMEOUT_S, lambda: bool(probe.diagnostics)):
            raise RuntimeError(f'fourd_node sent no /diagnostics within {STARTUP_TIMEOUT_S:.0f} '
                               f's (log: {children[0].log})')
        yield probe
    finally:
        stop_children(children)
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


def node_latency(width: int, height: int, rate: float, seconds: float,
                 params: tuple[str, ...] = ()) -> dict[str, float]:
    """Latency from the camera's stamp to the published cloud beside a camera process.

    The camera sends `seconds` of `width` x `height` RGB-D frames at `rate` Hz; the node runs
    with its defaults (plus `params`). Figures from the node's own /diagnostics over its last
    100 frames: latency p50/p95, processing p50 (decode + inference), frame time p50 (the
    worker's whole time per frame: processing + publishing the outputs), frames processed;
    `sent` = frames the camera published. `latency_over_processing_p50` = latency / frame
    time: a frame arriving while another is processed waits for all of that.
    """
    frames = int(round(seconds * rate))
    with _probe('latency-probe', 'diagnostics_period:=0.5', *params) as probe:
        probe.start_camera(f'width:={width}', f'height:={height}', f'rate:={rate}',
                           'frames:=30', f'max_frames:={frames}')
        probe.spin(STARTUP_TIMEOUT_S, lambda: probe.count('frames_received') > 0)
        probe.spin(seconds + 2.0)
        d = dict(probe.diagnostics)
    lat, frame = float(d.get('latency_ms_p50', 'nan')), float(d.get('frame_ms_p50', 'nan'))
    return {'width': width, 'height': height, 'rate_hz': rate, 'sent': frames,
            'processed': int(d.get('frames_processed', 0)),
            'latency_ms_p50': lat, 'latency_ms_p95': float(d.get('latency_ms_p95', 'nan')),
            'processing_ms_p50': float(d.get('processing_ms_p50', 'nan')),
            'frame_ms_p50': frame,
            'latency_over_processing_p50': lat / frame if frame > 0 else float('nan')}


def query_load(seconds: float, width: int = 320, height: int = 240,
               sizes: tuple[int, ...] = (100, 10_000), rate_hz: float = 50.0,
               drain_s: float = 180.0) -> dict[str, Any]:
    """Frame rate and query latency of the node beside a 30 Hz camera under a query load.

    `seconds` without queries, then `seconds` with `~/query_motion` called at `rate_hz`
    (`sizes` pixels in turn, source = the newest cloud, `QueryLoad`), then up to `drain_s` for
    the backlog to be answered. Returns frames/s without and with the load, and per query size
    the calls, unanswered, re-sent (found lost) and failed calls and latency p50/p95/p99 (first
    call to answer, ms).
    """
    with _probe('query-load', 'diagnostics_period:=0.5') as probe:
        load = QueryLoad(probe.node, '/fourd/query_motion', '/fourd/points', sizes, rate_hz,
                         width, height)
        probe.start_camera(f'width:={width}', f'height:={height}', 'rate:=30.0', 'frames:=30')
        probe.spin(STARTUP_TIMEOUT_S,
                   lambda: probe.count('frames_processed') > 5 and load.has_source())
        # a verified round trip first: a call made before the reply path matched can be lost
        first = load.client.call_async(load.request(sizes[0]))
        probe.spin(STARTUP_TIMEOUT_S, first.done)
        fps = []
        for loaded in (False, True):
            if loaded:
                load.start()
            start_n, start_t = probe.count('frames_processed'), time.monotonic()
            probe.spin(seconds, step=0.005)
            fps.append((probe.count('frames_processed') - start_n)
                       / (time.monotonic() - start_t))
        load.stop()
        probe.spin(drain_s, load.answered_all, step=0.005)
        result = load.result()
    out: dict[str, Any] = {'camera': f'{width}x{height} 30 Hz', 'query_rate_hz': rate_hz,
                           'fps_without_queries': fps[0], 'fps_with_queries': fps[1],
                           'fps_ratio': fps[1] / fps[0] if fps[0] > 0 else float('nan')}
    for n in sizes:
        p50, p95, p99 = result.latency_ms[n]
        out[f'queries_{n}'] = {'calls': result.calls[n], 'unanswered': result.unanswered[n],
                               'resent': result.resent[n], 'failed': result.failed[n],
                               'p50_ms': p50, 'p95_ms': p95,
                               'p99_ms': p99}
    return out


def node_soak(frames: int, width: int = 160, height: int = 120, cache_mb: float = 256.0,
              plot: str | Path | None = None,
              progress: Callable[[int], None] | None = None,
              params: tuple[str, ...] = ()) -> dict[str, Any]:
    """`frames` synthetic RGB-D frames one after the other through a fourd_node process.

    Its resident memory (/proc), median processing time and cache size every 50 frames
    (`NodeSoak`); the node runs with `params` added. Returns the figures of `soak_figures`,
    the samples ('series'), `soak_ok` and `soak_failure` (the bench's soak rule), and a PNG at
    `plot` when given.
    """
    with _probe('soak-driver', 'image_qos:=reliable', 'processing_width:=0',
                f'cache_budget_mb:={cache_mb}', 'diagnostics_period:=0.1', *params) as probe:
        soak = NodeSoak(probe.node, lambda t: probe.executor.spin_once(timeout_sec=t),
                        probe.children[0].proc.pid, (width, height))
        trace = soak.run(frames, progress=progress)
    res: dict[str, Any] = {'backend': 'rgbd (fourd_node)', 'size': f'{width}x{height}',
                           **soak_figures(trace, cache_mb)}
    res['series'] = {'frame': trace.frame, 'rss_mb': trace.rss_mb,
                     'processing_ms': trace.processing_ms, 'cache_mb': trace.cache_mb}
    res['soak_failure'] = soak_failure(res)
    res['soak_ok'] = not res['soak_failure']
    if plot:
        res['plot'] = plot_soak(
            str(plot), np.array(trace.frame), np.array(trace.rss_mb),
            np.array(trace.processing_ms), np.array(trace.cache_mb),
            soak_title(f'fourd_node soak {width}x{height}', res), cache_mb,
            'processing (ms, median of 100)')
    return res
