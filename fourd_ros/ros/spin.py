"""Process entry point shared by the package's nodes: `--help`, one-line start-up errors, spin."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def spin_until_shutdown(node: Node, executor: Executor | None = None) -> int:
    """Spin `node` until Ctrl-C or shutdown, then destroy it and shut rclpy down; returns 0."""
    executor = executor or SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def run_node(program: str, make_node: Callable[[], Node], usage: Callable[[], str],
             args: list[str] | None = None,
             make_executor: Callable[[], Executor] | None = None) -> int:
    """Main of a node's console script.

    ``-h``/``--help`` (before ``--ros-args``) prints `usage()` and exits 0 without starting
    anything; any other argument there is refused. A node that cannot start prints one line
    ``<program>: error: <why>`` (no traceback) and exits 2.
    """
    argv = sys.argv[1:] if args is None else list(args)
    own = argv[:argv.index('--ros-args')] if '--ros-args' in argv else argv
    if '-h' in own or '--help' in own:
        print(usage())
        return 0
    if own:
        print(f'{program}: error: unknown argument {own[0]!r} (ROS arguments go after '
              f'--ros-args; see {program} --help)', file=sys.stderr)
        return 2
    # Fast DDS publishes synchronously by default (Kilted): a reliable subscriber that does not
    # keep up (RViz or a busy process taking 320x240 clouds) then blocks publish() in the
    # publishing thread; measured, the node processed 0.33 instead of 3.75-4.25 frames/s.
    # Asynchronous publication hands the sample to Fast DDS's own thread. Set before the
    # participant exists; a value the user set wins.
    os.environ.setdefault('RMW_FASTRTPS_PUBLICATION_MODE', 'ASYNCHRONOUS')
    try:
        rclpy.init(args=[program, *argv])
        node = make_node()
    except Exception as exc:  # noqa: BLE001 - every start-up failure is one line, no traceback
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, (ValueError, FileNotFoundError)):
            why = f'{type(exc).__name__}: {why}'
        print(f'{program}: error: {why}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    return spin_until_shutdown(node, make_executor() if make_executor else None)
