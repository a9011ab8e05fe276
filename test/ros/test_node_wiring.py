"""How users wire fourd_node: remapped inputs, start-up errors, --help, input loss (real
processes over DDS where it is node behaviour)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import spin_until

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from fourd_ros.ros.conversions import sec_to_stamp  # noqa: E402
from test_node_faults import FakeCamera, diagnostics_values  # noqa: E402

pytestmark = pytest.mark.ros
BIN = Path(sys.executable).parent
# fourd_node as a user starts it beside the synthetic camera: its inputs remapped, nothing else
REMAPPED_NODE = ('-m', 'fourd_ros.ros.node', '--ros-args', '-r', 'image:=/camera/image_raw',
                 '-r', 'camera_info:=/camera/camera_info', '-r', 'depth:=/camera/depth')


@pytest.mark.parametrize('args, message', [
    (['-p', 'backend:=rgbd'], 'backend rgbd needs a registered depth input'),
    (['-p', 'backend:=nope'], "parameter backend: 'nope' is not one of auto, learned, rgbd"),
    (['-p', 'backend:=learned', '-p', 'checkpoint:=/no/such/model.pt'],
     '/no/such/model.pt: file not found'),
    (['-p', 'processing_width:=wide'], "parameter 'processing_width'"),
    # integers for floating-point parameters are taken (the node gets as far as its backend)
    (['-p', 'cache_budget_mb:=64', '-p', 'camera_height:=1', '-p', 'backend:=rgbd'],
     'backend rgbd needs a registered depth input'),
])
def test_inconsistent_configuration_exits_with_one_line(ros_env, args, message) -> None:
    result = subprocess.run([str(BIN / 'fourd_node'), '--ros-args', *args], env=ros_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert 'Traceback' not in result.stderr and len(result.stderr.strip().splitlines()) == 1, \
        result.stderr


@pytest.mark.parametrize('program, expect', [
    ('fourd_node', ['remap with -r NAME:=TOPIC', 'image ', 'camera_info', 'depth ',
                    '~/query_motion', 'processing_width', '~/map_points']),
    ('fourd_lifecycle_node', ['usage: fourd_lifecycle_node', '~/query_motion']),
    ('fourd_synthetic_camera', ['publish_depth', 'rate']),
    ('fourd', ['run', 'eval', 'bench', 'demo', 'view']),
])
def test_console_scripts_answer_help(ros_env, program, expect) -> None:
    for flag in ('-h', '--help'):
        result = subprocess.run([str(BIN / program), flag], env=ros_env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith('usage:'), result.stdout
        for word in expect:
            assert word in result.stdout, f'{program} {flag}: {word!r} missing'


def test_node_wired_by_remaps_only(ros_context, start_process) -> None:
    """The way a ROS user starts it beside a camera: remaps and the backend, nothing else (no
    parameter file, no topic parameters). Frames from a separate camera process are processed
    and a query is answered."""
    from fourd_ros_msgs.srv import QueryMotion
    from geometry_msgs.msg import Point

    from test_node import call, camera_args
    start_process(*camera_args(), name='camera')
    start_process(*REMAPPED_NODE, '-p', 'backend:=rgbd', name='node')
    node = rclpy.create_node('remap_user', context=ros_context)
    clouds: list[PointCloud2] = []
    node.create_subscription(PointCloud2, '/fourd/points', clouds.append, 10)
    assert spin_until(node, lambda: len(clouds) >= 12, timeout=60.0), f'{len(clouds)} clouds'
    request = QueryMotion.Request(query_type=QueryMotion.Request.QUERY_PIXEL,
                                  source_stamp=clouds[-11].header.stamp)
    request.points = [Point(x=40.0, y=30.0), Point(x=100.0, y=80.0)]
    response = call(node, node.create_client(QueryMotion, '/fourd/query_motion'), request)
    assert response.success, response.message
    assert len(response.status) == 2 and len(response.positions) == 2
    node.destroy_node()


@pytest.mark.parametrize('transport', ['raw', 'compressed'])
def test_a_12_bit_camera_keeps_its_colours(ros_context, start_process, clip, transport) -> None:
    """A machine-vision camera's 12 bits in the low bits of rgb16 (raw, or a 16-bit PNG through
    image_transport's compressed): with the node's default image_bits (0: found from the data)
    the cloud has the scene's colours, not the nearly black high byte cv_bridge would keep."""
    import numpy as np

    from fourd_ros.ros import conversions as conv
    from test_node import camera_args
    start_process(*camera_args(10.0, 'image_bits:=12', f'image_transport:={transport}'),
                  name='camera')
    start_process(*REMAPPED_NODE, '-p', 'backend:=rgbd', '-p',
                  f'image_transport:={transport}', '-p', f'depth_image_transport:='
                  f"{'compressedDepth' if transport == 'compressed' else 'raw'}", name='node')
    node = rclpy.create_node('machine_vision_user', context=ros_context)
    clouds: list[PointCloud2] = []
    node.create_subscription(PointCloud2, '/fourd/points', clouds.append, 10)
    assert spin_until(node, lambda: len(clouds) >= 3, timeout=60.0), f'{len(clouds)} clouds'
    rgb = conv.cloud_to_array(clouds[-1])['rgb'].reshape(-1).view(np.uint32)
    colours = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=1)
    print(f'12-bit camera ({transport}): cloud mean colour {colours.mean():.1f}, scene '
          f'{clip.rgb.mean():.1f}')
    # the high byte would give a sixteenth of the scene's brightness
    assert abs(colours.mean() / clip.rgb.mean() - 1.0) < 0.15
    node.destroy_node()


