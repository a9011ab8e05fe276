"""Dense optical flow shared by the backends: OpenCV DIS started from the flow the camera motion
alone would cause (a static scene), so that DIS only has to find the objects' own motion."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from fourd_ros.core.geometry import invert_pose, pixel_grid, project, transform_points

DIS_PRESETS = {
    'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
    'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def rigid_flow(points_world: np.ndarray, T_wc: np.ndarray, K: np.ndarray) -> np.ndarray:
    """H x W x 2 flow (pixels) that a static scene would show in a camera at T_wc (0 where the
    points are invalid or behind the camera)."""
    h, w = points_world.shape[:2]
    uv, z = project(transform_points(invert_pose(T_wc), points_world), K)
    u, v = pixel_grid(h, w)
    flow = (uv - np.stack([u, v], axis=-1)).astype(np.float32)
    flow[~(np.isfinite(flow).all(axis=-1) & (z > 0))] = 0.0
    return flow


class DisFlow:
    """DIS optical flow with one OpenCV instance per thread (they are not thread-safe).

    Args:
        preset: 'ultrafast', 'fast' or 'medium'.
        smoothness, gradient_weight: variational refinement alpha and gamma (a weaker
            smoothness than OpenCV's default alpha 20 halves DIS's underestimate of small moving
            objects' motion, measured on synthetic GT flow).
    """

    def __init__(self, preset: str = 'medium', smoothness: float = 10.0,
                 gradient_weight: float = 20.0) -> None:
        if preset not in DIS_PRESETS:
            raise ValueError(f'flow preset must be one of {sorted(DIS_PRESETS)}')
        self.preset, self.smoothness, self.gradient_weight = preset, smoothness, gradient_weight
        self._local = threading.local()

    def __call__(self, first: np.ndarray, second: np.ndarray,
                 init: np.ndarray | None = None) -> np.ndarray:
        """H x W x 2 float32 flow from uint8 grey `first` to `second`, started from `init`."""
        dis = getattr(self._local, 'dis', None)
        if dis is None:
            dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
            dis.setVariationalRefinementAlpha(self.smoothness)
            dis.setVariationalRefinementGamma(self.gradient_weight)
            self._local.dis = dis
        # DIS starts from a given flow of the right size
        return dis.calc(first, second, None if init is None
                        else np.ascontiguousarray(init, np.float32))
