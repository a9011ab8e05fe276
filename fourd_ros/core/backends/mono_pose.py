"""Camera pose of a monocular frame from geometry: KLT tracks against the previous frame's
cached 3D points, PnP-RANSAC, then Levenberg-Marquardt on the inliers.

This is the pose the learned backend trusts (matching transfers from synthetic to real images;
the camera head's regression does not, see docs/learned-model.md): it runs before the frame is
encoded so that the cost volume has the pose it needs. Moving points (the previous frame's
dynamic mask) and low-confidence points are kept out. Units follow the stream (up to scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fourd_ros.core.geometry import invert_pose, make_pose, sample_bilinear


@dataclass(frozen=True)
class MonoPoseConfig:
    """Settings of the geometric pose.

    Attributes:
        max_corners: Shi-Tomasi corners tracked from the previous frame.
        min_inliers: fewer PnP inliers than this = tracking lost (constant-velocity pose used).
        reproj_px: RANSAC inlier threshold in pixels.
    """

    max_corners: int = 400
    min_inliers: int = 15
    reproj_px: float = 2.0


@dataclass
class PoseEstimate:
    """Pose of the current camera and the correspondences behind it.

    Attributes:
        T_wc: 4x4 camera-to-world.
        inliers: PnP inliers.
        ok: tracking succeeded (False: `T_wc` is the guess).
        points_world: inliers' N x 3 world points (from the previous frame).
        pixels: inliers' N x 2 pixels in the current image.
    """

    T_wc: np.ndarray
    inliers: int
    ok: bool
    points_world: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    pixels: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))


def track_pose(prev_gray: np.ndarray, gray: np.ndarray, prev_points_world: np.ndarray,
               prev_usable: np.ndarray, K: np.ndarray, T_guess: np.ndarray,
               cfg: MonoPoseConfig = MonoPoseConfig()) -> PoseEstimate:
    """Pose of the current camera (4x4 camera-to-world) from the previous frame's 3D points.

    Args:
        prev_gray, gray: H x W uint8 previous and current images.
        prev_points_world: H x W x 3 world points of the previous frame (NaN = invalid).
        prev_usable: H x W bool, static and confident pixels of the previous frame.
        K: 3x3 intrinsics of both images.
        T_guess: initial pose (e.g. constant velocity); returned when tracking fails.
    """
    mask = prev_usable.astype(np.uint8) * 255
    corners = cv2.goodFeaturesToTrack(prev_gray, cfg.max_corners, 0.01, 6, mask=mask)
    if corners is None or len(corners) < cfg.min_inliers:
        return PoseEstimate(T_guess, 0, False)
    p0 = corners.reshape(-1, 2).astype(np.float32)
    p1, st, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, p0, None, winSize=(21, 21),
                                         maxLevel=3)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, prev_gray, p1, None, winSize=(21, 21),
                                            maxLevel=3)
    good = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - p0, axis=1) < 1.0)
    X = sample_bilinear(prev_points_world, p0).astype(np.float64)
    good &= np.isfinite(X).all(axis=1)
    if good.sum() < cfg.min_inliers:
        return PoseEstimate(T_guess, int(good.sum()), False)
    T_cw = invert_pose(T_guess)
    rvec, _ = cv2.Rodrigues(T_cw[:3, :3])
    tvec = T_cw[:3, 3].reshape(3, 1).copy()
    ok, rvec, tvec, inl = cv2.solvePnPRansac(
        X[good], p1[good].astype(np.float64), K, None, rvec=rvec, tvec=tvec,
        useExtrinsicGuess=True, iterationsCount=100, reprojectionError=cfg.reproj_px,
        confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or inl is None or len(inl) < cfg.min_inliers:
        return PoseEstimate(T_guess, 0 if inl is None else len(inl), False)
    idx = inl[:, 0]
    rvec, tvec = cv2.solvePnPRefineLM(X[good][idx], p1[good][idx].astype(np.float64), K, None,
                                      rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    return PoseEstimate(invert_pose(make_pose(R, tvec.ravel())), len(idx), True,
                        X[good][idx], p1[good][idx])
