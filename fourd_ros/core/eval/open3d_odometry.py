"""Open3D's RGB-D odometry as a reference on the same frames: frame-to-frame hybrid
(photometric + geometric) odometry, `open3d.pipelines.odometry.compute_rgbd_odometry`, chained
into a trajectory. Used by `fourd bench --real DIR --open3d` to put our rgbd backend's speed and
ATE next to a well-known implementation measured in the same run."""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from fourd_ros.core.geometry import scale_intrinsics
from fourd_ros.core.types import Frame


@dataclass
class Open3dOdometryRun:
    """Poses (F x 4 x 4 camera-to-world, first = identity), frames/s and frames it lost."""

    T_wc: np.ndarray
    fps: float
    failures: int


class Open3dOdometry:
    """Open3D's hybrid RGB-D odometry, one frame at a time (frames with depth and K), at
    ``width`` pixels (the same processing size as our backend; never upsampled). A pair it
    cannot align keeps the last motion. `step` times resizing and odometry, not reading, so
    a bench can interleave it with our backend over the same frames."""

    def __init__(self, width: int = 320, depth_max_m: float = 4.0) -> None:
        import open3d as o3d

        self._o3d = o3d
        self.width, self.depth_max_m = width, depth_max_m
        self._option = o3d.pipelines.odometry.OdometryOption()
        self._jacobian = o3d.pipelines.odometry.RGBDOdometryJacobianFromHybridTerm()
        self._intrinsic = None
        self._prev = None
        self.poses: list[np.ndarray] = []
        self.failures = 0
        self.elapsed = 0.0

    def step(self, frame: Frame) -> None:
        """Track one more frame (its pose appended to ``poses``)."""
        if frame.depth is None or frame.K is None:
            raise ValueError('Open3D RGB-D odometry needs frames with depth and intrinsics')
        o3d = self._o3d
        t0 = time.perf_counter()
        h, w = frame.rgb.shape[:2]
        s = min(self.width, w) / w  # never upsampled, like the engine
        size = (int(round(w * s)), int(round(h * s)))
        rgb = cv2.resize(frame.rgb, size, interpolation=cv2.INTER_AREA)
        depth = cv2.resize(np.nan_to_num(frame.depth).astype(np.float32), size,
                           interpolation=cv2.INTER_NEAREST)
        if self._intrinsic is None:
            K = scale_intrinsics(frame.K, size[0] / w, size[1] / h)
            self._intrinsic = o3d.camera.PinholeCameraIntrinsic(size[0], size[1], K[0, 0],
                                                                K[1, 1], K[0, 2], K[1, 2])
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(rgb)), o3d.geometry.Image(depth),
            depth_scale=1.0, depth_trunc=self.depth_max_m, convert_rgb_to_intensity=True)
        if self._prev is None:
            self.poses.append(np.eye(4))
        else:
            ok, T_prev_cur, _ = o3d.pipelines.odometry.compute_rgbd_odometry(
                rgbd, self._prev, self._intrinsic, np.eye(4), self._jacobian, self._option)
            if not ok:
                self.failures += 1
                T_prev_cur = (np.linalg.inv(self.poses[-2]) @ self.poses[-1]
                              if len(self.poses) > 1 else np.eye(4))
            self.poses.append(self.poses[-1] @ T_prev_cur)
        self._prev = rgbd
        self.elapsed += time.perf_counter() - t0

    def run(self) -> Open3dOdometryRun:
        """The poses so far, frames/s and failures."""
        n = len(self.poses)
        return Open3dOdometryRun(np.asarray(self.poses).reshape(n, 4, 4),
                                 n / self.elapsed if self.elapsed > 0 else float('nan'),
                                 self.failures)
