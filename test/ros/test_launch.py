"""launch/fourd.launch.py runs without launch_ros and starts the same processes."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, spin_until

rclpy = pytest.importorskip('rclpy')
from sensor_msgs.msg import PointCloud2  # noqa: E402

pytestmark = pytest.mark.ros


@contextlib.contextmanager
def launched(ros_env, log: Path, *args: str) -> Iterator[None]:
    """`python launch/fourd.launch.py ARGS` running; stopped with Ctrl-C (SIGINT) after the
    block, which must end it with status 0."""
    proc = subprocess.Popen([sys.executable, str(REPO / 'launch' / 'fourd.launch.py'), *args],
                            env=ros_env, cwd=REPO, stdout=log.open('w'),
                            stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, log.read_text()[-3000:]


def test_launch_file_without_launch_ros(ros_env, ros_context, tmp_path) -> None:
    log = tmp_path / 'launch.log'
    with launched(ros_env, log, 'use_synthetic_camera:=true', 'depth:=/camera/depth',
                  'rviz:=true'):
        node = rclpy.create_node('observer', context=ros_context)
        clouds: list[PointCloud2] = []
        node.create_subscription(PointCloud2, '/fourd/points', clouds.append, 10)
        assert spin_until(node, lambda: len(clouds) >= 3, timeout=90.0), log.read_text()[-3000:]
        node.destroy_node()
    if shutil.which('rviz2') is None:  # RViz is not on PyPI: the node runs without it
        assert 'rviz2 is not installed' in log.read_text()


def test_rviz_config_follows_the_namespace() -> None:
    spec = importlib.util.spec_from_file_location('fourd_launch',
                                                  REPO / 'launch' / 'fourd.launch.py')
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    shipped = launch.rviz_config('')
    assert shipped == REPO / 'config' / 'fourd.rviz'
    moved = launch.rviz_config('/robot1/front/').read_text()
    assert 'Value: /robot1/front/fourd/points' in moved and 'Value: /fourd/' not in moved
    assert moved.count('/robot1/front/fourd/') == shipped.read_text().count('/fourd/')


def test_launch_file_starts_the_managed_node(ros_env, ros_context, tmp_path) -> None:
    """managed:=true: fourd_lifecycle_node, unconfigured until a manager configures it."""
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState
    from test_node import call
    with launched(ros_env, tmp_path / 'launch.log', 'managed:=true', 'namespace:=cam'):
        node = rclpy.create_node('manager', context=ros_context)
        state = call(node, node.create_client(GetState, '/cam/fourd/get_state'),
                     GetState.Request())
        assert state.current_state.id == State.PRIMARY_STATE_UNCONFIGURED
        node.destroy_node()


def test_launch_file_autostarts_the_managed_node(ros_env, ros_context, tmp_path) -> None:
    """managed:=true autostart:=true: the lifecycle node configures and activates itself (no
    lifecycle manager) and processes the camera's images."""
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState
    from test_node import call
    log = tmp_path / 'launch.log'
    with launched(ros_env, log, 'managed:=true', 'autostart:=true', 'namespace:=cam',
                  'use_synthetic_camera:=true', 'depth:=/camera/depth'):
        node = rclpy.create_node('observer', context=ros_context)
        clouds: list[PointCloud2] = []
        node.create_subscription(PointCloud2, '/cam/fourd/points', clouds.append, 10)
        assert spin_until(node, lambda: len(clouds) >= 2, timeout=90.0), log.read_text()[-3000:]
        state = call(node, node.create_client(GetState, '/cam/fourd/get_state'),
                     GetState.Request())
        assert state.current_state.id == State.PRIMARY_STATE_ACTIVE
        node.destroy_node()


def test_launch_file_rejects_unknown_arguments(ros_env) -> None:
    result = subprocess.run([sys.executable, str(REPO / 'launch' / 'fourd.launch.py'),
                             'no_such_arg:=1'], env=ros_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and 'unknown argument' in result.stderr


def test_node_parameter_arguments_reach_the_node_only_when_given() -> None:
    """Launch arguments that set node parameters (backend, transports, rectified, sim time,
    and a ground robot's base_frame / publish_camera_tf / camera_height) are passed when given;
    otherwise the parameter file's values stand (a launch default overrode a user's file)."""
    spec = importlib.util.spec_from_file_location('fourd_launch',
                                                  REPO / 'launch' / 'fourd.launch.py')
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    defaults = {k: v[0] for k, v in launch.ARGUMENTS.items()}
    plain = launch.node_ros_args(defaults)
    assert plain[plain.index('--params-file') + 1] == defaults['config']
    # by default a monocular camera: no depth remap (with backend auto: learned)
    assert not any(a.startswith('depth:=') for a in plain)
    assert '-p' not in plain, plain
    given = {'backend': 'rgbd', 'image_transport': 'compressed',
             'depth_image_transport': 'compressedDepth', 'image_rectified': 'true',
             'image_bits': '12',
             'use_sim_time': 'true', 'base_frame': 'base_footprint',
             'publish_camera_tf': 'false', 'camera_height': '0.42', 'device': 'cpu',
             'checkpoint': '/models/s4rc.pt', 'processing_width': '256',
             'image_qos': 'reliable', 'camera_frame': 'cam_optical', 'odom_frame': 'vo',
             'map_frame': 'world', 'publish_tf': 'false', 'publish_map_to_odom_tf': 'false',
             'invert_odom_to_base_tf': 'true'}
    assert set(given) == set(launch.NODE_PARAMETERS)
    robot = launch.node_ros_args(dict(defaults, **given))
    for name, value in given.items():
        assert robot[robot.index(f'{name}:={value}') - 1] == '-p'
    # given values come after the file: they win over it
    assert robot.index('--params-file') < robot.index('-p')


def test_no_camera_info_topic_means_none_subscribed() -> None:
    """camera_info:='' sets use_camera_info:=false (the node subscribes to no CameraInfo and
    does not wait for one), and leaves the input unremapped."""
    spec = importlib.util.spec_from_file_location('fourd_launch',
                                                  REPO / 'launch' / 'fourd.launch.py')
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    defaults = {k: v[0] for k, v in launch.ARGUMENTS.items()}
    args = launch.node_ros_args(dict(defaults, camera_info=''))
    assert args[args.index('use_camera_info:=false') - 1] == '-p'
    assert not any(a.startswith('camera_info:=') for a in args), args
    assert 'use_camera_info:=false' not in launch.node_ros_args(defaults)
