"""fourd_node keeps running and answering after bad input (real processes over DDS)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import spin_until

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from fourd_ros_msgs.srv import GetTrajectory, QueryMotion  # noqa: E402
from geometry_msgs.msg import Point  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from fourd_ros.core.data.synthetic import SceneConfig, generate_clip  # noqa: E402
from fourd_ros.ros import conversions as conv  # noqa: E402
from test_node import call, camera_args, node_args  # noqa: E402

pytestmark = pytest.mark.ros


class FakeCamera:
    """Publishes hand-made images/depth/camera_info from the test process (reliable QoS)."""

    def __init__(self, node, clip=None) -> None:
        self.node = node
        self.image = node.create_publisher(Image, '/camera/image_raw', 10)
        self.depth = node.create_publisher(Image, '/camera/depth', 10)
        self.info = node.create_publisher(CameraInfo, '/camera/camera_info', 10)
        self.clip = clip if clip is not None else generate_clip(
            SceneConfig(frames=12, width=96, height=72, seed=2, fps=30.0))

    def connected(self, depth: bool = True) -> bool:
        """The node subscribes to the image, the camera info and (`depth`) the depth topic: a
        frame sent before discovery matched a topic would be lost on it."""
        pubs = [self.image, self.info] + ([self.depth] if depth else [])
        return all(p.get_subscription_count() > 0 for p in pubs)

    def send(self, i: int, stamp: float, rgb=None, depth=None, encoding: str = 'rgb8',
             step: int | None = None, depth_encoding: str = '32FC1',
             send_image: bool = True, send_depth: bool = True,
             K: np.ndarray | None = None, depth_frame: str = 'camera_optical_frame',
             info_frame: str = 'camera_optical_frame') -> None:
        """Frame `i` of the clip (or the given arrays) stamped `stamp` (s); `send_image` /
        `send_depth` False leave out the image / the depth (lost in transport, or a stopped
        stream); `K` replaces the CameraInfo's intrinsics (zeros = an uncalibrated camera);
        `depth_frame` / `info_frame` are the depth's and the CameraInfo's frame_id."""
        header = Header(stamp=conv.sec_to_stamp(stamp), frame_id='camera_optical_frame')
        rgb = self.clip.rgb[i % len(self.clip)] if rgb is None else rgb
        depth = self.clip.depth[i % len(self.clip)] if depth is None else depth
        h, w = rgb.shape[:2]
        img = Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                    step=step if step is not None else rgb.strides[0] if rgb.size else 0)
        img.data = np.ascontiguousarray(rgb).tobytes()
        d = Image(header=Header(stamp=header.stamp, frame_id=depth_frame),
                  height=depth.shape[0], width=depth.shape[1],
                  encoding=depth_encoding, is_bigendian=0, step=depth.strides[0])
        d.data = np.ascontiguousarray(depth).tobytes()
        info = CameraInfo(header=Header(stamp=header.stamp, frame_id=info_frame), width=w,
                          height=h)
        info.k = [float(x) for x in (self.clip.K if K is None else K).ravel()]
        self.info.publish(info)
        if send_depth:
            self.depth.publish(d)
        time.sleep(0.01)
        if send_image:
            self.image.publish(img)


def diagnostics_values(msgs) -> dict[str, str]:
    return {kv.key: kv.value for kv in msgs[-1].status[0].values}


def test_node_survives_bad_input(ros_context, start_process) -> None:
    start_process(*node_args('image_qos:=reliable', 'queue_size:=3',
                             'diagnostics_period:=0.2'), name='node')
    node = rclpy.create_node('fault_injector', context=ros_context)
    cam = FakeCamera(node)
    clouds, diags = [], []
    node.create_subscription(PointCloud2, '/fourd/points', clouds.append, 10)
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    traj = node.create_client(GetTrajectory, '/fourd/get_trajectory')
    query = node.create_client(QueryMotion, '/fourd/query_motion')
    assert spin_until(node, cam.connected, timeout=30.0)
    assert spin_until(node, traj.service_is_ready, timeout=30.0)

    def send_and_wait(i: int, stamp: float, expect_cloud: bool = True, **kw) -> None:
        before = len(clouds)
        cam.send(i, stamp, **kw)
        if expect_cloud:
            assert spin_until(node, lambda: len(clouds) > before, timeout=15.0), \
                f'no cloud for frame {i} at {stamp}'
        else:
            spin_until(node, lambda: False, timeout=0.7)
            assert len(clouds) == before, 'a bad frame produced a cloud'

    def still_serving() -> None:
        response = call(node, traj, GetTrajectory.Request())
        assert response.success or 'no processed frame' in response.message

    t = 100.0
    for i in range(3):
        send_and_wait(i, t + 0.1 * i)
    still_serving()
    # 1) unsupported encoding, 2) wrong step, 3) zero-size image
    send_and_wait(3, t + 0.3, expect_cloud=False, encoding='nv21')
    send_and_wait(3, t + 0.31, expect_cloud=False, step=5)
    send_and_wait(3, t + 0.32, expect_cloud=False, rgb=np.zeros((0, 0, 3), np.uint8))
    still_serving()
    assert spin_until(node, lambda: diags and int(diagnostics_values(diags)['rejected_frames'])
                      >= 3, timeout=5.0)
    # every frame rejected for 5 s: /diagnostics says ERROR (the node produces nothing), the
    # node goes on serving
    for k in range(8):
        send_and_wait(3, t + 0.33 + 0.001 * k, expect_cloud=False, encoding='nv21')
    assert spin_until(node, lambda: diags[-1].status[0].level == DiagnosticStatus.ERROR,
                      timeout=5.0), diags[-1].status[0]
    assert 'no frame processed for' in diags[-1].status[0].message
    still_serving()
    # 4) NaN depth: processed, NaN points become invalid (NaN) in the cloud, not a crash
    depth = cam.clip.depth[4].copy()
    depth[:20] = np.nan
    send_and_wait(4, t + 0.4, depth=depth)
    arr = conv.cloud_to_array(clouds[-1])
    assert np.isnan(arr['z'][:20]).all() and np.isfinite(arr['z'][30:]).mean() > 0.9
    # 5) image size change mid-stream: the stream restarts at the new size
    send_and_wait(5, t + 0.5, rgb=np.ascontiguousarray(cam.clip.rgb[5][:64, :80]),
                  depth=np.ascontiguousarray(cam.clip.depth[5][:64, :80]))
    assert (clouds[-1].height, clouds[-1].width) == (64, 80)
    # 6) time going backwards: reset with a warning, keeps processing
    send_and_wait(6, t - 50.0)
    send_and_wait(7, t - 49.9)
    response = call(node, traj, GetTrajectory.Request())
    assert response.success and len(response.path.poses) == 2
    # 7) a burst at far above the processing rate: the queue stays bounded, frames are dropped
    for k in range(40):
        cam.send(k, t + 1.0 + 0.001 * k)
    spin_until(node, lambda: False, timeout=3.0)
    values = diagnostics_values(diags)
    assert int(values['dropped_frames']) > 0
    # 8) a 10^6-point query: refused with a message, node still answers
    request = QueryMotion.Request(query_type=QueryMotion.Request.QUERY_PIXEL,
                                  source_stamp=clouds[-1].header.stamp)
    request.points = [Point()] * 1_000_000
    response = call(node, query, request, timeout=60.0)
    assert not response.success and 'max_query_points' in response.message
    # pixels outside the image are INVALID, inside ones answered
    request.points = [Point(x=-10.0, y=5.0), Point(x=20.0, y=20.0)]
    response = call(node, query, request)
    assert response.success
    assert response.status[0] == QueryMotion.Response.INVALID
    # a 3D point in the camera frame, answered in the camera frame of the same (latest) image:
    # a point that stays put comes back where it was
    point = QueryMotion.Request(query_type=QueryMotion.Request.QUERY_POINT,
                                source_stamp=clouds[-1].header.stamp,
                                source_frame='camera_optical_frame',
                                target_frame='camera_optical_frame',
                                target_stamp=clouds[-1].header.stamp)
    arr = conv.cloud_to_array(clouds[-1])
    p = arr[36, 48]
    point.points = [Point(x=float(p['x']), y=float(p['y']), z=float(p['z']))]
    response = call(node, query, point)
    assert response.success and response.header.frame_id == 'camera_optical_frame'
    assert response.status[0] == QueryMotion.Response.VALID
    got = response.positions[0]
    assert np.allclose([got.x, got.y, got.z], [p['x'], p['y'], p['z']], atol=1e-3)
    # the same point in the base frame (camera_link: the REP-103 optical rotation)
    point.target_frame = 'camera_link'
    response = call(node, query, point)
    assert response.success and response.header.frame_id == 'camera_link'
    got = response.positions[0]
    want = conv.T_LINK_FROM_OPTICAL[:3, :3] @ [p['x'], p['y'], p['z']]
    assert np.allclose([got.x, got.y, got.z], want, atol=1e-3)
    point.source_frame = 'no_such_frame'
    response = call(node, query, point)
    assert not response.success and 'no_such_frame' in response.message
    # depth or calibration of another optical frame (an unregistered depth): rejected, named
    send_and_wait(8, t + 2.0, expect_cloud=False, depth_frame='camera_depth_optical_frame')
    assert spin_until(node, lambda: 'registered to the image' in diagnostics_values(diags)[
        'last_rejection'], timeout=5.0)
    send_and_wait(8, t + 2.1, expect_cloud=False, info_frame='other_camera_optical_frame')
    assert spin_until(node, lambda: "another camera's" in diagnostics_values(diags)[
        'last_rejection'], timeout=5.0)
    send_and_wait(9, t + 2.2)
    # reset service
    reset = call(node, node.create_client(Trigger, '/fourd/reset'), Trigger.Request())
    assert reset.success
    send_and_wait(8, t + 10.0)
    still_serving()
    node.destroy_node()


def test_two_cameras_side_by_side(ros_context, start_process) -> None:
    """Two node instances in their own namespaces on one DDS graph, with their own TF frames."""
    start_process(*camera_args(), name='camera')
    for ns in ('cam1', 'cam2'):
        start_process(*node_args(f'odom_frame:={ns}/odom', f'base_frame:={ns}/camera_link',
                                 f'camera_frame:={ns}/camera_optical_frame',
                                 f'map_frame:={ns}/map', namespace=f'/{ns}'), name=ns)
    node = rclpy.create_node('observer', context=ros_context)
    clouds: dict[str, list] = {'cam1': [], 'cam2': []}
    for ns in clouds:
        node.create_subscription(PointCloud2, f'/{ns}/fourd/points', clouds[ns].append, 10)
    assert spin_until(node, lambda: all(len(c) >= 3 for c in clouds.values()), timeout=90.0)
    for ns in clouds:
        assert clouds[ns][-1].header.frame_id == f'{ns}/camera_optical_frame'
        response = call(node, node.create_client(Trigger, f'/{ns}/fourd/reset'),
                        Trigger.Request())
        assert response.success
