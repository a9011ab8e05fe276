"""fourd_node with the learned backend on a monocular synthetic camera, over real DDS."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import spin_until
from fourd_ros.ros.demo.processes import camera_argv
from test_node import call, camera_args, CAMERA, clip_index, Recorder

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from fourd_ros_msgs.msg import MovingObjects, TrackedPoints  # noqa: E402
from fourd_ros_msgs.srv import GetTrajectory, QueryMotion  # noqa: E402
from geometry_msgs.msg import Point, PoseStamped  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from fourd_ros.core.geometry import invert_pose, transform_points  # noqa: E402
from fourd_ros.ros import conversions as conv  # noqa: E402
from fourd_ros.ros.qos import LATCHED  # noqa: E402

pytestmark = pytest.mark.ros


def test_learned_node_on_a_monocular_camera(ros_context, start_process, clip) -> None:
    from fourd_ros.ros.demo.processes import node_argv
    from test_node import REPO
    start_process(*camera_args(rate=8.0), '-p', 'publish_depth:=false', name='camera')
    start_process(*node_argv(REPO / 'config', 'backend:=auto', 'device:=cpu', depth=False),
                  name='node')
    node = rclpy.create_node('observer', context=ros_context)
    rec = Recorder(node)
    for msg_type, topic in ((PointCloud2, '/fourd/points'), (TrackedPoints, '/fourd/tracks'),
                            (Path, '/fourd/path'), (Odometry, '/fourd/odom'),
                            (MarkerArray, '/fourd/track_markers'),
                            (Image, '/fourd/motion_mask'), (MovingObjects, '/fourd/objects'),
                            (MarkerArray, '/fourd/object_markers'),
                            (DiagnosticArray, '/diagnostics')):
        rec.listen(msg_type, topic)
    rec.listen(TFMessage, '/tf', 100)
    rec.listen(TFMessage, '/tf_static', LATCHED)
    rec.listen(PointCloud2, '/fourd/map_points', LATCHED)
    rec.listen(PoseStamped, '/camera/ground_truth/pose', 100)
    # every output of the node (README's interface list)
    topics = ('/fourd/points', '/fourd/tracks', '/fourd/path', '/fourd/odom',
              '/fourd/track_markers', '/fourd/motion_mask', '/fourd/objects',
              '/fourd/object_markers', '/fourd/map_points', '/diagnostics', '/tf', '/tf_static')
    assert spin_until(node, lambda: rec.count('/fourd/points') >= 16 and all(
        rec.count(t) > 0 for t in topics), timeout=120.0), \
        {t: rec.count(t) for t in topics}
    values = {kv.key: kv.value for msg in rec.msgs['/diagnostics'] for s in msg.status
              for kv in s.values}
    assert values.get('backend') == 'learned' and values.get('metric') == 'false', values
    assert values.get('scale', '').startswith('unknown (up to scale'), values
    # a fusing filter gets the orientation, not an up-to-scale position as metres
    odom = rec.msgs['/fourd/odom'][-1]
    assert np.allclose(np.diag(np.reshape(odom.pose.covariance, (6, 6))),
                       [1e6, 1e6, 1e6, 1e-4, 1e-4, 1e-4])
    cloud = rec.msgs['/fourd/points'][-1]
    arr = conv.cloud_to_array(cloud)
    assert np.isfinite(arr['z']).mean() > 0.9 and np.nanmin(arr['z']) > 0

    # a PIXEL query 10 frames back, at the latest frame, scored against the ground truth after
    # one median scale (monocular output is up to scale)
    # the newest cloud whose ground-truth pose has arrived (under load the GT topic can lag or
    # drop a message), and the cloud 10 before it
    assert spin_until(node, lambda: len(rec.with_ground_truth('/fourd/points')) >= 11, 20.0), \
        'no ground truth for the clouds'
    clouds = rec.msgs['/fourd/points']
    tgt_msg = rec.with_ground_truth('/fourd/points')[-1]
    src_msg = clouds[clouds.index(tgt_msg) - 10]
    gt = rec.ground_truth()
    assert conv.stamp_to_sec(src_msg.header.stamp) in gt
    request = QueryMotion.Request(query_type=QueryMotion.Request.QUERY_PIXEL,
                                  source_stamp=src_msg.header.stamp,
                                  target_stamp=tgt_msg.header.stamp)
    v, u = np.mgrid[10:CAMERA['height']:12, 10:CAMERA['width']:12]
    request.points = [Point(x=float(a), y=float(b)) for a, b in zip(u.ravel(), v.ravel())]
    response = call(node, node.create_client(QueryMotion, '/fourd/query_motion'), request)
    assert response.success, response.message
    status = np.array(response.status)
    assert len(status) == u.size and set(status) <= {0, 1, 2, 3, 4}
    i = clip_index(clip, gt[conv.stamp_to_sec(src_msg.header.stamp)])
    j = clip_index(clip, gt[conv.stamp_to_sec(tgt_msg.header.stamp)])
    P, visible = clip.points_at(i, j)
    ok = visible[v, u].ravel() & (status == QueryMotion.Response.VALID)
    print(f'learned node query: {ok.sum()} of {visible[v, u].sum()} GT-visible points VALID')
    # measured: 23-93 % of the GT-visible points VALID (the rest OCCLUDED / OUT_OF_VIEW by the
    # model's noisy depth; docs/measurements.md); the floor is 80 % of the lowest
    assert ok.sum() > 0.18 * visible[v, u].sum()
    # the node's answer in the source camera's frame (through the node's own source pose),
    # scaled by the median depth ratio of the source frame, then through the GT source pose
    traj = call(node, node.create_client(GetTrajectory, '/fourd/get_trajectory'),
                GetTrajectory.Request())
    assert traj.success and len(traj.path.poses) >= 16
    poses = {conv.stamp_to_sec(p.header.stamp): conv.pose_to_matrix(p.pose)
             for p in traj.path.poses}
    # the service's stamps went through float seconds: match within a microsecond
    src_t = conv.stamp_to_sec(src_msg.header.stamp)
    T_odom_link_src = poses[min(poses, key=lambda t: abs(t - src_t))]
    assert abs(min(poses, key=lambda t: abs(t - src_t)) - src_t) < 1e-6
    T_opt = conv.T_LINK_FROM_OPTICAL
    pos = np.array([[p.x, p.y, p.z] for p in response.positions])[ok]
    # map == odom here (publish_map_to_odom_tf identity): map -> source optical camera frame
    pos_cam = transform_points(invert_pose(T_odom_link_src @ T_opt), pos)
    src_cloud = conv.cloud_to_array(src_msg)
    z_est = np.nanmedian(src_cloud['z'])
    z_gt = float(np.median(clip.depth[i]))
    scale = z_gt / z_est
    T_wc_src = clip.T_wc[i]
    pred = transform_points(T_wc_src, pos_cam * scale)
    err = np.linalg.norm(pred - P[v, u].reshape(-1, 3)[ok], axis=1)
    # measured 0.08-0.19 x the scene depth over 12 runs (session 15; which frames the node gets
    # varies with timing, and the error with them); issue 11 asks for 0.10, not met yet
    # (docs/measurements.md)
    print(f'learned node query: median error {np.median(err):.3f} m, depth {z_gt:.2f} m')
    assert np.median(err) < 0.45 * z_gt, \
        f'median query error {np.median(err):.3f} m, scene depth {z_gt:.2f} m'
    node.destroy_node()


@pytest.mark.parametrize('unused', [False, True], ids=['no_publisher', 'use_camera_info_false'])
def test_learned_node_without_camera_info(ros_context, start_process, unused) -> None:
    """A plain monocular Image topic and no CameraInfo at all (`unused`: the camera publishes
    one, but use_camera_info is false): the node guesses the intrinsics (the model's focal),
    says so, and publishes clouds, poses and tracks."""
    from fourd_ros.ros.demo.processes import node_argv
    from test_node import REPO
    start_process(*camera_args(rate=8.0), '-p', 'publish_depth:=false', name='camera')
    argv = node_argv(REPO / 'config', 'backend:=auto', 'device:=cpu',
                     *(['use_camera_info:=false'] if unused else []), depth=False)
    if not unused:
        argv[argv.index('camera_info:=/camera/camera_info')] = 'camera_info:=/no_camera_info'
    start_process(*argv, name='node')
    node = rclpy.create_node('observer', context=ros_context)
    rec = Recorder(node)
    for msg_type, topic in ((PointCloud2, '/fourd/points'), (TrackedPoints, '/fourd/tracks'),
                            (DiagnosticArray, '/diagnostics')):
        rec.listen(msg_type, topic)
    rec.listen(TFMessage, '/tf', 100)

    def diagnostics() -> dict:
        return {kv.key: kv.value for msg in rec.msgs.get('/diagnostics', []) for s in msg.status
                for kv in s.values}
    guessed = ('camera_info not used' if unused else 'no camera_info:')
    assert spin_until(node, lambda: rec.count('/fourd/points') >= 5 and rec.count('/tf') > 0
                      and diagnostics().get('camera_model', '').startswith(guessed),
                      timeout=90.0), \
        ({t: rec.count(t) for t in ('/fourd/points', '/tf')}, diagnostics())
    values = diagnostics()
    assert values['backend'] == 'learned' and values['metric'] == 'false', values
    print('without CameraInfo: camera_model', repr(values['camera_model']))
    arr = conv.cloud_to_array(rec.msgs['/fourd/points'][-1])
    assert np.isfinite(arr['z']).mean() > 0.9 and np.nanmin(arr['z']) > 0
    assert len(rec.msgs['/fourd/tracks'][-1].ids) > 0
    node.destroy_node()


def ground_mounting(up: np.ndarray, height: float) -> np.ndarray:
    """4x4 pose of a camera optical frame in a ground robot's base_footprint (on the floor, z
    up, x forward): the camera `height` m above it, `up` (the floor's normal in the optical
    frame) its z axis."""
    forward = np.array([0.0, 0.0, 1.0]) - up[2] * up
    forward /= np.linalg.norm(forward)
    R_cam_base = np.column_stack([forward, np.cross(up, forward), up])
    T = np.eye(4)
    T[:3, :3] = R_cam_base.T
    T[:3, 3] = [0.0, 0.0, height]
    return T


def test_learned_node_on_a_ground_robot_is_metric(ros_context, start_process) -> None:
    """A ground robot's monocular camera: its mounting on /tf_static (base_footprint on the
    floor -> the optical frame, pitched down) and `camera_height` make the learned node's
    clouds metric, and /diagnostics says so."""
    from scipy.spatial.transform import Rotation

    from fourd_ros.core.data.synthetic import generate_clip, SceneConfig
    from fourd_ros.ros.demo.processes import node_argv
    from conftest import PEERS, REPO
    camera = dict(CAMERA, frames=60, camera_motion='ground')
    clip = generate_clip(SceneConfig(frames=camera['frames'], width=camera['width'],
                                     height=camera['height'], seed=camera['seed'],
                                     fps=camera['scene_fps'], camera_motion='ground'))
    ground = clip.ground_plane(0)  # pitch and height stay: the same for every frame
    T = ground_mounting(ground.up, ground.height)
    start_process(str(PEERS / 'tf_static_publisher.py'), 'base_footprint',
                  'camera_optical_frame', *(str(v) for v in (
                      *T[:3, 3], *Rotation.from_matrix(T[:3, :3]).as_quat())), name='urdf')
    start_process(*camera_argv('rate:=8.0', 'publish_depth:=false',
                               *(f'{k}:={v}' for k, v in camera.items())), name='camera')
    start_process(*node_argv(REPO / 'config', 'backend:=learned', 'device:=cpu',
                             'publish_camera_tf:=false', 'base_frame:=base_footprint',
                             f'camera_height:={ground.height}', depth=False), name='node')
    node = rclpy.create_node('observer', context=ros_context)
    rec = Recorder(node)
    rec.listen(PointCloud2, '/fourd/points', 100)
    rec.listen(DiagnosticArray, '/diagnostics')
    rec.listen(PoseStamped, '/camera/ground_truth/pose', 200)
    rec.listen(Odometry, '/fourd/odom', 200)

    def metric_since() -> float | None:
        for msg in rec.msgs.get('/diagnostics', []):
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if values.get('metric') == 'true':
                    # the camera's pitch, read from the mounting on /tf_static
                    pitch = np.degrees(np.arcsin(-ground.up[2]))
                    assert values['scale'].startswith(
                        f'floor, camera_height (metres; camera {pitch:.1f} deg below level, '
                        'roll '), values
                    return conv.stamp_to_sec(msg.header.stamp)
        return None

    def metric_clouds() -> list:
        since = metric_since()
        return [] if since is None else [
            m for m in rec.with_ground_truth('/fourd/points')
            if conv.stamp_to_sec(m.header.stamp) > since]
    assert spin_until(node, lambda: len(metric_clouds()) >= 8, timeout=150.0), \
        f'metric since {metric_since()}, {len(rec.msgs.get("/fourd/points", []))} clouds'
    gt = rec.ground_truth()
    ratios = []
    for cloud in metric_clouds():
        z = conv.cloud_to_array(cloud)['z']
        i = clip_index(clip, gt[conv.stamp_to_sec(cloud.header.stamp)])
        true = cv2.resize(clip.depth[i], (z.shape[1], z.shape[0]),
                          interpolation=cv2.INTER_NEAREST)
        ok = np.isfinite(z) & (z > 0)
        ratios.append(float(np.median(z[ok] / true[ok])))
    print('ground robot, learned node: cloud depth / true depth (median per cloud) '
          + ' '.join(f'{r:.2f}' for r in ratios))
    # the odometry's position is metres once the clouds are: a fusing filter may use it
    last = rec.msgs['/fourd/odom'][-1]
    assert conv.stamp_to_sec(last.header.stamp) > metric_since()
    assert np.allclose(np.diag(np.reshape(last.pose.covariance, (6, 6))), 1e-4)
    # no scale alignment: metres (in-process on this clip at 256x192: within 4 % median)
    assert abs(np.log(np.median(ratios))) < 0.25, ratios
    node.destroy_node()


def test_learned_node_on_an_rgbd_camera_takes_metres_from_its_depth(
        ros_context, start_process, clip) -> None:
    """backend:=learned with the depth remapped: the learned depth brought to the sensor's
    scale, so the clouds are metres (no alignment) and /diagnostics says so."""
    from fourd_ros.ros.demo.processes import node_argv
    from test_node import REPO
    start_process(*camera_args(rate=8.0), name='camera')
    start_process(*node_argv(REPO / 'config', 'backend:=learned', 'device:=cpu'), name='node')
    node = rclpy.create_node('observer', context=ros_context)
    rec = Recorder(node)
    rec.listen(PointCloud2, '/fourd/points', 100)
    rec.listen(DiagnosticArray, '/diagnostics')
    rec.listen(PoseStamped, '/camera/ground_truth/pose', 200)

    def metric_clouds() -> list:
        """The clouds with a true pose stamped after /diagnostics first said metric (under
        load the ground-truth topic can lag the clouds: CI once saw 12 clouds before the
        first true pose)."""
        since = min((conv.stamp_to_sec(m.header.stamp) for m in rec.msgs.get('/diagnostics', [])
                     for s in m.status for kv in s.values
                     if kv.key == 'metric' and kv.value == 'true'), default=None)
        return [] if since is None else [
            m for m in rec.with_ground_truth('/fourd/points')
            if conv.stamp_to_sec(m.header.stamp) > since]
    assert spin_until(node, lambda: len(metric_clouds()) >= 6, timeout=90.0), \
        (rec.count('/fourd/points'), rec.count('/camera/ground_truth/pose'))
    values = {kv.key: kv.value for m in rec.msgs['/diagnostics'] for s in m.status
              for kv in s.values}
    assert values['backend'] == 'learned' and values['scale'].startswith(
        'depth sensor (metres: the learned depth'), values
    gt = rec.ground_truth()
    ratios = []
    for cloud in metric_clouds()[-6:]:
        stamp = conv.stamp_to_sec(cloud.header.stamp)
        z = conv.cloud_to_array(cloud)['z']
        true = cv2.resize(clip.depth[clip_index(clip, gt[stamp])], (z.shape[1], z.shape[0]),
                          interpolation=cv2.INTER_NEAREST)
        ok = np.isfinite(z) & (z > 0)
        ratios.append(float(np.median(z[ok] / true[ok])))
    print('learned node on an RGB-D camera: cloud depth / true depth '
          + ' '.join(f'{r:.3f}' for r in ratios))
    assert ratios and abs(np.log(np.median(ratios))) < 0.1, ratios
    node.destroy_node()
