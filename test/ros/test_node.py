"""fourd_node end to end over DDS: the synthetic camera and the node run as real processes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import CAMERA, PEERS, REPO, spin_until
from scipy.spatial.transform import Rotation

rclpy = pytest.importorskip('rclpy')
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from fourd_ros_msgs.msg import TrackedPoints  # noqa: E402
from fourd_ros_msgs.srv import GetTrajectory, QueryMotion  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from geometry_msgs.msg import Point, PoseStamped  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from fourd_ros.core.geometry import invert_pose, transform_points  # noqa: E402
from fourd_ros.ros import conversions as conv  # noqa: E402
from fourd_ros.ros.demo.processes import camera_argv, node_argv  # noqa: E402
from fourd_ros.ros.qos import TF_STATIC_QOS  # noqa: E402

pytestmark = pytest.mark.ros


def camera_args(rate: float = 10.0, *extra: str) -> list[str]:
    """The synthetic camera of `CAMERA`; `extra` are parameters NAME:=VALUE."""
    return camera_argv(f'rate:={rate}', *(f'{k}:={v}' for k, v in CAMERA.items()), *extra)


def node_args(*extra: str, namespace: str = '') -> list[str]:
    """fourd_node on the synthetic RGB-D camera, wired by remaps (the ROS 2 way) and backend
    rgbd; `extra` are parameters NAME:=VALUE. Reliable input QoS: the ground-truth floors are
    set for a stream without lost frames (a stall on this 2-core machine drops best-effort
    frames; docs/history.md)."""
    args = node_argv(REPO / 'config', 'backend:=rgbd', 'image_qos:=reliable', *extra)
    if namespace:
        args += ['-r', f'__ns:={namespace}']
    return args


class Recorder:
    """Collects messages of several topics in the test process."""

    def __init__(self, node) -> None:
        self.node = node
        self.msgs: dict[str, list] = {}

    def listen(self, msg_type, topic: str, qos=10) -> None:
        self.node.create_subscription(msg_type, topic,
                                      lambda m: self.msgs.setdefault(topic, []).append(m), qos)

    def count(self, topic: str) -> int:
        return len(self.msgs.get(topic, []))

    def ground_truth(self) -> dict[float, np.ndarray]:
        """The synthetic camera's true poses received so far, by stamp (s)."""
        return {conv.stamp_to_sec(m.header.stamp): conv.pose_to_matrix(m.pose)
                for m in self.msgs.get('/camera/ground_truth/pose', [])}

    def with_ground_truth(self, topic: str) -> list:
        """The messages of `topic` whose stamp has a true pose (under load the ground-truth
        topic can lag the outputs or drop a message)."""
        gt = self.ground_truth()
        return [m for m in self.msgs.get(topic, []) if conv.stamp_to_sec(m.header.stamp) in gt]

    def poses_with_ground_truth(self, child_frame: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(odom -> child_frame from /tf, GT camera pose) pairs with the same stamp."""
        gt = self.ground_truth()
        pairs = []
        for msg in self.msgs.get('/tf', []):
            for t in msg.transforms:
                s = conv.stamp_to_sec(t.header.stamp)
                if t.child_frame_id == child_frame and s in gt:
                    pairs.append((conv.transform_to_matrix(t.transform), gt[s]))
        return pairs


def call(node, client, request, timeout: float = 20.0, attempts: int = 2):
    """The answer to `request`; a call without an answer after `timeout` s is sent again (Fast
    DDS loses a service sample on rare occasions; every service these tests call is
    idempotent)."""
    assert spin_until(node, client.service_is_ready, timeout=30.0), 'service never appeared'
    for _ in range(attempts):
        future = client.call_async(request)
        if spin_until(node, future.done, timeout=timeout):
            return future.result()
    raise AssertionError(f'service call timed out {attempts} times')


def clip_index(clip, T_map_cam: np.ndarray) -> int:
    """Clip frame whose ground-truth pose is the given one (the camera plays ping-pong)."""
    T_wc = invert_pose(conv.T_LINK_FROM_OPTICAL) @ T_map_cam
    d = np.linalg.norm(clip.T_wc[:, :3, 3] - T_wc[:3, 3], axis=1) + np.linalg.norm(
        clip.T_wc[:, :3, :3] - T_wc[:3, :3], axis=(1, 2))
    return int(np.argmin(d))


def camera_path_error(rec: Recorder) -> tuple[float, np.ndarray, int]:
    """(RMSE in metres, map -> GT map transform, poses compared) of the node's camera path
    against the ground truth. The node's world is the camera at the first image it processed,
    the GT map frame the clip's first camera: one rigid offset (taken from the first common
    stamp) relates them."""
    pairs = rec.poses_with_ground_truth('camera_link')
    est = [T @ conv.T_LINK_FROM_OPTICAL for T, _ in pairs]
    ref = [T for _, T in pairs]
    T_align = ref[0] @ invert_pose(est[0])
    err = [np.linalg.norm((T_align @ e)[:3, 3] - r[:3, 3]) for e, r in zip(est, ref)]
    return float(np.sqrt(np.mean(np.square(err)))), T_align, len(pairs)


def pixel_query_error(node, rec: Recorder, clip, T_align: np.ndarray, pixels: np.ndarray,
                      truth_pixels: np.ndarray) -> tuple[float, float]:
    """(VALID share of the GT-visible points, median error in metres) of a PIXEL query 10
    frames back at the latest frame whose ground-truth pose has arrived (under load the GT
    topic can lag behind the clouds). `pixels` (N x 2) are sent; `truth_pixels` (N x 2 int)
    are the clip's pinhole pixels they show."""
    gt = rec.ground_truth()
    clouds = rec.with_ground_truth('/fourd/points')
    assert len(clouds) >= 11
    source_stamp, target_stamp = clouds[-11].header.stamp, clouds[-1].header.stamp
    request = QueryMotion.Request(query_type=QueryMotion.Request.QUERY_PIXEL,
                                  source_stamp=source_stamp, target_stamp=target_stamp)
    request.points = [Point(x=float(a), y=float(b)) for a, b in pixels]
    response = call(node, node.create_client(QueryMotion, '/fourd/query_motion'), request)
    assert response.success, response.message
    assert response.header.frame_id == 'map'
    i = clip_index(clip, gt[conv.stamp_to_sec(source_stamp)])
    j = clip_index(clip, gt[conv.stamp_to_sec(target_stamp)])
    P, visible = clip.points_at(i, j)
    u, v = truth_pixels.T
    P_map = transform_points(conv.T_LINK_FROM_OPTICAL, P[v, u])
    pos = np.array([[p.x, p.y, p.z] for p in response.positions])
    ok = visible[v, u] & (np.array(response.status) == QueryMotion.Response.VALID)
    err = np.linalg.norm(transform_points(T_align, pos[ok]) - P_map[ok], axis=1)
    return ok.sum() / visible[v, u].sum(), float(np.median(err))


