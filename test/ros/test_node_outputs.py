"""fourd_node's outputs and services, value by value, over real DDS: TF values, ~/path, ~/odom,
the latched map for late subscribers (and its reset), ~/save_map, marker DELETEALL on reset, the
diagnostics keys, 16UC1 depth, an uncalibrated camera, and ~/reset while frames are processed.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from conftest import spin_until

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from fourd_ros_msgs.srv import SaveMap  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from fourd_ros.core.geometry import invert_pose  # noqa: E402
from fourd_ros.ros import conversions as conv  # noqa: E402
from test_node import call, node_args  # noqa: E402
from test_node_faults import FakeCamera, diagnostics_values  # noqa: E402

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
DIAGNOSTIC_KEYS = {
    'backend', 'metric', 'camera_model', 'fps', 'processing_ms_p50', 'frame_ms_p50',
    'latency_ms_p50', 'latency_ms_p95',
    'frames_received', 'frames_processed', 'dropped_frames', 'dropped_frames_at_start',
    'rejected_frames', 'last_rejection',
    'input_images_missing', 'input_depth_received', 'input_depth_missing',
    'input_depth_unmatched', 'tracking_lost_frames', 'tracking_relocalized_frames',
    'stream_resets', 'cache_frames', 'cache_mb', 'cache_budget_mb', 'input_fps',
    'seconds_since_image', 'cache_mb_by_device', 'cache_device_budget_mb', 'tracking', 'scale'}


def late_map(context, timeout: float = 10.0) -> PointCloud2:
    """~/map_points as a subscriber that joins now gets it (transient local)."""
    node = rclpy.create_node('late_joiner', context=context)
    got: list[PointCloud2] = []
    node.create_subscription(PointCloud2, '/fourd/map_points', got.append, LATCHED)
    assert spin_until(node, lambda: bool(got), timeout=timeout), 'no latched map'
    node.destroy_node()
    return got[-1]


def test_outputs_and_services_value_by_value(ros_context, start_process, tmp_path) -> None:
    start_process(*node_args('image_qos:=reliable', 'queue_size:=10', 'diagnostics_period:=0.2',
                             'map_every_n_frames:=1', 'markers_every_n_frames:=1'), name='node')
    node = rclpy.create_node('outputs_test', context=ros_context)
    cam = FakeCamera(node)
    msgs: dict[str, list] = {}
    for msg_type, topic, qos in ((PointCloud2, '/fourd/points', 10), (Path, '/fourd/path', 10),
                                 (Odometry, '/fourd/odom', 10), (TFMessage, '/tf', 100),
                                 (TFMessage, '/tf_static', LATCHED),
                                 (MarkerArray, '/fourd/track_markers', 10),
                                 (CameraInfo, '/fourd/camera_info', 10),
                                 (DiagnosticArray, '/diagnostics', 10)):
        node.create_subscription(msg_type, topic,
                                 lambda m, t=topic: msgs.setdefault(t, []).append(m), qos)
    reset = node.create_client(Trigger, '/fourd/reset')
    assert spin_until(node, cam.connected, timeout=30.0)
    assert spin_until(node, reset.service_is_ready, timeout=30.0)

    def clouds() -> int:
        return len(msgs.get('/fourd/points', []))

    def send(i: int, stamp: float, **kw) -> None:
        before = clouds()
        cam.send(i, stamp, **kw)
        assert spin_until(node, lambda: clouds() > before, timeout=15.0), f'no cloud for {i}'

    # 16UC1 depth in millimetres: the cloud's z is the depth, to the millimetre
    t0 = 20.0
    for i in range(6):
        mm = np.round(cam.clip.depth[i] * 1000.0).astype(np.uint16)
        send(i, t0 + 0.1 * i, depth=mm, depth_encoding='16UC1')
    cloud = conv.cloud_to_array(msgs['/fourd/points'][-1])
    assert np.allclose(cloud['z'], np.round(cam.clip.depth[5] * 1000) / 1000, atol=1.5e-3)
    # ~/camera_info: the pinhole camera of the organized cloud (its size, stamp and frame; its
    # points project onto their own pixels)
    last_cloud = msgs['/fourd/points'][-1]
    assert spin_until(node, lambda: msgs.get('/fourd/camera_info') and msgs[
        '/fourd/camera_info'][-1].header.stamp == last_cloud.header.stamp, timeout=10.0)
    info = msgs['/fourd/camera_info'][-1]
    assert (info.width, info.height) == (last_cloud.width, last_cloud.height)
    assert info.header.frame_id == last_cloud.header.frame_id and not any(info.d)
    K = np.reshape(info.k, (3, 3))
    assert np.allclose(np.reshape(info.p, (3, 4))[:, :3], K)
    v, u = np.nonzero(np.isfinite(cloud['z']) & (cloud['z'] > 0))
    xyz = np.stack([cloud[k][v, u] for k in 'xyz'], axis=1).astype(np.float64)
    uv = xyz @ K.T
    assert np.allclose(uv[:, :2] / uv[:, 2:], np.stack([u, v], axis=1), atol=1e-2)
    # the frame's path, odometry and TF arrive on their own topics, in no set order
    last = msgs['/fourd/points'][-1].header.stamp

    def odom_tf() -> list:
        return [t for m in msgs.get('/tf', []) for t in m.transforms
                if (t.header.frame_id, t.child_frame_id) == ('odom', 'camera_link')]

    assert spin_until(node, lambda: msgs.get('/fourd/path') and msgs.get('/fourd/odom')
                      and len(msgs['/fourd/path'][-1].poses) == 6
                      and msgs['/fourd/odom'][-1].header.stamp == last
                      and odom_tf() and odom_tf()[-1].header.stamp == last, timeout=10.0)

    # ~/path: one pose per frame, odom frame; ~/odom: base frame pose, its last path pose
    path = msgs['/fourd/path'][-1]
    assert path.header.frame_id == 'odom' and len(path.poses) == 6
    odom = msgs['/fourd/odom'][-1]
    assert (odom.header.frame_id, odom.child_frame_id) == ('odom', 'camera_link')
    assert np.allclose(conv.pose_to_matrix(odom.pose.pose),
                       conv.pose_to_matrix(path.poses[-1].pose), atol=1e-6)
    # covariances for a fusing filter: the parameters' variances, the twist's over dt^2
    dt = conv.stamp_to_sec(path.poses[-1].header.stamp) - conv.stamp_to_sec(
        path.poses[-2].header.stamp)
    assert np.allclose(np.reshape(odom.pose.covariance, (6, 6)), np.eye(6) * 1e-4)
    assert np.allclose(np.reshape(odom.twist.covariance, (6, 6)), np.eye(6) * 1e-4 / dt**2)
    # TF values: map -> odom identity; odom -> camera_link = ~/odom; camera_link -> optical on
    # /tf_static = the REP-103 optical rotation; all stamped with the image
    tf = {(t.header.frame_id, t.child_frame_id): t for m in msgs['/tf'] for t in m.transforms}
    assert np.allclose(conv.transform_to_matrix(tf[('map', 'odom')].transform), np.eye(4))
    assert odom_tf()[-1].header.stamp == odom.header.stamp
    assert np.allclose(conv.transform_to_matrix(odom_tf()[-1].transform),
                       conv.pose_to_matrix(odom.pose.pose), atol=1e-6)
    static = [t for m in msgs['/tf_static'] for t in m.transforms]
    assert [(t.header.frame_id, t.child_frame_id) for t in static][-1] == \
        ('camera_link', 'camera_optical_frame')
    assert np.allclose(conv.transform_to_matrix(static[-1].transform),
                       conv.T_LINK_FROM_OPTICAL, atol=1e-9)
    # the camera moved as the ground truth says (relative pose of frames 0 -> 5)
    T_first = conv.pose_to_matrix(path.poses[0].pose) @ conv.T_LINK_FROM_OPTICAL
    T_last = conv.pose_to_matrix(path.poses[-1].pose) @ conv.T_LINK_FROM_OPTICAL
    rel, rel_gt = invert_pose(T_first) @ T_last, cam.clip.T_wc[5]
    rel_err = np.linalg.norm(rel[:3, 3] - rel_gt[:3, 3])
    print(f'relative pose 0 -> 5: {rel_err * 1e3:.3f} mm off')
    assert rel_err < 1.2e-3  # measured 0.93 mm in 6 runs (the same six frames each time)

    # diagnostics: the documented keys, no more, no fewer
    assert set(diagnostics_values(msgs['/diagnostics'])) == DIAGNOSTIC_KEYS
    assert diagnostics_values(msgs['/diagnostics'])['scale'] == 'depth sensor (metres)'

    # a subscriber joining late gets the map (transient local)
    latched = late_map(ros_context)
    assert latched.width > 100

    # ~/save_map writes that map (no frame since: the same points and colours) as a PLY file;
    # a path that is not .ply, or in a missing folder, is refused with a reason
    save = node.create_client(SaveMap, '/fourd/save_map')
    saved = call(node, save, SaveMap.Request(path=str(tmp_path / 'map.ply')))
    assert saved.success, saved.message
    assert saved.num_points == latched.width and str(tmp_path / 'map.ply') in saved.message
    ply = o3d.io.read_point_cloud(str(tmp_path / 'map.ply'))
    published = conv.cloud_to_array(latched).reshape(-1)
    assert np.allclose(np.asarray(ply.points),
                       np.stack([published[k] for k in 'xyz'], axis=1), atol=1e-6)
    rgb = published['rgb'].view(np.uint32)
    assert np.allclose(np.asarray(ply.colors) * 255, np.stack(
        [(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=1), atol=0.5)
    for bad, reason in ((tmp_path / 'map.txt', '.ply'), (tmp_path / 'no' / 'map.ply', 'folder')):
        refused = call(node, save, SaveMap.Request(path=str(bad)))
        assert not refused.success and reason in refused.message and not bad.exists()

    # ~/reset while frames are being processed: every call answered, the outputs restart (an
    # empty map latched for late joiners, markers deleted), the node keeps processing
    futures = []
    for k in range(12):
        cam.send(k, t0 + 1.0 + 0.02 * k)
        if k % 4 == 1:
            futures.append(reset.call_async(Trigger.Request()))
        spin_until(node, lambda: False, timeout=0.03)
    assert spin_until(node, lambda: all(f.done() for f in futures), timeout=20.0)
    assert all(f.result().success for f in futures)

    def idle() -> bool:
        """Every frame received has been processed, rejected or replaced by a newer one."""
        v = diagnostics_values(msgs['/diagnostics'])
        return int(v['frames_received']) >= 18 and int(v['frames_processed']) + int(
            v['rejected_frames']) + int(v['dropped_frames']) == int(v['frames_received'])

    assert spin_until(node, idle, timeout=30.0), diagnostics_values(msgs['/diagnostics'])
    # the last processed frame's odometry (its cloud and odometry carry the same stamp)
    spin_until(node, lambda: False, timeout=0.5)
    assert spin_until(node, lambda: msgs['/fourd/odom'][-1].header.stamp
                      == msgs['/fourd/points'][-1].header.stamp, timeout=5.0)
    T_before = conv.pose_to_matrix(msgs['/fourd/odom'][-1].pose.pose)
    assert not np.allclose(T_before, np.eye(4), atol=1e-3)  # the camera has moved
    response = reset.call_async(Trigger.Request())
    assert spin_until(node, response.done, timeout=10.0) and response.result().success
    assert late_map(ros_context).width == 0
    empty = call(node, save, SaveMap.Request(path=str(tmp_path / 'empty.ply')))
    assert not empty.success and 'empty' in empty.message
    assert spin_until(node, lambda: any(
        m.markers and m.markers[0].action == Marker.DELETEALL
        for m in msgs.get('/fourd/track_markers', [])), timeout=5.0)
    before = len(msgs['/fourd/path'])
    send(0, t0 + 5.0)
    assert spin_until(node, lambda: len(msgs['/fourd/path']) > before, timeout=5.0)
    assert len(msgs['/fourd/path'][-1].poses) == 1, 'the path did not restart after the reset'
    # REP-105: odom is continuous: the new stream starts where the last one left the base
    # (odom -> base_frame does not jump back to the identity)
    first = msgs['/fourd/path'][-1].poses[0].header.stamp
    assert spin_until(node, lambda: msgs['/fourd/odom'][-1].header.stamp == first, timeout=5.0)
    assert np.allclose(conv.pose_to_matrix(msgs['/fourd/odom'][-1].pose.pose), T_before,
                       atol=1e-6)

    # an uncalibrated camera (CameraInfo K[0] == 0): processed with the default intrinsics
    for i in range(3):
        send(i, t0 + 6.0 + 0.1 * i, K=np.zeros((3, 3)))
    assert np.isfinite(conv.cloud_to_array(msgs['/fourd/points'][-1])['z']).mean() > 0.9
    node.destroy_node()
