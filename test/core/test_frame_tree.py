"""The static frame tree: chains of fixed transforms, as /tf_static gives them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fourd_ros.core.frame_tree import FrameTree
from fourd_ros.core.geometry import invert_pose, make_pose


def random_pose(rng: np.random.Generator) -> np.ndarray:
    return make_pose(Rotation.random(random_state=rng).as_matrix(), rng.normal(size=3))


def test_chains_compose_through_the_common_ancestor() -> None:
    """base_link -> camera_link -> camera_color_optical_frame (a camera driver's frames under a
    URDF) and a second branch base_link -> lidar: any two frames are connected."""
    rng = np.random.default_rng(0)
    A, B, C = random_pose(rng), random_pose(rng), random_pose(rng)
    tree = FrameTree()
    tree.set('base_link', 'camera_link', A)
    tree.set('/camera_link', 'camera_color_optical_frame', B)  # a ROS 1-style leading slash
    tree.set('base_link', 'lidar', C)
    assert np.allclose(tree.lookup('base_link', 'camera_color_optical_frame'), A @ B)
    assert np.allclose(tree.lookup('camera_color_optical_frame', 'base_link'),
                       invert_pose(A @ B))
    assert np.allclose(tree.lookup('lidar', 'camera_color_optical_frame'),
                       invert_pose(C) @ A @ B)
    assert np.allclose(tree.lookup('camera_link', 'camera_link'), np.eye(4))
    assert 'camera_link' in tree and '/lidar' in tree and 'odom' not in tree
    assert tree.frames == ['base_link', 'camera_color_optical_frame', 'camera_link', 'lidar']


def test_unconnected_frames_and_replaced_edges() -> None:
    rng = np.random.default_rng(1)
    tree = FrameTree()
    tree.set('base_link', 'camera_link', random_pose(rng))
    tree.set('map', 'landmark', random_pose(rng))
    assert tree.lookup('base_link', 'landmark') is None
    assert tree.lookup('base_link', 'unknown_frame') is None
    # a later transform for the same child replaces the earlier one (tf2's rule: one parent)
    T = random_pose(rng)
    tree.set('base_link', 'camera_link', T)
    assert np.allclose(tree.lookup('base_link', 'camera_link'), T)
    with pytest.raises(ValueError, match='itself'):
        tree.set('camera_link', '/camera_link', T)


def test_a_loop_does_not_hang() -> None:
    tree = FrameTree()
    tree.set('a', 'b', np.eye(4))
    tree.set('b', 'a', np.eye(4))
    assert tree.lookup('a', 'c') is None
    assert np.allclose(tree.lookup('a', 'b'), np.eye(4))


def test_timed_edges_are_interpolated_at_a_stamp() -> None:
    """/tf's edges (a SLAM's map -> odom, odometry's odom -> base_link) at a time between their
    samples: rotation by slerp, translation linearly; none before the history, the newest a
    little after it; fixed edges below them compose as before."""
    tree = FrameTree(history_s=10.0, max_extrapolation_s=0.5)
    R0, R1 = np.eye(3), Rotation.from_euler('z', 90, degrees=True).as_matrix()
    tree.set('map', 'odom', make_pose(R0, [0.0, 0.0, 0.0]), stamp=1.0)
    tree.set('map', 'odom', make_pose(R1, [2.0, 0.0, 0.0]), stamp=2.0)
    tree.set('odom', 'base_link', np.eye(4), stamp=1.5)
    tree.set('base_link', 'camera_link', make_pose(np.eye(3), [0.0, 0.0, 1.0]))
    T = tree.lookup('map', 'odom', stamp=1.5)
    assert np.allclose(T[:3, 3], [1.0, 0.0, 0.0])
    assert np.isclose(Rotation.from_matrix(T[:3, :3]).magnitude(), np.radians(45.0))
    assert np.allclose(tree.lookup('map', 'camera_link', stamp=1.5)[:3, 3], [1.0, 0.0, 1.0])
    assert tree.lookup('map', 'odom', stamp=0.5) is None           # before the history
    assert np.allclose(tree.lookup('map', 'odom', stamp=2.3)[:3, 3], [2.0, 0.0, 0.0])
    assert tree.lookup('map', 'odom', stamp=3.0) is None           # too far after it
    assert np.allclose(tree.lookup('map', 'odom')[:3, 3], [2.0, 0.0, 0.0])  # newest
    assert tree.lookup('map', 'camera_link', stamp=1.5, timed=False) is None
    assert np.allclose(tree.lookup('base_link', 'camera_link', timed=False)[:3, 3], [0, 0, 1])
    # samples older than the history are forgotten
    tree.set('map', 'odom', np.eye(4), stamp=20.0)
    assert tree.lookup('map', 'odom', stamp=2.0) is None
    assert tree.frames == ['base_link', 'camera_link', 'map', 'odom']
