"""Accumulated, voxel-downsampled map cloud, bounded in size, with the points that a
later view sees through carved away."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fourd_ros.core.geometry import (in_image, invert_pose, nan_to_zero, project,
                                     transform_points)
from fourd_ros.core.types import FrameResult

# a map point is seen through when every depth of the 3 x 3 pixels it projects to lies beyond
# it by this fraction of its depth plus one voxel: depth noise, pose error and the pixel
# grid at depth edges stay below that
SEE_THROUGH_MARGIN = 0.05
MIN_CONFIDENCE = 0.5  # a frame's points enter the map above this confidence
# defaults of the node's map_* parameters and of `fourd run`'s map.ply
VOXEL_SIZE = 0.05  # metres (scene units for a monocular backend)
MAX_POINTS = 300000
UPDATE_EVERY = 5  # frames between merges (and carving)


class MapAccumulator:
    """Adds static, confident points of each frame; voxel-downsamples; caps the total.

    A point that the motion mask missed on a moving object would stay in the map where the
    object once was (a ghost). So at each update the map is checked against the latest view
    (`observe`): points that view sees through, with the measured surface clearly behind
    them, are removed, as in occupancy mapping's free-space carving. A static surface is never
    seen through, so only ghosts (and points of a scene that changed) go.
    """

    def __init__(self, voxel_size: float, max_points: int, pixel_stride: int = 4,
                 carve: bool = True) -> None:
        self.voxel_size = voxel_size
        self.max_points = max_points
        self.pixel_stride = pixel_stride
        self.carve = carve  # False: keep every point (for comparison)
        self.reset()

    def reset(self) -> None:
        self.metric: bool | None = None  # the points' units (None: no frame yet)
        self.points = np.zeros((0, 3), np.float32)
        self.colors = np.zeros((0, 3), np.uint8)
        self._pending_p: list[np.ndarray] = []
        self._pending_c: list[np.ndarray] = []
        self._view: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def observe(self, depth: np.ndarray, K: np.ndarray, T_map_cam: np.ndarray) -> None:
        """Keep the latest view for carving at the next `update`: H x W depth along the optical
        axis (map units; 0 or NaN = unknown), its 3x3 intrinsics and the 4x4 pose of its
        optical frame in the map frame."""
        self._view = (depth, K, T_map_cam)

    def add_frame(self, result: FrameResult, T_map_world: np.ndarray) -> None:
        """Queue a processed frame's static, confident points and keep its view for carving;
        `T_map_world` (4x4) takes the core's world frame to the map frame. A frame in other
        units than the map's (a monocular stream that has just become metric) starts the map
        again: one map, one unit."""
        if self.metric is not None and result.metric != self.metric:
            self.reset()
        self.metric = result.metric
        keep = (result.confidence > MIN_CONFIDENCE) & ~result.dynamic_mask
        self.add(result.points_world, result.colors, keep, T_map_world)
        self.observe(result.depth, result.K, T_map_world @ result.T_wc)

    def save(self, path: str | Path) -> None:
        """Write the map as a PLY cloud (`write_ply`)."""
        write_ply(path, self.points, self.colors)

    def add(self, points: np.ndarray, colors: np.ndarray, keep: np.ndarray,
            T_map_points: np.ndarray) -> None:
        """Queue H x W x 3 points and uint8 colours where `keep` is True.

        `T_map_points` (4x4) takes the points to the map frame; it is applied after the
        pixel subsampling, so only the points kept are transformed.
        """
        s = self.pixel_stride
        p = points[::s, ::s].reshape(-1, 3)
        c = colors[::s, ::s].reshape(-1, 3)
        k = keep[::s, ::s].reshape(-1) & np.isfinite(p).all(axis=1)
        self._pending_p.append(transform_points(T_map_points, p[k]).astype(np.float32))
        self._pending_c.append(c[k])

    def update(self) -> None:
        """Carve the map with the latest view, merge queued points and voxel-downsample (one
        point per voxel, colours averaged)."""
        if self.carve and self._view is not None and len(self.points):
            keep = ~seen_through(self.points, *self._view, margin=self.voxel_size)
            self.points, self.colors = self.points[keep], self.colors[keep]
            self._view = None
        if not self._pending_p:
            return
        p = np.concatenate([self.points, *self._pending_p])
        c = np.concatenate([self.colors, *self._pending_c])
        self._pending_p.clear()
        self._pending_c.clear()
        if not len(p):
            return
        self.points, self.colors = voxel_downsample(p, c, self.voxel_size)
        if len(self.points) > self.max_points:
            # voxel order is arbitrary; a random subset keeps the map's coverage
            idx = np.random.default_rng(0).choice(len(self.points), self.max_points,
                                                  replace=False)
            self.points = self.points[idx]
            self.colors = self.colors[idx]


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Write N x 3 points and N x 3 uint8 colours as a binary PLY cloud: float32 x, y, z and
    uint8 red, green, blue (what Open3D, PCL, CloudCompare and MeshLab read)."""
    vertex = np.empty(len(points), [('x', '<f4'), ('y', '<f4'), ('z', '<f4'),
                                    ('red', 'u1'), ('green', 'u1'), ('blue', 'u1')])
    for k, name in enumerate('xyz'):
        vertex[name] = points[:, k]
    for k, name in enumerate(('red', 'green', 'blue')):
        vertex[name] = colors[:, k]
    header = ('ply\nformat binary_little_endian 1.0\n'
              f'element vertex {len(vertex)}\n'
              'property float x\nproperty float y\nproperty float z\n'
              'property uchar red\nproperty uchar green\nproperty uchar blue\n'
              'end_header\n')
    with open(path, 'wb') as f:
        f.write(header.encode('ascii'))
        f.write(vertex.tobytes())


