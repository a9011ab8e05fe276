"""Scoring and alignment of one moving segment's rigid motion between two RGB-D frames.

A motion is scored by how well it predicts the later frame's depth and shading-free
(high-pass) intensity at the segment's points (truncated linear costs, so motions that are all
within the tolerances are still ranked), and refined by masked point-to-plane ICP with a
photometric term (`RgbdAligner.align_masked`). `MotionScorer` holds only the camera's settings
and its aligner, never a frame: the frame-to-frame segment tracker (``segment_motion.py``) and
queries that refine an object's motion across a gap (``queries.py``) share one, from any thread.

Motions are world-frame rigid transforms ``M`` with ``X_world(t) = M @ X_world(t - 1)``
(metres, OpenCV optical axes as everywhere in ``fourd_ros.core``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from fourd_ros.core.backends.rgbd.aligner import PyramidLevel, RgbdAligner
from fourd_ros.core.backends.rgbd.config import SegmentMotionConfig
from fourd_ros.core.backends.rgbd.mask_kernels import motion_costs, with_channel
from fourd_ros.core.backends.rgbd.latent import RgbdView
from fourd_ros.core.geometry import (finite_rows, invert_pose, mask_pixels, ransac_rigid,
                                     rotation_angle_deg, sample_depth, transform_points,
                                     unproject_pixels)


@dataclass
class FramePair:
    """The two frames of one estimate, their shading-free intensities and the aligner's
    pyramids of both (built on first use: static segments never need them)."""

    prev: RgbdView
    cur: RgbdView
    prev_detail: np.ndarray
    cur_detail: np.ndarray
    aligner: RgbdAligner
    kept_prev_levels: list[PyramidLevel] | None = None

    @functools.cached_property
    def prev_levels(self) -> list[PyramidLevel]:
        if self.kept_prev_levels is not None:
            return self.kept_prev_levels
        return self.aligner.prepare(self.prev_detail, self.prev.depth)

    @functools.cached_property
    def cur_levels(self) -> list[PyramidLevel]:
        return self.aligner.prepare(self.cur_detail, self.cur.depth)


class MotionScorer:
    """Scores and refines rigid motions of segments between two frames of one camera; stateless
    and thread-safe (see the module docstring).

    Args:
        K: 3x3 intrinsics of the ``width`` x ``height`` frames.
        config: scoring settings; ``config.odometry`` configures the aligner.
    """

    def __init__(self, K: np.ndarray, width: int, height: int,
                 config: SegmentMotionConfig | None = None) -> None:
        self.config = config or SegmentMotionConfig()
        self.K = np.asarray(K, np.float64)
        self.size = (int(width), int(height))
        self.aligner = RgbdAligner(self.K, width, height, self.config.odometry)

    def detail(self, gray: np.ndarray) -> np.ndarray:
        """High-pass intensity (float32 grey levels): the texture without the smooth shading,
        which stays put in the image while a lit object turns and would pull the photometric
        term towards no rotation."""
        g = gray.astype(np.float32)
        return g - cv2.GaussianBlur(g, (0, 0), self.config.shading_sigma_px)

    def pair(self, prev: RgbdView, cur: RgbdView, prev_detail: np.ndarray | None = None,
             prev_levels: list[PyramidLevel] | None = None,
             cur_prepared: tuple[np.ndarray, list[PyramidLevel]] | None = None) -> FramePair:
        """The two frames of one estimate (``prev``'s intensities and pyramid, ``cur``'s
        `prepared` ones, when already built)."""
        pair = FramePair(prev, cur, self.detail(prev.gray) if prev_detail is None
                         else prev_detail,
                         self.detail(cur.gray) if cur_prepared is None else cur_prepared[0],
                         self.aligner, prev_levels)
        if cur_prepared is not None:
            pair.__dict__['cur_levels'] = cur_prepared[1]  # the cached property, filled
        return pair

    def prepared(self, gray: np.ndarray, depth: np.ndarray
                 ) -> tuple[np.ndarray, list[PyramidLevel]]:
        """A frame's shading-free intensities and its pyramid for alignment (what `pair`
        builds for it)."""
        detail = self.detail(gray)
        return detail, self.aligner.prepare(detail, depth)

    def refine(self, prev: RgbdView, cur: RgbdView, mask: np.ndarray,
               motions: list[np.ndarray]) -> np.ndarray:
        """The motion (world, ``prev`` -> ``cur``) of the segment ``mask`` of ``prev`` that
        best explains ``cur``: each of ``motions`` as given and refined by aligning the two
        frames directly. Frames may be far apart: a motion chained over many frames gathers
        each step's error, one fit across the whole gap does not. Reads no state."""
        pair = self.pair(prev, cur)
        points, intensity = self.sample(pair, mask, np.random.default_rng(0))
        candidates = [*motions, *(self.aligned(pair, mask, M) for M in motions)]
        scores = [self.agreement(pair, M, points, intensity) for M in candidates]
        return candidates[int(np.argmax(scores))]

    def aligned(self, pair: FramePair, mask: np.ndarray, start: np.ndarray) -> np.ndarray:
        """World motion of the mask's points found by alignment from ``start``."""
        T_init = invert_pose(pair.cur.T_wc) @ start @ pair.prev.T_wc
        T, _, _ = self.aligner.align_masked(pair.cur_levels, pair.prev_levels, mask, T_init)
        return pair.cur.T_wc @ T @ invert_pose(pair.prev.T_wc)

    def best_motion(self, pair: FramePair, mask: np.ndarray, points: np.ndarray,
                    intensity: np.ndarray, candidates: list[np.ndarray], scores: list[float],
                    prior: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Best of the scored candidates and of the alignments started from the best few;
        with a ``prior``, rotations away from it are ranked lower (``prior_per_deg``)."""
        cfg = self.config
        candidates, scores = list(candidates), list(scores)

        def ranks() -> np.ndarray:
            if prior is None:
                return np.asarray(scores)
            return np.asarray(scores) - cfg.prior_per_deg * np.array(
                [rotation_angle_deg(M[:3, :3] @ prior[:3, :3].T) for M in candidates])

        # refine the best few: one started in the wrong basin (e.g. a constant velocity that
        # was slightly off) stays there, another one may not
        for c in np.argsort(ranks())[::-1][:cfg.refine_candidates]:
            candidates.append(self.aligned(pair, mask, candidates[c]))
            scores.append(self.agreement(pair, candidates[-1], points, intensity))
        # the prior's basin is the one an aliased texture may hide (a millimetre off, the
        # prior scores low unrefined): refine it too unless a refinement already ended there
        if prior is not None and min(rotation_angle_deg(M[:3, :3] @ prior[:3, :3].T)
                                     for M in candidates[-cfg.refine_candidates:]
                                     ) > cfg.prior_refine_deg:
            candidates.append(self.aligned(pair, mask, prior))
            scores.append(self.agreement(pair, candidates[-1], points, intensity))
        best = int(np.argmax(ranks()))
        return candidates[best], scores[best]

    def pixels(self, mask: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of at most ``max_points`` pixels of the mask, drawn at random."""
        ys, xs = mask_pixels(mask)
        if len(ys) > self.config.max_points:
            pick = rng.choice(len(ys), self.config.max_points, replace=False)
            ys, xs = ys[pick], xs[pick]
        return ys, xs

    def sample(self, pair: FramePair, mask: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
        """World points and shading-free intensities of at most ``max_points`` mask pixels."""
        ys, xs = self.pixels(mask, rng)
        return pair.prev.points_world[ys, xs].astype(np.float64), pair.prev_detail[ys, xs]

    def explained(self, pair: FramePair, mask: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """The pixels of ``mask`` that ``motion`` explains well, and better than no motion."""
        ys, xs = mask_pixels(mask)
        points = pair.prev.points_world[ys, xs].astype(np.float64)
        intensity = pair.prev_detail[ys, xs]
        moved = self.costs(pair, motion, points, intensity)
        still = self.costs(pair, np.eye(4), points, intensity)
        keep = (moved < self.config.explained_max_cost) & (moved <= still)
        out = np.zeros_like(mask)
        out[ys[keep], xs[keep]] = True
        return out

    def agreement(self, pair: FramePair, M: np.ndarray, points: np.ndarray,
                  intensity: np.ndarray) -> float:
        """How well M predicts the current frame at the segment points, in [0, 1]."""
        return float(np.mean(1.0 - self.costs(pair, M, points, intensity)))

    def costs(self, pair: FramePair, M: np.ndarray, points: np.ndarray,
              intensity: np.ndarray) -> np.ndarray:
        """Per-point cost in [0, 1] of moving world points of the previous frame by M into the
        current one (``hidden_cost`` when moved out of view or behind something)."""
        return self.costs_in(pair.cur, pair.cur_detail, M, points, intensity)

    def costs_in(self, cur: RgbdView, cur_detail: np.ndarray, M: np.ndarray,
                 points: np.ndarray, intensity: np.ndarray, with_seen: bool = False
                 ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """`_costs` against any frame ``cur`` with shading-free intensities ``cur_detail``;
        ``with_seen`` also returns whether each moved point is in view and not hidden."""
        cfg = self.config
        cost, seen = motion_costs(
            np.ascontiguousarray(points, np.float64), invert_pose(cur.T_wc) @ M, self.K,
            with_channel(cur.depth), with_channel(cur_detail),
            np.ascontiguousarray(intensity, np.float32), cfg.agree_abs, cfg.agree_rel,
            np.float32(cfg.agree_photo), cfg.hidden_cost)
        return (cost, seen) if with_seen else cost

    def flow_candidate(self, pair: FramePair, mask: np.ndarray, flow: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray | None:
        """Rigid fit (RANSAC) to the segment's optical flow lifted to 3D with current depth."""
        cfg = self.config
        ys, xs = self.pixels(mask, rng)
        return fit_rigid_to_flow(
            pair.prev.points_world[ys, xs].astype(np.float64),
            np.stack([xs, ys], axis=1).astype(np.float32) + flow[ys, xs], pair.cur.depth,
            pair.cur.T_wc, self.K, rng, cfg.ransac_tol_abs, cfg.ransac_tol_rel,
            cfg.ransac_iters, cfg.ransac_min_inliers, cfg.min_pixels)


def fit_rigid_to_flow(points: np.ndarray, pixels_next: np.ndarray, depth_next: np.ndarray,
                      T_wc_next: np.ndarray, K: np.ndarray, rng: np.random.Generator,
                      tol_abs: float, tol_rel: float, iterations: int,
                      min_inlier_ratio: float, min_points: int) -> np.ndarray | None:
    """World-frame rigid motion of world ``points`` that optical flow takes to ``pixels_next``
    (N x 2) of a frame with depth ``depth_next`` (metres, NaN = none) and camera-to-world pose
    ``T_wc_next``: RANSAC on the 3D correspondences, inliers within max(tol_abs, tol_rel *
    depth). None when fewer than ``min_points`` land on depth or the fit fails."""
    z = sample_depth(depth_next, pixels_next.astype(np.float32))
    moved = transform_points(T_wc_next, unproject_pixels(pixels_next, z, K))
    ok = finite_rows(moved)
    if ok.sum() < min_points:
        return None
    tol = np.maximum(tol_abs, tol_rel * z[ok])
    return ransac_rigid(points[ok], moved[ok], tol, rng, iterations, min_inlier_ratio)
