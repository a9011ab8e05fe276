"""The interface packages work across processes over real DDS."""

from __future__ import annotations

import time

import pytest

from conftest import PEERS, spin_until

rclpy = pytest.importorskip('rclpy')
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from fourd_ros_msgs.msg import TrackedPoints  # noqa: E402
from fourd_ros_msgs.srv import GetTrajectory, QueryMotion  # noqa: E402
from geometry_msgs.msg import Point  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

pytestmark = pytest.mark.ros


def test_interface_constants_and_fields() -> None:
    assert (TrackedPoints.TRACKED, TrackedPoints.OCCLUDED, TrackedPoints.LOST) == (0, 1, 2)
    r = QueryMotion.Response
    assert (r.VALID, r.OCCLUDED, r.OUT_OF_VIEW, r.OUT_OF_WINDOW, r.INVALID) == (0, 1, 2, 3, 4)
    assert QueryMotion.Request.QUERY_PIXEL != QueryMotion.Request.QUERY_POINT
    assert hasattr(GetTrajectory.Response(), 'path')
    msg = TrackedPoints(ids=[1, 2**63])
    assert list(msg.ids) == [1, 2**63]


def test_query_motion_across_processes(ros_context, start_process) -> None:
    start_process(str(PEERS / 'query_motion_server.py'), name='server')
    node = rclpy.create_node('query_client', context=ros_context)
    client = node.create_client(QueryMotion, '/peer/query_motion')
    assert spin_until(node, client.service_is_ready, timeout=30.0), 'service never appeared'
    request = QueryMotion.Request()
    request.query_type = QueryMotion.Request.QUERY_POINT
    request.points = [Point(x=1.0, y=2.0, z=3.0), Point(x=-1.0, y=0.0, z=0.5)]
    request.target_stamp.sec = 42
    future = client.call_async(request)
    assert spin_until(node, future.done, timeout=10.0)
    response = future.result()
    assert response.success
    assert response.header.stamp.sec == 42 and response.header.frame_id == 'map'
    assert [(p.x, p.y, p.z) for p in response.positions] == [(2.0, 2.0, 3.0), (0.0, 0.0, 0.5)]
    assert list(response.status) == [QueryMotion.Response.VALID] * 2
    node.destroy_node()


def test_tf_static_reaches_late_subscriber(ros_context, start_process) -> None:
    start_process(str(PEERS / 'tf_static_publisher.py'), name='tf_static')
    time.sleep(3.0)  # the subscriber joins after the transform was published
    node = rclpy.create_node('late_tf_listener', context=ros_context)
    received: list[TFMessage] = []
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(TFMessage, '/tf_static', received.append, qos)
    assert spin_until(node, lambda: bool(received), timeout=30.0), 'no latched /tf_static'
    t = received[0].transforms[0]
    assert (t.header.frame_id, t.child_frame_id) == ('map', 'camera_link')
    assert t.transform.translation.x == pytest.approx(1.5)
    node.destroy_node()