def voxel_downsample(points: np.ndarray, colors: np.ndarray, voxel_size: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied voxel (cubes of `voxel_size` on a grid through the origin): the
    mean of its N x 3 points (float32) and of their uint8 colours, as Open3D's
    voxel_down_sample computes them (done here in numpy: importing Open3D costs the node
    180 MiB of memory)."""
    keys = np.floor(points / voxel_size).astype(np.int64)
    # one int64 per voxel: 21 bits per axis, +-2^20 voxels (52 km at 5 cm) from the origin
    keys = np.clip(keys + (1 << 20), 0, (1 << 21) - 1)
    packed = (keys[:, 0] << 42) | (keys[:, 1] << 21) | keys[:, 2]
    _, voxel, count = np.unique(packed, return_inverse=True, return_counts=True)
    mean_points = np.stack([np.bincount(voxel, points[:, k].astype(np.float64)) / count
                            for k in range(3)], axis=1).astype(np.float32)
    mean_colors = np.stack([np.bincount(voxel, colors[:, k].astype(np.float64)) / count
                            for k in range(3)], axis=1)
    return mean_points, np.clip(mean_colors + 0.5, 0, 255).astype(np.uint8)


def seen_through(points_map: np.ndarray, depth: np.ndarray, K: np.ndarray, T_map_cam: np.ndarray,
                 margin: float = 0.0) -> np.ndarray:
    """Which of the N x 3 map points a view sees through (N bool): each projects inside the
    H x W `depth` image (optical frame `T_map_cam`, intrinsics `K`), in front of the camera,
    and every valid depth of its 3 x 3 pixels lies beyond it by more than SEE_THROUGH_MARGIN
    of its depth plus `margin` (map units). Unknown depth (0 or NaN) nearby keeps the point."""
    height, width = depth.shape
    # the smallest depth around each pixel; an unknown one (0) keeps the points projected there
    nearest = cv2.erode(nan_to_zero(depth).astype(np.float32), np.ones((3, 3), np.uint8),
                        borderType=cv2.BORDER_REPLICATE)
    uv, z = project(transform_points(invert_pose(T_map_cam), points_map), K)
    inside = (z > 1e-6) & in_image(uv, height, width)  # NaN pixels are outside
    px = np.floor(uv[inside] + 0.5).astype(np.int64)  # the nearest pixel
    seen = nearest[px[:, 1], px[:, 0]]
    out = np.zeros(len(z), bool)
    out[inside] = (seen > 0) & (seen > z[inside] * (1.0 + SEE_THROUGH_MARGIN) + margin)
    return out