def test_outputs_follow_ground_truth(ros_context, start_process, clip) -> None:
    start_process(*camera_args(), name='camera')
    start_process(*node_args(), name='node')
    node = rclpy.create_node('observer', context=ros_context)
    rec = Recorder(node)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         reliability=ReliabilityPolicy.RELIABLE)
    rec.listen(PointCloud2, '/fourd/points')
    rec.listen(PointCloud2, '/fourd/map_points', latched)
    rec.listen(TFMessage, '/tf', 100)
    rec.listen(TFMessage, '/tf_static', latched)
    rec.listen(TrackedPoints, '/fourd/tracks')
    rec.listen(PoseStamped, '/camera/ground_truth/pose', 100)
    # discovery order is random: wait until enough frames were seen with their ground truth
    assert spin_until(node, lambda: rec.count('/fourd/points') >= 25 and len(
        rec.poses_with_ground_truth('camera_link')) >= 20, timeout=90.0), \
        f'too few clouds: {rec.count("/fourd/points")}'

    # clouds: organized, camera optical frame, documented fields
    cloud = rec.msgs['/fourd/points'][-1]
    assert cloud.header.frame_id == 'camera_optical_frame'
    assert (cloud.height, cloud.width) == (CAMERA['height'], CAMERA['width'])
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb', 'confidence', 'segment',
                                              'vx', 'vy', 'vz']
    arr = conv.cloud_to_array(cloud)
    assert np.isfinite(arr['z']).mean() > 0.9 and np.nanmin(arr['z']) > 0
    assert spin_until(node, lambda: rec.count('/fourd/map_points') > 0, timeout=10.0)
    assert rec.msgs['/fourd/map_points'][-1].header.frame_id == 'map'
    assert rec.msgs['/fourd/map_points'][-1].width > 100

    # TF: map -> odom -> camera_link (dynamic) -> camera_optical_frame (static), one parent each
    parents: dict[str, set[str]] = {}
    for msg in rec.msgs['/tf'] + rec.msgs['/tf_static']:
        for t in msg.transforms:
            parents.setdefault(t.child_frame_id, set()).add(t.header.frame_id)
    assert all(len(p) == 1 for p in parents.values()), parents
    chain, frame = [], 'camera_optical_frame'
    while frame in parents:
        frame = next(iter(parents[frame]))
        chain.append(frame)
    assert chain[-1] == 'map' and 'odom' in chain, chain

    # tracks
    tracks = rec.msgs['/fourd/tracks'][-1]
    assert tracks.header.frame_id == 'map' and len(tracks.ids) > 50
    assert len(tracks.positions) == len(tracks.ids) == len(tracks.status)

    # camera poses follow the ground truth
    ate, T_align, n_poses = camera_path_error(rec)
    assert n_poses >= 20
    print(f'node camera ATE {ate * 1e3:.2f} mm')
    # the frames the node gets vary with the machine's timing: 34 runs alone gave ATE 0.5-2.8 mm
    # and one more failed a 3.1 mm floor; VALID 96-100 % of the visible query points, median
    # query error 0.4-1.7 mm; inside the full suite in CI, ATE 2.9 mm with query error 2.5 mm.
    # Floors about 25 % beyond the worst
    assert ate < 0.004, f'camera path {ate * 1e3:.2f} mm RMSE from the ground truth'

    # query: pixels of the frame 10 frames back
    v, u = np.mgrid[10:CAMERA['height']:12, 10:CAMERA['width']:12]
    grid = np.stack([u.ravel(), v.ravel()], 1)
    valid, err = pixel_query_error(node, rec, clip, T_align, grid, grid)
    print(f'node figures: camera ATE {ate * 1e3:.2f} mm, VALID {valid:.0%} of the visible '
          f'query points, median query error {err * 1e3:.1f} mm')
    assert valid > 0.85
    assert err < 0.003, f'median query error {err * 1e3:.1f} mm'

    # trajectory service
    traj = call(node, node.create_client(GetTrajectory, '/fourd/get_trajectory'),
                GetTrajectory.Request())
    assert traj.success and len(traj.path.poses) >= 25
    node.destroy_node()


