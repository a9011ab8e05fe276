"""fourd_lifecycle_node driven through its lifecycle by a manager over DDS (real processes):
nothing is taken before activation, a configuration that cannot work fails the transition and
leaves the node up, deactivation stops the clouds and keeps the services."""

from __future__ import annotations

import pytest

from conftest import spin_until

rclpy = pytest.importorskip('rclpy')

from fourd_ros_msgs.srv import GetTrajectory  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from test_node import call, camera_args, node_args  # noqa: E402

pytestmark = pytest.mark.ros


def test_managed_node_follows_its_transitions(ros_context, start_process) -> None:
    start_process(*camera_args(), name='camera')
    args = node_args()
    args[args.index('fourd_ros.ros.node')] = 'fourd_ros.ros.lifecycle_node'
    start_process(*args, name='node')
    node = rclpy.create_node('lifecycle_manager', context=ros_context)
    clouds: list[PointCloud2] = []
    node.create_subscription(PointCloud2, '/fourd/points', clouds.append, 10)
    change = node.create_client(ChangeState, '/fourd/change_state')
    get_state = node.create_client(GetState, '/fourd/get_state')

    def transition(tid: int) -> bool:
        return call(node, change, ChangeState.Request(transition=Transition(id=tid))).success

    def state() -> int:
        return call(node, get_state, GetState.Request()).current_state.id

    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    # a configuration that cannot work (a missing checkpoint): the transition fails, the
    # node stays up and unconfigured, and takes a corrected configuration
    params = node.create_client(SetParameters, '/fourd/set_parameters')
    answer = call(node, params, SetParameters.Request(parameters=[
        Parameter('backend', value='learned').to_parameter_msg(),
        Parameter('checkpoint', value='/no/such/model.pt').to_parameter_msg()]))
    assert all(r.successful for r in answer.results)
    assert not transition(Transition.TRANSITION_CONFIGURE)
    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    call(node, params, SetParameters.Request(parameters=[
        Parameter('backend', value='rgbd').to_parameter_msg(),
        Parameter('checkpoint', value='').to_parameter_msg()]))
    assert transition(Transition.TRANSITION_CONFIGURE)
    assert state() == State.PRIMARY_STATE_INACTIVE
    answer = call(node, params, SetParameters.Request(parameters=[
        Parameter('backend', value='learned').to_parameter_msg()]))
    assert not answer.results[0].successful and 'clean the node up' in answer.results[0].reason
    # configured, inactive: services answer, no image is taken
    trajectory = node.create_client(GetTrajectory, '/fourd/get_trajectory')
    assert not call(node, trajectory, GetTrajectory.Request()).success  # nothing processed
    spin_until(node, lambda: False, timeout=2.0)
    assert not clouds
    assert transition(Transition.TRANSITION_ACTIVATE)
    assert spin_until(node, lambda: len(clouds) >= 5, timeout=60.0)
    # deactivated: the clouds stop, the trajectory so far is still served
    assert transition(Transition.TRANSITION_DEACTIVATE)
    spin_until(node, lambda: False, timeout=1.0)
    seen = len(clouds)
    spin_until(node, lambda: False, timeout=2.0)
    assert len(clouds) == seen
    answer = call(node, trajectory, GetTrajectory.Request())
    assert answer.success and len(answer.path.poses) >= 5
    # active again, then cleaned up: services gone with the model
    assert transition(Transition.TRANSITION_ACTIVATE)
    assert spin_until(node, lambda: len(clouds) > seen, timeout=30.0)
    assert transition(Transition.TRANSITION_DEACTIVATE)
    assert transition(Transition.TRANSITION_CLEANUP)
    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    assert spin_until(node, lambda: not trajectory.service_is_ready(), timeout=10.0)
    node.destroy_node()
