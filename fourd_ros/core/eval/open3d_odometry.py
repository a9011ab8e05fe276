"""Open3D's RGB-D odometry as a reference on the same frames: frame-to-frame hybrid
(photometric + geometric) odometry, `open3d.pipelines.odometry.compute_rgbd_odometry`, chained
into a trajectory. Used by `fourd bench --real DIR --open3d` to put our rgbd backend's speed and
ATE next to a well-known implementation measured in the same run."""

from __future__ import annotations

import time
from collections.abc import Iterable
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


def open3d_rgbd_odometry(frames: Iterable[Frame], width: int = 320,
                         depth_max_m: float = 4.0) -> Open3dOdometryRun:
    """Chain Open3D's hybrid RGB-D odometry over `frames` (with depth and K) at `width` pixels
    (the same processing size as our backend). A pair it cannot align keeps the last motion.
    Time counts resizing and odometry, not reading."""
    import open3d as o3d

    odo = o3d.pipelines.odometry
    option = odo.OdometryOption()
    jacobian = odo.RGBDOdometryJacobianFromHybridTerm()
    poses = [np.eye(4)]
    prev = None
    intrinsic = None
    failures = 0
    elapsed = 0.0
    n = 0
    for frame in frames:
        if frame.depth is None or frame.K is None:
            raise ValueError('open3d_rgbd_odometry needs frames with depth and intrinsics')
        t0 = time.perf_counter()
        h, w = frame.rgb.shape[:2]
        s = min(width, w) / w  # never upsampled, like the engine
        size = (width, int(round(h * s)))
        rgb = cv2.resize(frame.rgb, size, interpolation=cv2.INTER_AREA)
        depth = cv2.resize(np.nan_to_num(frame.depth).astype(np.float32), size,
                           interpolation=cv2.INTER_NEAREST)
        if intrinsic is None:
            K = scale_intrinsics(frame.K, size[0] / w, size[1] / h)
            intrinsic = o3d.camera.PinholeCameraIntrinsic(size[0], size[1], K[0, 0], K[1, 1],
                                                          K[0, 2], K[1, 2])
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(rgb)), o3d.geometry.Image(depth),
            depth_scale=1.0, depth_trunc=depth_max_m, convert_rgb_to_intensity=True)
        if prev is not None:
            ok, T_prev_cur, _ = odo.compute_rgbd_odometry(rgbd, prev, intrinsic, np.eye(4),
                                                          jacobian, option)
            if not ok:
                failures += 1
                T_prev_cur = (np.linalg.inv(poses[-2]) @ poses[-1]) if len(poses) > 1 \
                    else np.eye(4)
            poses.append(poses[-1] @ T_prev_cur)
        prev = rgbd
        elapsed += time.perf_counter() - t0
        n += 1
    return Open3dOdometryRun(np.asarray(poses[:n]), n / elapsed if elapsed > 0 else float('nan'),
                             failures)