def follows_ground_truth(ros_context, clip, label: str, camera_model: str,
                         pixels: np.ndarray | None = None,
                         truth: np.ndarray | None = None) -> None:
    """Records the running node's clouds and poses, then asserts its `camera_model` diagnostic,
    and that its camera path and a PIXEL query (`pixels`, showing the clip's pinhole pixels
    `truth`; default: a grid of pinhole pixels) are within the pinhole camera's floors (5 mm
    path, 4 mm median answer)."""
    node = rclpy.create_node('observer', context=ros_context)
    rec = Recorder(node)
    rec.listen(PointCloud2, '/fourd/points')
    rec.listen(TFMessage, '/tf', 100)
    rec.listen(PoseStamped, '/camera/ground_truth/pose', 100)
    rec.listen(DiagnosticArray, '/diagnostics')
    assert spin_until(node, lambda: rec.count('/fourd/points') >= 25 and len(
        rec.poses_with_ground_truth('camera_link')) >= 20, timeout=90.0), \
        f'too few clouds: {rec.count("/fourd/points")}'
    assert spin_until(node, lambda: rec.count('/diagnostics') > 0, timeout=10.0)
    diagnostics = {kv.key: kv.value for kv in rec.msgs['/diagnostics'][-1].status[0].values}
    assert diagnostics['camera_model'] == camera_model, diagnostics
    # no camera driver latches the optical frame here: the node waited its 3 s for one
    # (TF_STATIC_GRACE_S) while the 10 Hz camera's frames replaced each other in its queue
    assert 10 <= int(diagnostics['dropped_frames_at_start']) <= int(
        diagnostics['dropped_frames']), diagnostics
    ate, T_align, _ = camera_path_error(rec)
    if truth is None:
        v, u = np.mgrid[10:CAMERA['height']:12, 10:CAMERA['width']:12]
        truth = np.stack([u.ravel(), v.ravel()], 1)
    valid, err = pixel_query_error(node, rec, clip, T_align,
                                   truth if pixels is None else pixels, truth)
    print(f'{label}: camera ATE {ate * 1e3:.2f} mm, VALID {valid:.0%} of the visible query '
          f'points, median query error {err * 1e3:.1f} mm')
    assert ate < 0.005, f'camera path {ate * 1e3:.2f} mm RMSE from the ground truth'
    assert valid > 0.85
    assert err < 0.004, f'median query error {err * 1e3:.1f} mm'
    node.destroy_node()


