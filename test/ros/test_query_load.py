"""Which calls of a planner-like query load count as lost (`query_load.lost_calls`): the node
answers its queries in arrival order, so a call still open while a later one was answered a
while ago was lost on the way and is sent again."""

from __future__ import annotations

import pytest

pytest.importorskip('rclpy')

from fourd_ros.ros.query_load import lost_calls  # noqa: E402

pytestmark = pytest.mark.ros


def test_a_call_passed_by_an_older_answer_is_lost() -> None:
    now = 100.0
    # calls 0 and 1 open, call 2 answered 6 s ago: 0 and 1 were lost
    assert lost_calls([None, None, 94.0], now, quiet_s=5.0) == [0, 1]
    # the answer to a later call is younger than quiet_s: the open call may still be queued
    assert lost_calls([None, 98.0], now, quiet_s=5.0) == []
    # open calls after the newest answer are still in flight; one before it is lost
    assert lost_calls([90.0, None, 91.0, None, None], now, quiet_s=5.0) == [1]
    assert lost_calls([], now, quiet_s=5.0) == [] and lost_calls([None], now, 5.0) == []