def test_a_monocular_camera_wired_as_rgbd_is_told_so(ros_context, start_process) -> None:
    """A monocular camera with a depth remap (the launch file's default): each frame is
    rejected with a reason that says no depth came at all and what to do; the node runs."""
    from test_node import camera_args
    start_process(*camera_args(10.0, 'publish_depth:=false'), name='camera')
    start_process(*REMAPPED_NODE, '-p', 'diagnostics_period:=0.2', name='node')
    node = rclpy.create_node('monocular_user', context=ros_context)
    diags: list[DiagnosticArray] = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)

    def rejected() -> bool:
        return bool(diags) and 'none has come at all' in diagnostics_values(diags)[
            'last_rejection']

    assert spin_until(node, rejected, timeout=30.0)
    assert "leave 'depth' unremapped" in diags[-1].status[0].message
    node.destroy_node()


def test_input_qos_overridden_per_topic(ros_context, start_process) -> None:
    """qos_overrides.<topic>.subscription.reliability, as a ROS user sets it (image_pipeline's
    tests do): the image subscription becomes reliable, camera_info keeps the sensor-data QoS;
    an output's publisher alike (~/points best effort, ~/odom still reliable)."""
    from rclpy.qos import ReliabilityPolicy
    start_process(*REMAPPED_NODE, '-p', 'backend:=rgbd',
                  '-p', 'qos_overrides./camera/image_raw.subscription.reliability:=reliable',
                  '-p', 'qos_overrides./fourd/points.publisher.reliability:=best_effort',
                  name='node')
    node = rclpy.create_node('qos_user', context=ros_context)

    def reliability(topic: str, side: str = 'subscriptions'):
        """The fourd node's reliability on `topic` ('subscriptions' or 'publishers')."""
        infos = [i for i in getattr(node, f'get_{side}_info_by_topic')(topic)
                 if i.node_name == 'fourd']
        return infos[0].qos_profile.reliability if infos else None

    assert spin_until(node, lambda: reliability('/camera/image_raw') is not None, timeout=30.0)
    assert reliability('/camera/image_raw') == ReliabilityPolicy.RELIABLE
    assert reliability('/camera/camera_info') == ReliabilityPolicy.BEST_EFFORT
    assert spin_until(node, lambda: reliability('/fourd/odom', 'publishers') is not None,
                      timeout=10.0)
    assert reliability('/fourd/points', 'publishers') == ReliabilityPolicy.BEST_EFFORT
    assert reliability('/fourd/odom', 'publishers') == ReliabilityPolicy.RELIABLE
    node.destroy_node()


def test_input_loss_reported_in_diagnostics(ros_context, start_process) -> None:
    """Images lost between the camera and the node (one in four never sent, their depth is)
    show as missing frames and unmatched depth in /diagnostics, with a warning naming the
    fix; a loss-free stream reports none."""
    from test_node import node_args
    start_process(*node_args('image_qos:=reliable', 'diagnostics_period:=0.2'), name='node')
    node = rclpy.create_node('lossy_camera', context=ros_context)
    cam = FakeCamera(node)
    clouds, diags = [], []
    node.create_subscription(PointCloud2, '/fourd/points', clouds.append, 10)
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    assert spin_until(node, cam.connected, timeout=30.0)
    t0 = 50.0
    for i in range(12):  # no loss first (paced by the clouds: a stall must not bunch them)
        before = len(clouds)
        cam.send(i, t0 + 0.1 * i)
        spin_until(node, lambda: len(clouds) > before, timeout=2.0)
    assert spin_until(node, lambda: len(clouds) >= 3, timeout=20.0)
    diags.clear()
    assert spin_until(node, lambda: len(diags) >= 2, timeout=5.0)
    clean = diagnostics_values(diags)
    assert clean['input_images_missing'] == '0' and clean['input_depth_unmatched'] == '0'
    for i in range(12, 54):  # frames 15, 19, ..., 51 lost
        cam.send(i, t0 + 0.1 * i, send_image=i % 4 != 3)
        spin_until(node, lambda: False, timeout=0.08)
    # the status reflects the newest frame: wait until a frame sent last has its cloud (one
    # whose depth came late, 0-0.6 % of frames, would otherwise leave "frames rejected")
    for i in range(54, 64):
        cam.send(i, t0 + 0.1 * i)
        if spin_until(node, lambda: clouds[-1].header.stamp == sec_to_stamp(t0 + 0.1 * i),
                      timeout=3.0):
            break
    else:
        raise AssertionError('no frame sent last was processed')
    diags.clear()
    assert spin_until(node, lambda: len(diags) >= 2, timeout=5.0)
    values = diagnostics_values(diags)
    status = diags[-1].status[0]
    assert int(values['input_images_missing']) >= 10, values  # 10 left out (more if lost)
    # depth is settled once a second older than the newest stamp: at least frames 15..43 (8,
    # 43 on the edge) are
    assert int(values['input_depth_unmatched']) >= 7, values
    assert values['input_depth_missing'] == '0'
    assert status.level == DiagnosticStatus.WARN
    assert 'input loss' in status.message and 'FASTDDS_DEFAULT_PROFILES_FILE' in status.message
    assert float(values['input_fps']) > 1.0, values
    # the camera stops: after 5 of its frame intervals (at least 2 s) the status says so
    assert spin_until(node, lambda: 'no image for' in diags[-1].status[0].message, timeout=8.0)
    status = diags[-1].status[0]
    assert status.level == DiagnosticStatus.WARN and '/camera/image_raw' in status.message
    assert float(diagnostics_values(diags)['seconds_since_image']) >= 2.0
    node.destroy_node()
