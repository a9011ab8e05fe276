"""Accumulated, voxel-downsampled map cloud (Open3D), bounded in size."""

from __future__ import annotations

import numpy as np
import open3d as o3d

from fourd_ros.core.geometry import transform_points


class MapAccumulator:
    """Adds static, confident points of each frame; voxel-downsamples; caps the total."""

    def __init__(self, voxel_size: float, max_points: int, pixel_stride: int = 4) -> None:
        self.voxel_size = voxel_size
        self.max_points = max_points
        self.pixel_stride = pixel_stride
        self.reset()

    def reset(self) -> None:
        self.points = np.zeros((0, 3), np.float32)
        self.colors = np.zeros((0, 3), np.uint8)
        self._pending_p: list[np.ndarray] = []
        self._pending_c: list[np.ndarray] = []

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
        """Merge queued points and voxel-downsample (one point per voxel, colours averaged)."""
        if not self._pending_p:
            return
        p = np.concatenate([self.points, *self._pending_p])
        c = np.concatenate([self.colors, *self._pending_c])
        self._pending_p.clear()
        self._pending_c.clear()
        if not len(p):
            return
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p.astype(np.float64)))
        cloud.colors = o3d.utility.Vector3dVector(c.astype(np.float64) / 255.0)
        down = cloud.voxel_down_sample(self.voxel_size)
        self.points = np.asarray(down.points, dtype=np.float32)
        self.colors = np.clip(np.asarray(down.colors) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if len(self.points) > self.max_points:
            # voxel order is arbitrary; a random subset keeps the map's coverage
            idx = np.random.default_rng(0).choice(len(self.points), self.max_points,
                                                  replace=False)
            self.points = self.points[idx]
            self.colors = self.colors[idx]