def test_a_raw_camera_with_lens_distortion(ros_context, start_process, clip) -> None:
    """A raw image of a barrel-distorted lens (camera_info's plumb_bob coefficients) is
    undistorted before processing: the camera path and the answers to pixels of the raw image
    stay on the ground truth. Measured: path 0.88 mm, answers 0.6 mm (the pinhole camera's
    figures); the same camera taken as a pinhole one (image_rectified:=true): 18.5 and 43.5 mm."""
    from fourd_ros.core.data.camera_model import Distortion
    k1 = -0.25
    start_process(*camera_args(10.0, f'distortion_k1:={k1}'), name='camera')
    start_process(*node_args(), name='node')
    # query pixels of the raw image: where the lens puts the clip's pinhole pixels
    v, u = np.mgrid[16:CAMERA['height'] - 16:10, 16:CAMERA['width'] - 16:10]
    truth = np.stack([u.ravel(), v.ravel()], 1)
    rays = np.c_[truth, np.ones(len(truth))] @ np.linalg.inv(clip.K).T
    lens = Distortion('plumb_bob', (k1, 0.0, 0.0, 0.0, 0.0))
    raw = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), clip.K, lens.array())[0]
    follows_ground_truth(ros_context, clip, f'distorted camera (k1 {k1})',
                         'plumb_bob, undistorted', raw.reshape(-1, 2), truth)


def test_compressed_image_transport(ros_context, start_process, clip) -> None:
    """A camera that publishes only image_transport's compressed topics (JPEG colour,
    compressedDepth PNG depth): the node reads them and stays on the ground truth (measured:
    path 0.34 mm, answers 0.6 mm)."""
    start_process(*camera_args(10.0, 'image_transport:=compressed'), name='camera')
    start_process(*node_args('image_transport:=compressed',
                             'depth_image_transport:=compressedDepth'), name='node')
    follows_ground_truth(ros_context, clip, 'compressed transport', 'pinhole (no distortion)')


def test_evicted_stamp_answers_out_of_window(ros_context, start_process) -> None:
    start_process(*camera_args(), name='camera')
    start_process(*node_args('cache_recent_frames:=3', 'cache_max_keyframes:=0'), name='node')
    node = rclpy.create_node('observer', context=ros_context)
    rec = Recorder(node)
    rec.listen(PointCloud2, '/fourd/points')
    assert spin_until(node, lambda: rec.count('/fourd/points') >= 8, timeout=90.0)
    client = node.create_client(QueryMotion, '/fourd/query_motion')
    request = QueryMotion.Request(query_type=QueryMotion.Request.QUERY_PIXEL,
                                  source_stamp=rec.msgs['/fourd/points'][1].header.stamp,
                                  points=[Point(x=10.0, y=10.0), Point(x=50.0, y=60.0)])
    response = call(node, client, request)
    assert response.success
    assert list(response.status) == [QueryMotion.Response.OUT_OF_WINDOW] * 2
    assert 'evicted' in response.message
    # a stamp never seen at all is also OUT_OF_WINDOW, with a different explanation
    request.source_stamp.sec = 1
    response = call(node, client, request)
    assert response.success and 'never processed' in response.message
    node.destroy_node()


