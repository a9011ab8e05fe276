"""The accumulated map cloud: points a later view sees through (a moving object's ghost) are
carved away; seen surfaces, occluded points and points out of view stay."""

from __future__ import annotations

import numpy as np
import pytest

from fourd_ros.core.geometry import make_pose
from fourd_ros.core.map_cloud import MapAccumulator, seen_through, voxel_downsample

K = np.array([[100.0, 0.0, 40.0], [0.0, 100.0, 30.0], [0.0, 0.0, 1.0]])
H, W = 60, 80


def wall_view(distance: float = 2.0, unknown: bool = True) -> np.ndarray:
    """Depth of a wall `distance` in front of the camera, with two patches of unknown depth."""
    depth = np.full((H, W), distance, np.float32)
    if unknown:
        depth[:10, :10] = 0.0
        depth[-10:, -10:] = np.nan
    return depth


def test_seen_through_only_what_the_view_sees_beyond() -> None:
    T_map_cam = make_pose(np.eye(3), np.array([1.0, -2.0, 0.5]))
    cam = np.array([[0.0, 0.0, 1.0],     # in front of the wall: a ghost
                    [0.0, 0.0, 1.98],    # on the wall (depth noise)
                    [0.0, 0.0, 3.0],     # behind the wall: occluded, unknown
                    [5.0, 0.0, 1.0],     # outside the image
                    [0.0, 0.0, -1.0],    # behind the camera
                    [-0.35, -0.28, 1.0],  # in front of the unknown-depth patch (0)
                    [0.35, 0.28, 1.0]])  # in front of the unknown-depth patch (NaN)
    points = cam + T_map_cam[:3, 3]
    got = seen_through(points, wall_view(), K, T_map_cam, margin=0.05)
    assert got.tolist() == [True, False, False, False, False, False, False]


def test_a_ghost_is_carved_and_the_wall_kept() -> None:
    acc = MapAccumulator(voxel_size=0.05, max_points=10000, pixel_stride=1)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    wall = np.stack([(u - K[0, 2]) / K[0, 0] * 2.0, (v - K[1, 2]) / K[1, 1] * 2.0,
                     np.full(u.shape, 2.0)], axis=-1)
    ghost = wall * 0.5  # a moving object at 1 m the motion mask missed
    rgb = np.zeros((H, W, 3), np.uint8)
    keep = np.ones((H, W), bool)
    acc.add(wall, rgb, keep, np.eye(4))
    acc.add(ghost, rgb + 255, keep, np.eye(4))
    acc.update()
    assert (acc.points[:, 2] < 1.5).sum() > 100 and (acc.points[:, 2] > 1.5).sum() > 100
    # the object has gone: the next view sees the wall behind where it was
    acc.observe(wall_view(unknown=False), K, np.eye(4))
    acc.update()
    assert (acc.points[:, 2] < 1.5).sum() == 0
    assert (acc.colors == 255).sum() == 0
    assert (acc.points[:, 2] > 1.5).sum() > 100


def test_voxel_downsample_averages_each_voxel() -> None:
    points = np.array([[0.01, 0.01, 0.01], [0.03, 0.04, 0.02],  # one voxel
                       [0.06, 0.01, 0.01],                      # the next along x
                       [-0.01, 0.01, 0.01],                     # across the origin
                       [1000.0, -2000.0, 3000.0]])              # far away
    colors = np.array([[0, 0, 0], [255, 100, 51], [7, 8, 9], [1, 2, 3], [4, 5, 6]], np.uint8)
    p, c = voxel_downsample(points, colors, 0.05)
    assert len(p) == 4 and p.dtype == np.float32 and c.dtype == np.uint8
    first = np.flatnonzero(np.isclose(p[:, 0], 0.02))
    assert len(first) == 1
    assert np.allclose(p[first[0]], [0.02, 0.025, 0.015])
    assert c[first[0]].tolist() == [128, 50, 26]  # rounded means
    for alone in points[2:]:  # each in a voxel of its own
        assert np.isclose(p, alone, rtol=1e-6, atol=1e-6).all(axis=1).sum() == 1


def test_saved_map_reads_back_in_open3d(tmp_path) -> None:
    o3d = pytest.importorskip('open3d')
    acc = MapAccumulator(voxel_size=0.05, max_points=1000)
    acc.points = np.array([[0.0, 1.0, 2.0], [3.0, -4.0, 5.5]], np.float32)
    acc.colors = np.array([[255, 0, 10], [1, 2, 3]], np.uint8)
    acc.save(tmp_path / 'map.ply')
    cloud = o3d.io.read_point_cloud(str(tmp_path / 'map.ply'))
    assert np.allclose(np.asarray(cloud.points), acc.points)
    assert np.allclose(np.asarray(cloud.colors) * 255, acc.colors, atol=0.5)


def test_the_map_starts_again_when_its_units_change() -> None:
    """A monocular stream that turns metric (a ground robot's floor) does not mix units."""
    from fourd_ros.core.geometry import unproject_depth
    from fourd_ros.core.types import FrameResult

    def frame(metric: bool, distance: float) -> FrameResult:
        depth = wall_view(distance, unknown=False)
        points = unproject_depth(depth, K).astype(np.float32)
        return FrameResult(
            stamp=0.0, colors=np.zeros((H, W, 3), np.uint8), depth=depth, points_cam=points,
            points_world=points, confidence=np.ones((H, W), np.float32), K=K, T_wc=np.eye(4),
            dynamic_mask=np.zeros((H, W), bool), segments=np.zeros((H, W), np.uint16),
            scene_flow=np.zeros((H, W, 3), np.float32), metric=metric)

    # no carving: a later view must not be what removes the earlier points
    acc = MapAccumulator(voxel_size=0.05, max_points=10000, pixel_stride=2, carve=False)
    acc.add_frame(frame(False, 1.0), np.eye(4))
    acc.add_frame(frame(False, 1.0), np.eye(4))
    acc.update()
    assert len(acc.points) and np.allclose(acc.points[:, 2], 1.0, atol=0.05)
    acc.add_frame(frame(True, 2.5), np.eye(4))  # metres from here on
    acc.update()
    assert len(acc.points) and np.allclose(acc.points[:, 2], 2.5, atol=0.05)
    acc.add_frame(frame(True, 1.0), np.eye(4))  # the same units: kept together
    acc.update()
    assert {1.0, 2.5} == set(np.round(acc.points[:, 2], 1).tolist())
