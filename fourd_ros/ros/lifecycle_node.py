"""fourd_lifecycle_node: fourd_node as a managed (lifecycle) node, for stacks whose lifecycle
manager (nav2's) brings nodes up in order.

Transitions (`<node>/change_state`, lifecycle_msgs): configure reads the parameters, loads the
backend's model and creates the outputs, services and diagnostics (a configuration that cannot
work fails the transition with its one-line reason, and the node stays unconfigured); activate
subscribes to the camera; deactivate stops taking images (the model, the cache and the
services stay); cleanup releases them; shutdown ends. Parameters that fourd_node reads once
(backend, checkpoint, topics' set-up) may be set while the node is unconfigured and are
refused, with the reason, once it is configured. Same inputs, outputs, services and
parameters as fourd_node (`fourd_node --help`), and `autostart` (false): true configures and
activates the node at start, for a launch without a lifecycle manager (the launch file's
`managed:=true autostart:=true`).
"""

from __future__ import annotations

import sys

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from fourd_ros.ros.node import FourdBehaviour, usage
from fourd_ros.ros.spin import run_node


class FourdLifecycleNode(FourdBehaviour, LifecycleNode):
    """The fourd node, managed (see module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__('fourd', **kwargs)
        autostart = self.declare_parameter(
            'autostart', False, ParameterDescriptor(
                description='true: configure and activate at start (no lifecycle manager)',
                read_only=True)).value
        self._declare_parameters(managed=True)
        if autostart:  # once spinning, as a manager's change_state calls would come
            self._autostart = self.create_timer(0.0, self._start_up)

    def _start_up(self) -> None:
        self._autostart.cancel()
        self.destroy_timer(self._autostart)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - any reason is reported, the node stays up
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.get_logger().error(f'configure failed: {why}')
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None) -> int:
    return run_node('fourd_lifecycle_node', FourdLifecycleNode,
                    lambda: usage().replace('fourd_node', 'fourd_lifecycle_node', 1)
                    + '\n\nmanaged node only:\n  autostart (false): true = configure and '
                    'activate at start, without a lifecycle manager', args)


if __name__ == '__main__':
    sys.exit(main())