@pytest.mark.parametrize('direct', [False, True])
def test_a_camera_driver_owns_the_optical_frame(ros_context, start_process, direct) -> None:
    """The defaults (publish_camera_tf true, base_frame camera_link) beside a driver that
    latches the optical frame's mounting: camera_link -> camera_color_frame ->
    camera_color_optical_frame (a RealSense's chain), or camera_link ->
    camera_color_optical_frame directly (`direct`: the same parent the node would use). The
    node adds no second parent and no second value for the optical frame, and takes the
    mounting from the driver (its 15 mm offset shows in answers asked in camera_link)."""
    D = np.eye(4)
    D[:3, 3] = [0.0, 0.015, 0.0]
    C = conv.T_LINK_FROM_OPTICAL.copy()
    q = Rotation.from_matrix(C[:3, :3]).as_quat()
    if direct:
        start_process(str(PEERS / 'tf_static_publisher.py'), 'camera_link',
                      'camera_color_optical_frame', *(str(v) for v in (*D[:3, 3], *q)),
                      name='driver')
    else:
        start_process(str(PEERS / 'tf_static_publisher.py'), 'camera_link',
                      'camera_color_frame', *(str(v) for v in (*D[:3, 3], 0, 0, 0, 1)),
                      name='driver_link')
        start_process(str(PEERS / 'tf_static_publisher.py'), 'camera_color_frame',
                      'camera_color_optical_frame', *(str(v) for v in (0, 0, 0, *q)),
                      name='driver_optical')
    node = rclpy.create_node('observer', context=ros_context)
    rec = Recorder(node)
    rec.listen(TFMessage, '/tf_static', TF_STATIC_QOS)
    rec.listen(PointCloud2, '/fourd/points', 10)

    def transforms() -> list:
        return [t for m in rec.msgs.get('/tf_static', []) for t in m.transforms]

    # the driver's frames are latched before the camera's images flow, as a driver does
    assert spin_until(node, lambda: len(transforms()) >= 2 - direct, timeout=30.0)
    start_process(*camera_args(10.0, 'frame_id:=camera_color_optical_frame'), name='camera')
    start_process(*node_args(), name='node')
    assert spin_until(node, lambda: rec.count('/fourd/points') >= 5, timeout=90.0)
    parents = {t.child_frame_id: t.header.frame_id for t in transforms()}
    assert parents['camera_color_optical_frame'] == ('camera_link' if direct else
                                                     'camera_color_frame'), transforms()
    for t in transforms():  # one value per edge: the driver's (the node's has no offset)
        if t.child_frame_id == 'camera_color_optical_frame' and direct:
            assert abs(t.transform.translation.y - 0.015) < 1e-9, t
        assert (t.header.frame_id, t.child_frame_id) != ('camera_link',
                                                         'camera_color_optical_frame') or direct
    cloud = rec.msgs['/fourd/points'][-1]
    xyz = conv.cloud_to_array(cloud)[cloud.height // 2, cloud.width // 2]
    p = np.array([xyz['x'], xyz['y'], xyz['z']], np.float64)
    request = QueryMotion.Request(query_type=QueryMotion.Request.QUERY_POINT,
                                  source_stamp=cloud.header.stamp,
                                  target_stamp=cloud.header.stamp,
                                  source_frame='camera_color_optical_frame',
                                  target_frame='camera_link',
                                  points=[Point(x=p[0], y=p[1], z=p[2])])
    response = call(node, node.create_client(QueryMotion, '/fourd/query_motion'), request)
    assert response.success, response.message
    got = response.positions[0]
    assert np.allclose([got.x, got.y, got.z], transform_points(D @ C, p[None])[0], atol=1e-3)
    node.destroy_node()


def test_camera_extrinsics_from_tf_static(ros_context, start_process) -> None:
    """base_frame != camera frame: the node looks base -> camera up on /tf_static through a
    chain of two broadcasters (a URDF's base_link -> camera_link and a camera driver's
    camera_link -> camera_color_optical_frame, the image's frame_id), answers queries in those
    frames, and follows the one-parent rule when told at run time."""
    # a camera mounted 0.2 m forward and 0.5 m up on the robot, looking forward (optical axes)
    A = np.eye(4)
    A[:3, 3] = [0.2, 0.0, 0.5]
    C = conv.T_LINK_FROM_OPTICAL.copy()
    B = A @ C
    q = Rotation.from_matrix(C[:3, :3]).as_quat()
    start_process(str(PEERS / 'tf_static_publisher.py'), 'base_link', 'camera_link',
                  *(str(v) for v in (*A[:3, 3], 0, 0, 0, 1)), name='urdf')
    start_process(str(PEERS / 'tf_static_publisher.py'), 'camera_link',
                  'camera_color_optical_frame', *(str(v) for v in (0, 0, 0, *q)),
                  name='driver')
    start_process(*camera_args(10.0, 'frame_id:=camera_color_optical_frame'), name='camera')
    start_process(*node_args('publish_camera_tf:=false', 'base_frame:=base_link'), name='node')
    node = rclpy.create_node('observer', context=ros_context)
    rec = Recorder(node)
    rec.listen(TFMessage, '/tf', 100)
    rec.listen(PoseStamped, '/camera/ground_truth/pose', 100)
    rec.listen(PointCloud2, '/fourd/points', 10)
    rec.listen(TrackedPoints, '/fourd/tracks', 10)
    assert spin_until(node, lambda: len(rec.poses_with_ground_truth('base_link')) >= 15,
                      timeout=90.0)
    for msg in rec.msgs['/tf']:
        for t in msg.transforms:
            assert t.child_frame_id not in ('camera_link', 'camera_color_optical_frame')
    pairs = rec.poses_with_ground_truth('base_link')
    cams = [T @ B for T, _ in pairs]
    ref = [T for _, T in pairs]
    # odom is the base at the first image (the first /tf may predate our subscription: ask the
    # trajectory service, which has every pose)
    traj = call(node, node.create_client(GetTrajectory, '/fourd/get_trajectory'),
                GetTrajectory.Request())
    assert traj.success and traj.path.header.frame_id == 'odom'
    assert np.allclose(conv.pose_to_matrix(traj.path.poses[0].pose), np.eye(4), atol=1e-6)
    T_align = ref[0] @ invert_pose(cams[0])
    err = [np.linalg.norm((T_align @ c)[:3, 3] - r[:3, 3]) for c, r in zip(cams, ref)]
    rmse = float(np.sqrt(np.mean(np.square(err))))
    print(f'camera path through the TF extrinsics: {rmse * 1e3:.2f} mm RMSE')
    # measured 0.6-1.4 mm in 6 runs; the same scene as the test above (up to 2.8 mm there)
    assert rmse < 0.004
    # a point of the latest image, asked in the optical frame and answered in the frames of
    # /tf_static's chain at the same stamp: the extrinsics applied
    cloud = rec.msgs['/fourd/points'][-1]
    assert cloud.header.frame_id == 'camera_color_optical_frame'
    xyz = conv.cloud_to_array(cloud)[cloud.height // 2, cloud.width // 2]
    p = np.array([xyz['x'], xyz['y'], xyz['z']], np.float64)
    query = node.create_client(QueryMotion, '/fourd/query_motion')
    for frame, T in (('camera_link', C), ('base_link', B)):
        request = QueryMotion.Request(query_type=QueryMotion.Request.QUERY_POINT,
                                      source_stamp=cloud.header.stamp,
                                      target_stamp=cloud.header.stamp,
                                      source_frame='camera_color_optical_frame',
                                      target_frame=frame, points=[Point(x=p[0], y=p[1],
                                                                        z=p[2])])
        response = call(node, query, request)
        assert response.success, response.message
        got = response.positions[0]
        assert np.allclose([got.x, got.y, got.z], transform_points(T, p[None])[0], atol=1e-3)
    # another node takes over odom -> base_link and map -> odom (parameters set at run time)
    params = node.create_client(SetParameters, '/fourd/set_parameters')

    def set_and_see_base_to_odom_only(name: str, value: bool) -> None:
        """Set a parameter at run time; then the node's /tf is base_link -> odom alone and
        the tracks are in odom."""
        answer = call(node, params, SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg()]))
        assert all(r.successful for r in answer.results)
        rec.msgs['/tf'].clear()
        rec.msgs['/fourd/tracks'].clear()
        assert spin_until(node, lambda: rec.count('/tf') >= 3
                          and rec.count('/fourd/tracks') >= 2, timeout=20.0)
        edges = {(t.header.frame_id, t.child_frame_id) for m in rec.msgs['/tf'][1:]
                 for t in m.transforms}
        assert edges == {('base_link', 'odom')}, edges
        assert rec.msgs['/fourd/tracks'][-1].header.frame_id == 'odom'

    # invert_odom_to_base_tf alone already drops map -> odom (odom has base_link as parent)
    set_and_see_base_to_odom_only('invert_odom_to_base_tf', True)
    set_and_see_base_to_odom_only('publish_map_to_odom_tf', False)
    answer = call(node, params, SetParameters.Request(parameters=[
        Parameter('image_transport', value='jpeg').to_parameter_msg()]))
    assert not answer.results[0].successful  # read-only: needs a restart
    # a SLAM publishes map -> odom on /tf (and the node odom -> base_link again: odom keeps
    # one parent): answers asked in map go through it at the stamp (interpolated between its
    # samples, as tf2 does)
    answer = call(node, params, SetParameters.Request(parameters=[
        Parameter('invert_odom_to_base_tf', value=False).to_parameter_msg()]))
    assert answer.results[0].successful
    rec.msgs['/fourd/points'].clear()
    assert spin_until(node, lambda: rec.count('/fourd/points') >= 2, timeout=20.0)
    cloud = rec.msgs['/fourd/points'][-1]
    t = conv.stamp_to_sec(cloud.header.stamp)
    slam = node.create_publisher(TFMessage, '/tf', 10)
    T_map_odom = np.eye(4)
    T_map_odom[:3, 3] = [1.0, 2.0, 0.0]
    samples = []
    for dt, x in ((-0.05, 0.9), (0.05, 1.1)):  # x = 1.0 at the cloud's stamp
        T = T_map_odom.copy()
        T[0, 3] = x
        samples.append(conv.matrix_to_transform(T, 'map', 'odom', conv.sec_to_stamp(t + dt)))
    assert spin_until(node, lambda: slam.get_subscription_count() > 0, timeout=10.0)
    request.source_stamp = request.target_stamp = cloud.header.stamp
    xyz = conv.cloud_to_array(cloud)[cloud.height // 2, cloud.width // 2]
    p = np.array([xyz['x'], xyz['y'], xyz['z']], np.float64)
    request.points = [Point(x=p[0], y=p[1], z=p[2])]
    request.target_frame = 'odom'
    in_odom = call(node, query, request).positions[0]
    request.target_frame = 'map'
    for _ in range(20):  # until the node has the SLAM's samples (sent again each time)
        slam.publish(TFMessage(transforms=samples))
        spin_until(node, lambda: False, timeout=0.2)
        response = call(node, query, request)
        if response.success:
            break
        spin_until(node, lambda: False, timeout=0.5)
    assert response.success, response.message
    got = response.positions[0]
    assert np.allclose([got.x, got.y, got.z],
                       transform_points(T_map_odom, np.array([[in_odom.x, in_odom.y,
                                                               in_odom.z]]))[0], atol=1e-3)
    request.target_frame = 'no_such_frame'
    response = call(node, query, request)
    assert not response.success and 'no_such_frame' in response.message
    node.destroy_node()
