"""A planner-like load on fourd_node's `~/query_motion`: calls at a fixed rate, latency of each.

`QueryLoad` is added to a test's or a script's own rclpy node. Every 1 / rate_hz seconds it
calls the service once (sizes taken in turn, e.g. 100 and 10,000 pixels), with the newest
cloud's stamp as the source (the frame the caller just saw) and the newest frame as target;
it never waits for an answer before the next call, as a planner on its own timer would not.
A call found lost (see `QueryLoad.resend_lost`) is sent once more, as a planner with a timeout
would; the figures count those re-sends.
Queries of more than `PACK_ABOVE` points use the packed fields (``points_packed``,
``packed_answer``), as the interface recommends for large queries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from fourd_ros_msgs.srv import QueryMotion
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

from fourd_ros.ros import conversions as conv

PACK_ABOVE = 1000


@dataclass
class _Call:
    size: int
    sent: float  # first send (monotonic s): a re-sent call's latency includes its loss
    future: object
    answered: float | None = None
    answer: object = None  # the QueryMotion.Response of whichever send was answered first
    resent: int = 0


@dataclass
class QueryLoadResult:
    """Figures of one load run.

    Attributes:
        calls: calls sent per query size.
        unanswered: calls without an answer (after the grace period), per size.
        resent: calls answered only after they were sent again (found lost), per size.
        failed: answered with success false, per size.
        latency_ms: p50, p95, p99 of the answered calls' round trip per size, milliseconds.
    """

    calls: dict[int, int] = field(default_factory=dict)
    unanswered: dict[int, int] = field(default_factory=dict)
    resent: dict[int, int] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)
    latency_ms: dict[int, tuple[float, float, float]] = field(default_factory=dict)


def lost_calls(answered: list[float | None], now: float, quiet_s: float) -> list[int]:
    """Indices of the calls that were lost, given their answer times (monotonic s, None = no
    answer yet) in the order they were sent.

    The node answers its queries one at a time in the order they arrive, so a call still
    without an answer while a call sent after it was answered more than `quiet_s` ago never
    reached the node or its answer never came back (Fast DDS loses a service sample on rare
    occasions under load: ros2/rmw_fastrtps#616).
    """
    lost = []
    first_later_answer = np.inf  # the earliest answer to a call sent after this one
    for k in range(len(answered) - 1, -1, -1):
        if answered[k] is not None:
            first_later_answer = min(first_later_answer, answered[k])
        elif now - first_later_answer > quiet_s:
            lost.append(k)
    return lost[::-1]


class QueryLoad:
    """Calls `service` at `rate_hz` from `node` (see module docstring).

    Args:
        node: the caller's rclpy node (spun by the caller).
        service: the query service, e.g. '/fourd/query_motion'.
        cloud_topic: the node's cloud topic, whose newest stamp is each query's source.
        sizes: pixels per query, taken in turn.
        rate_hz: calls per second (all sizes together).
        width, height: image size the pixels are drawn in (the camera's, pixels).
    """

    def __init__(self, node, service: str, cloud_topic: str, sizes: tuple[int, ...],
                 rate_hz: float, width: int, height: int) -> None:
        self.node = node
        # many calls in flight: answers must not overflow the default 10-deep response queue
        self.client = node.create_client(
            QueryMotion, service,
            qos_profile=QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        self.sizes = sizes
        self._requests = {}
        rng = np.random.default_rng(0)
        for n in sizes:
            uv = rng.uniform((0, 0), (width - 1, height - 1), (n, 2))
            points = np.column_stack([uv, np.zeros(n)])
            self._requests[n] = ((conv.pack(points), True) if n > PACK_ABOVE
                                 else (conv.to_points(points), False))
        self._stamp = None
        self._calls: list[_Call] = []
        self._running = False
        node.create_subscription(PointCloud2, cloud_topic, self._on_cloud, 5)
        self._timer = node.create_timer(1.0 / rate_hz, self._tick)

    def _on_cloud(self, msg: PointCloud2) -> None:
        self._stamp = msg.header.stamp

    def start(self) -> None:
        """Start calling. Make one call with `request` and wait for its answer first: a ready
        service can still lose the answer to a call made before the reply path is matched."""
        self._running = True

    def stop(self) -> None:
        self._running = False

    def request(self, n: int) -> QueryMotion.Request:
        """The query of `n` pixels (one of `sizes`) from the newest cloud seen."""
        request = QueryMotion.Request(query_type=QueryMotion.Request.QUERY_PIXEL,
                                      source_stamp=self._stamp)
        points, packed = self._requests[n]
        if packed:
            request.points_packed = points
            request.packed_answer = True
        else:
            request.points = points
        return request

    def has_source(self) -> bool:
        """A cloud has been seen, so there is a source stamp to query."""
        return self._stamp is not None

    def _tick(self) -> None:
        if not self._running or self._stamp is None or not self.client.service_is_ready():
            return
        n = self.sizes[len(self._calls) % len(self.sizes)]
        call = _Call(n, time.monotonic(), None)
        self._send(call)
        self._calls.append(call)

    def _send(self, call: _Call) -> None:
        call.future = self.client.call_async(self.request(call.size))
        call.future.add_done_callback(lambda future, c=call: self._on_answer(c, future))

    @staticmethod
    def _on_answer(call: _Call, future) -> None:
        if call.answered is None:
            call.answered, call.answer = time.monotonic(), future.result()

    def resend_lost(self, quiet_s: float = 5.0) -> int:
        """Send again, once, the calls `lost_calls` finds lost; returns how many."""
        lost = [k for k in lost_calls([c.answered for c in self._calls], time.monotonic(),
                                      quiet_s) if not self._calls[k].resent]
        for k in lost:
            self._calls[k].resent += 1
            self._send(self._calls[k])
        return len(lost)

    def answered_all(self) -> bool:
        """Every call has its answer (a spin condition: it re-sends lost calls first)."""
        self.resend_lost()
        return self.pending() == 0

    @property
    def sent(self) -> list[_Call]:
        return self._calls

    def pending(self) -> int:
        return sum(c.answered is None for c in self._calls)

    def unanswered_calls(self) -> list[tuple[int, int, float]]:
        """(index, size, seconds since sent) of the calls without an answer."""
        now = time.monotonic()
        return [(k, c.size, round(now - c.sent, 1)) for k, c in enumerate(self._calls)
                if c.answered is None]

    def result(self) -> QueryLoadResult:
        """Figures of the calls so far (call after a grace period for the last answers)."""
        out = QueryLoadResult()
        for n in self.sizes:
            calls = [c for c in self._calls if c.size == n]
            done = [c for c in calls if c.answered is not None]
            out.calls[n] = len(calls)
            out.unanswered[n] = len(calls) - len(done)
            out.resent[n] = sum(c.resent > 0 for c in done)
            out.failed[n] = sum(not c.answer.success for c in done)
            ms = np.array([(c.answered - c.sent) * 1e3 for c in done])
            out.latency_ms[n] = (tuple(float(np.percentile(ms, q)) for q in (50, 95, 99))
                                 if ms.size else (float('nan'),) * 3)
        return out
