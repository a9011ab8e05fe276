"""Trajectory comparison of the demo: Path/Pose to matrices, ground-truth alignment, error."""

from __future__ import annotations

from typing import Any

import numpy as np

from fourd_ros.core.geometry import umeyama
from fourd_ros.ros.demo.messages import _stamp_ns


def pose_to_matrix(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4."""
    from scipy.spatial.transform import Rotation
    q, p = pose.orientation, pose.position
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    T[:3, 3] = [p.x, p.y, p.z]
    return T


def path_poses(path_msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(stamps ns, M x 4 x 4 poses) of a nav_msgs/Path."""
    stamps = np.array([_stamp_ns(p.header.stamp) for p in path_msg.poses], np.int64)
    poses = np.array([pose_to_matrix(p.pose) for p in path_msg.poses], float).reshape(-1, 4, 4)
    return stamps, poses


def align_ground_truth(stamps: np.ndarray, poses: np.ndarray, gt: dict[int, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """Ground-truth base poses expressed in the node's odom frame: (stamps ns, K x 4 x 4).

    The synthetic camera's ground truth is the optical frame's pose in a world whose origin is
    the first frame of its clip; the node's odom frame starts at the first frame it processed.
    Both are tied together at the earliest estimated pose that has ground truth (the node's
    first frame when it was received), so the two paths start at the same pose and their
    difference is the odometry's drift. Ground truth outside the estimated time span is left out.
    """
    from fourd_ros.ros.conversions import T_LINK_FROM_OPTICAL
    link_from_optical = np.linalg.inv(T_LINK_FROM_OPTICAL)
    anchor = next((k for k, s in enumerate(stamps) if int(s) in gt), None)
    if anchor is None:
        return None
    s0 = int(stamps[anchor])
    A = poses[anchor] @ np.linalg.inv(gt[s0] @ link_from_optical)
    end = int(stamps.max())
    keys = np.array(sorted(k for k in gt if s0 <= k <= end), np.int64)
    aligned = np.array([A @ gt[int(k)] @ link_from_optical for k in keys]).reshape(-1, 4, 4)
    return keys, aligned


def trajectory_error(stamps: np.ndarray, poses: np.ndarray, gt: dict[int, np.ndarray],
                     metric: bool = True) -> dict[str, Any] | None:
    """Camera position error against aligned ground truth with the same stamps. A path up to
    scale (`metric` False: a monocular node) is first brought to the ground truth by the
    least-squares similarity (Umeyama, Sim(3)), the usual ATE of monocular odometry; a metric
    one is compared as it is, tied to the ground truth at its first pose (`alignment`)."""
    aligned = align_ground_truth(stamps, poses, gt)
    if aligned is None:
        return None
    by_stamp = dict(zip(aligned[0].tolist(), aligned[1]))
    pairs = [(P[:3, 3], by_stamp[int(s)][:3, 3]) for s, P in zip(stamps, poses)
             if int(s) in by_stamp]
    if not pairs:
        return None
    est, ref = np.array([p for p, _ in pairs]), np.array([g for _, g in pairs])
    alignment = 'first pose'
    if not metric and len(est) >= 3:
        s, R, t = umeyama(est, ref)
        est = s * est @ R.T + t
        alignment = 'Sim(3)'
    err = np.linalg.norm(est - ref, axis=1)
    return {'matched_poses': len(pairs), 'alignment': alignment,
            'position_rmse_m': float(np.sqrt(np.mean(err ** 2))),
            'position_error_final_m': float(err[-1]),
            'path_length_m': float(np.linalg.norm(np.diff(est, axis=0), axis=1).sum()),
            'gt_path_length_m': float(np.linalg.norm(np.diff(ref, axis=0), axis=1).sum())}
