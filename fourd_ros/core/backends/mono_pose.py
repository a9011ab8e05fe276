"""Camera pose of a monocular frame from geometry: persistent landmarks tracked by KLT, PnP-RANSAC,
then Levenberg-Marquardt on the inliers; landmarks re-triangulated once their rays have parallax.

This is the pose the learned backend trusts (matching transfers from synthetic to real images;
the camera head's regression does not, see docs/learned-model.md): it runs before the frame is
encoded so that the cost volume has the pose it needs.

Why persistent landmarks and not the previous frame's depth: a pose tracked frame to frame against
the last depth map, whose scale is in turn re-taken from that pose, is a random walk in scale and
heading (about 1-2 % per frame on 7-Scenes, docs/history.md). A landmark keeps its world position
for as long as it is tracked, so drift only enters when landmarks are replaced, and its position is
re-triangulated from its first and current rays once they differ by ``min_parallax_deg`` (classic
keyframe VO, like PTAM / ORB-SLAM without the bundle adjustment). New landmarks take their 3D
position from the frame's depth (the model's, brought to the map's scale; a depth sensor's where
one gives the map its metres, and those are not re-triangulated). Moving points (the
dynamic mask) and low-confidence points are never seeded, and PnP outliers are dropped. Units
follow the stream (up to scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fourd_ros.core.geometry import (finite_rows, invert_pose, make_pose, ray_midpoints,
                                     sample_bilinear, transform_points, unproject_depth)


@dataclass(frozen=True)
class MonoPoseConfig:
    """Settings of the geometric pose.

    Attributes:
        max_landmarks: landmarks kept (Shi-Tomasi corners tracked from frame to frame).
        replenish_share: new corners are seeded when fewer than this share of
            ``max_landmarks`` are left.
        min_spacing_px: minimum distance between landmarks in pixels.
        min_inliers: fewer PnP inliers than this = tracking lost (the guess is used and the
            landmarks are seeded again from the frame's depth).
        reproj_px: RANSAC inlier threshold in pixels.
        min_parallax_deg: a landmark is re-triangulated from its first and its current ray
            once they differ by this angle (and each time the angle has grown by a third).
        fb_px: forward-backward KLT consistency threshold in pixels.
        min_sensor_landmarks: with a depth sensor, landmarks start only where it has depth,
            unless fewer than this many would be left (a sensor seeing too little to track
            on): then the frame's other depth seeds the rest.
        corner_quality: new landmarks start first on corners whose Shi-Tomasi score is at
            least this share of the frame's strongest (OpenCV's ``qualityLevel``) ...
        weak_corner_quality: ... then, in cells of the `seed_grid` left short, on corners of
            at least this share.
        seed_grid: columns x rows of cells, each holding at most its share of
            ``max_landmarks``. So one strongly textured object does not take every seed: with
            0.01 alone a moving object's photo texture drew 17-46 % of the PnP inliers on a
            development clip where objects cover 13-20 % of the image, and the camera path
            followed them (ATE 16.5 cm; 1.2 cm with the grid; docs/history.md, session 32).
    """

    max_landmarks: int = 400
    replenish_share: float = 0.7
    min_spacing_px: int = 6
    min_inliers: int = 15
    reproj_px: float = 2.0
    min_parallax_deg: float = 2.0
    fb_px: float = 1.0
    min_sensor_landmarks: int = 30
    corner_quality: float = 0.01
    weak_corner_quality: float = 0.001
    seed_grid: tuple[int, int] = (4, 3)


@dataclass
class PoseEstimate:
    """Pose of the current camera and the correspondences behind it.

    Attributes:
        T_wc: 4x4 camera-to-world.
        inliers: PnP inliers.
        ok: tracking succeeded (False: `T_wc` is the guess).
        points_world: inliers' N x 3 world points (landmarks).
        pixels: inliers' N x 2 pixels in the current image.
    """

    T_wc: np.ndarray
    inliers: int
    ok: bool
    points_world: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    pixels: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))


def _rays_world(pixels: np.ndarray, K: np.ndarray, T_wc: np.ndarray) -> np.ndarray:
    """N x 3 unit viewing rays (world frame) of pixels (N x 2, u v)."""
    uv1 = np.column_stack([pixels, np.ones(len(pixels))])
    d = uv1 @ np.linalg.inv(K).T @ T_wc[:3, :3].T
    return d / np.linalg.norm(d, axis=1, keepdims=True)


class LandmarkTracker:
    """Persistent 3D landmarks of a monocular stream (see the module docstring).

    Per frame: `track` (before the frame is encoded) gives the pose, `update` (after, with the
    frame's depth) commits what `track` found, re-triangulates and seeds landmarks. A frame that
    fails between the two (e.g. the device runs out of memory) leaves the landmarks as they
    were: the next `track` starts again from the last updated frame. Not thread-safe: one
    stream, one thread.
    """

    def __init__(self, config: MonoPoseConfig = MonoPoseConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._gray: np.ndarray | None = None
        self._pending: tuple[np.ndarray, np.ndarray] | None = None  # (pixels, keep) of `track`
        self.pixels = np.zeros((0, 2), np.float32)     # in the last frame
        self.points = np.zeros((0, 3))                  # world
        self._origin = np.zeros((0, 3))                 # first observation's camera centre
        self._ray0 = np.zeros((0, 3))                   # first observation's unit ray (world)
        self._angle = np.zeros(0)                       # parallax of the last triangulation
        self._exact = np.zeros(0, bool)                 # a depth sensor's: never moved

    def __len__(self) -> int:
        return len(self.points)

    @property
    def triangulated(self) -> np.ndarray:
        """Per landmark: re-triangulated from the camera's motion (True), or still at the depth
        it was seeded with."""
        return self._angle > 0

    def track(self, gray: np.ndarray, K: np.ndarray, T_guess: np.ndarray) -> PoseEstimate:
        """Pose (4x4 camera-to-world) of the frame `gray` (H x W uint8) with intrinsics `K`,
        starting from `T_guess` (returned when tracking fails)."""
        cfg = self.config
        self._pending = (self.pixels, np.zeros(len(self), bool))  # lost unless PnP succeeds
        if self._gray is None or len(self) < cfg.min_inliers:
            return PoseEstimate(T_guess, 0, False)
        p0 = self.pixels
        p1, st, _ = cv2.calcOpticalFlowPyrLK(self._gray, gray, p0, None, winSize=(21, 21),
                                             maxLevel=3)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self._gray, p1, None, winSize=(21, 21),
                                                maxLevel=3)
        good = (st[:, 0] == 1) & (st2[:, 0] == 1) & (
            np.linalg.norm(back - p0, axis=1) < cfg.fb_px)
        if good.sum() < cfg.min_inliers:
            return PoseEstimate(T_guess, int(good.sum()), False)
        X = self.points[good]
        uv = p1[good].astype(np.float64)
        T_cw = invert_pose(T_guess)
        rvec, _ = cv2.Rodrigues(T_cw[:3, :3])
        tvec = T_cw[:3, 3].reshape(3, 1).copy()
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            X, uv, K, None, rvec=rvec, tvec=tvec, useExtrinsicGuess=True, iterationsCount=100,
            reprojectionError=cfg.reproj_px, confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or inl is None or len(inl) < cfg.min_inliers:
            return PoseEstimate(T_guess, 0 if inl is None else len(inl), False)
        idx = inl[:, 0]
        rvec, tvec = cv2.solvePnPRefineLM(X[idx], uv[idx], K, None, rvec, tvec)
        R, _ = cv2.Rodrigues(rvec)
        keep = np.zeros(len(self), bool)
        keep[np.flatnonzero(good)[idx]] = True
        self._pending = (p1.astype(np.float32), keep)
        return PoseEstimate(invert_pose(make_pose(R, tvec.ravel())), len(idx), True,
                            X[idx], uv[idx].astype(np.float32))

    def update(self, gray: np.ndarray, points_world: np.ndarray, seedable: np.ndarray,
               drop: np.ndarray, K: np.ndarray, T_wc: np.ndarray,
               sensor_depth: np.ndarray | None = None) -> None:
        """After the frame is processed: keep the landmarks `track` followed, drop those on
        `drop` pixels, re-triangulate those with enough parallax, and seed new ones.

        Args:
            gray: H x W uint8 image of the frame just tracked.
            points_world: H x W x 3 world points of the frame (NaN = invalid).
            seedable: H x W bool, static and confident pixels (where new landmarks may start).
            drop: H x W bool, where landmarks are dropped (the learned backend: low-confidence
                pixels; landmarks on moving objects leave as PnP outliers).
            K, T_wc: the frame's intrinsics and camera-to-world pose.
            sensor_depth: H x W depth of a registered depth sensor (metres; <= 0 or NaN =
                none): new landmarks start at its points (``min_sensor_landmarks``) and are
                never re-triangulated (its depth is better than the midpoint of two rays a
                few degrees apart).
        """
        cfg = self.config
        h, w = gray.shape
        if self._pending is not None:
            self.pixels = self._pending[0]
            self._keep(self._pending[1])
            self._pending = None
        if len(self):
            ij = np.clip(np.round(self.pixels).astype(int), 0, [w - 1, h - 1])
            self._keep(~drop[ij[:, 1], ij[:, 0]])
        if len(self):
            self._triangulate(K, T_wc)
        if sensor_depth is None:
            self._seed(gray, points_world, seedable, K, T_wc, exact=False)
        elif self._wants_seeds():
            # the sensor's points only on the frames that seed (a few in ten)
            sensor_points = transform_points(T_wc, unproject_depth(sensor_depth, K))
            sensed = np.isfinite(sensor_points).all(axis=-1)
            self._seed(gray, sensor_points, seedable & sensed, K, T_wc, exact=True)
            if len(self) < cfg.min_sensor_landmarks:
                self._seed(gray, points_world, seedable & ~sensed, K, T_wc, exact=False)
        self._gray = gray

    def _seed(self, gray: np.ndarray, points_world: np.ndarray, seedable: np.ndarray,
              K: np.ndarray, T_wc: np.ndarray, exact: bool) -> None:
        """New landmarks on corners of `seedable` pixels away from the others, at
        `points_world`, when fewer than ``replenish_share`` are left; `exact`: a depth
        sensor's points (never re-triangulated)."""
        cfg = self.config
        if not self._wants_seeds():
            return
        want = cfg.max_landmarks - len(self)
        mask = seedable.astype(np.uint8) * 255
        for u, v in np.round(self.pixels).astype(int):
            cv2.circle(mask, (int(u), int(v)), cfg.min_spacing_px, 0, -1)
        px = self._corners(gray, mask, want)
        if not len(px):
            return
        X = sample_bilinear(points_world, px).astype(np.float64)
        ok = finite_rows(X)
        px, X = px[ok], X[ok]
        self.pixels = np.concatenate([self.pixels, px])
        self.points = np.concatenate([self.points, X])
        self._origin = np.concatenate([self._origin, np.repeat(T_wc[None, :3, 3], len(px), 0)])
        self._ray0 = np.concatenate([self._ray0, _rays_world(px, K, T_wc)])
        self._angle = np.concatenate([self._angle, np.zeros(len(px))])
        self._exact = np.concatenate([self._exact, np.full(len(px), exact)])

    def _corners(self, gray: np.ndarray, mask: np.ndarray, want: int) -> np.ndarray:
        """Up to `want` new corners (N x 2 float32 pixels) in `mask`, spread over a
        ``seed_grid``: strong ones first (``corner_quality`` of the frame's strongest), at
        most a cell's share of ``max_landmarks`` per cell; then, in cells left short, weaker
        ones (``weak_corner_quality``), as ORB-SLAM lowers its FAST threshold per cell."""
        cfg = self.config
        cols, rows = cfg.seed_grid
        h, w = gray.shape

        def cell(px: np.ndarray) -> np.ndarray:
            c = np.clip((px[:, 0] * cols / w).astype(int), 0, cols - 1)
            r = np.clip((px[:, 1] * rows / h).astype(int), 0, rows - 1)
            return r * cols + c
        cap = int(np.ceil(cfg.max_landmarks / (cols * rows)))
        count = np.bincount(cell(self.pixels), minlength=cols * rows)
        chosen: list[np.ndarray] = []
        for quality in (cfg.corner_quality, cfg.weak_corner_quality):
            n = want - len(chosen)
            if n <= 0:
                break
            found = cv2.goodFeaturesToTrack(gray, 4 * n, quality, cfg.min_spacing_px,
                                            mask=mask)
            if found is None:
                continue
            for p, c in zip(found.reshape(-1, 2), cell(found.reshape(-1, 2))):
                if count[c] < cap and len(chosen) < want:
                    count[c] += 1
                    chosen.append(p)
                    cv2.circle(mask, (int(round(p[0])), int(round(p[1]))),
                               cfg.min_spacing_px, 0, -1)
        return np.array(chosen, np.float32).reshape(-1, 2)

    def _wants_seeds(self) -> bool:
        """Fewer than ``replenish_share`` of the landmarks are left."""
        cfg = self.config
        return cfg.max_landmarks - len(self) > (1.0 - cfg.replenish_share) * cfg.max_landmarks

    def rescale(self, centre: np.ndarray, factor: float) -> None:
        """Scale the map by ``factor`` about the world point ``centre`` (the current camera's:
        its pose stays): the landmarks and the camera centres of their first views."""
        centre = np.asarray(centre, np.float64)
        self.points = centre + factor * (self.points - centre)
        self._origin = centre + factor * (self._origin - centre)

    # ------------------------------------------------------------------ internals
    def _keep(self, keep: np.ndarray) -> None:
        self.pixels, self.points = self.pixels[keep], self.points[keep]
        self._origin, self._ray0, self._angle = (self._origin[keep], self._ray0[keep],
                                                 self._angle[keep])
        self._exact = self._exact[keep]

    def _triangulate(self, K: np.ndarray, T_wc: np.ndarray) -> None:
        d1 = _rays_world(self.pixels.astype(np.float64), K, T_wc)
        angle = np.degrees(np.arccos(np.clip((self._ray0 * d1).sum(1), -1.0, 1.0)))
        grow = (angle >= self.config.min_parallax_deg) & (angle >= 4.0 / 3.0 * self._angle) \
            & ~self._exact
        if not grow.any():
            return
        c1 = np.repeat(T_wc[None, :3, 3], int(grow.sum()), 0)
        X, front = ray_midpoints(self._origin[grow], self._ray0[grow], c1, d1[grow])
        idx = np.flatnonzero(grow)[front]
        self.points[idx] = X[front]
        self._angle[idx] = angle[idx]
