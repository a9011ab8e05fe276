"""The demo's /fourd/query_motion call: the request, the answer table and its summary."""

from __future__ import annotations

from collections import Counter
import math
from typing import Any

import numpy as np

from fourd_ros.core.types import PointStatus
from fourd_ros.ros.demo.messages import _stamp_ns

QUERY_FRAMES_BACK = 10
QUERY_GRID = 5


def status_name(status: int) -> str:
    """Name of a QueryMotion per-point status (the number itself when unknown)."""
    try:
        return PointStatus(status).name
    except ValueError:
        return str(status)


def _fmt_vec(v: Any) -> str:
    x, y, z = v.x, v.y, v.z
    if not all(math.isfinite(c) for c in (x, y, z)):
        return '-'
    return f'({x:+.2f}, {y:+.2f}, {z:+.2f})'


def make_query(mon: Any) -> tuple[Any, dict[str, Any]] | None:
    """QUERY_PIXEL request: 5x5 grid of a frame ~10 back, target = latest (zero stamp)."""
    from geometry_msgs.msg import Point
    if not mon.recent_points:
        return None
    pts = list(mon.recent_points)
    stamp_ns, data = pts[max(0, len(pts) - 1 - QUERY_FRAMES_BACK)]
    msg = mon.deserialize('/fourd/points', data)
    w, h = int(msg.width), int(msg.height)
    us = np.round(np.linspace(0.1, 0.9, QUERY_GRID) * (w - 1))
    vs = np.round(np.linspace(0.1, 0.9, QUERY_GRID) * (h - 1))
    pixels = np.array([(u, v) for v in vs for u in us])
    req = mon.QueryMotion.Request()
    req.source_stamp = msg.header.stamp
    req.query_type = mon.QueryMotion.Request.QUERY_PIXEL
    req.points = [Point(x=float(u), y=float(v), z=0.0) for u, v in pixels]
    req.target_frame = ''
    ctx = {'source_stamp_ns': stamp_ns, 'frames_back': len(pts) - 1 - max(
        0, len(pts) - 1 - QUERY_FRAMES_BACK), 'pixels': pixels, 'source_cloud': msg}
    return req, ctx


def query_table(resp: Any, pixels: np.ndarray) -> Any:
    from rich.table import Table
    table = Table(title=f'query_motion (frame {resp.header.frame_id or "map"}, metres)',
                  title_justify='left')
    for col in ('pixel (u, v)', 'position now', 'displacement', '|d| m', 'conf', 'status'):
        table.add_column(col, justify='right' if col in ('|d| m', 'conf') else 'left')
    for (u, v), p, d, c, s in zip(pixels, resp.positions, resp.displacements, resp.confidence,
                                  resp.status):
        norm = math.sqrt(d.x ** 2 + d.y ** 2 + d.z ** 2)
        table.add_row(f'({u:.0f}, {v:.0f})', _fmt_vec(p), _fmt_vec(d),
                      f'{norm:.3f}' if math.isfinite(norm) else '-', f'{c:.2f}',
                      status_name(int(s)))
    return table


def summarize_query(resp: Any, ctx: dict[str, Any], latency_ms: float) -> dict[str, Any]:
    status = [int(s) for s in resp.status]
    disp = np.array([[d.x, d.y, d.z] for d in resp.displacements], float).reshape(-1, 3)
    norms = np.linalg.norm(disp, axis=1)
    valid = np.isfinite(norms)
    return {
        'success': bool(resp.success), 'message': resp.message,
        'source_stamp_ns': ctx['source_stamp_ns'], 'frames_back': ctx['frames_back'],
        'target_stamp_ns': _stamp_ns(resp.header.stamp), 'frame_id': resp.header.frame_id,
        'points': len(status), 'round_trip_ms': round(latency_ms, 2),
        'status_counts': {status_name(k): v
                          for k, v in sorted(Counter(status).items())},
        'displacement_m_median': float(np.median(norms[valid])) if valid.any() else None,
        'displacement_m_max': float(np.max(norms[valid])) if valid.any() else None,
    }
