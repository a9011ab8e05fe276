"""Rigid motion of each moving segment between consecutive RGB-D frames ("object odometry").

Dense optical flow alone fails on fast, finely textured objects (the pattern of a turning
checker moves by much of a period per frame). Geometry does not alias, so each connected part
of the previous frame's dynamic mask (split at depth jumps) is aligned to the current frame
like a small camera:

1. Score staying still: a segment that it explains well is a false detection and is skipped.
2. Score candidate motions (none, the motions found one frame earlier = constant velocity, a
   RANSAC fit to the optical flow lifted to 3D) by how well they predict the current depth and
   shading-free (high-pass) intensity, and refine the best by masked point-to-plane ICP with a
   photometric term (``RgbdOdometry.align_to``).
3. Keep only the segment pixels the motion explains well and better than staying still (the
   dynamic mask also covers background where the object was or will be), and refit on them.

Two frames do not always pin a rotation down: on a finely textured turning object, rotations a
few degrees apart can match the texture about equally well. Each segment is therefore followed
from frame to frame (its centroid moved by its motion), and once it has a few motions, a
rotation far from their median (constant angular velocity) must score clearly better to be
chosen.

Motions are world-frame rigid transforms ``M`` with ``X_world(t) = M @ X_world(t - 1)``
(metres, OpenCV optical axes as everywhere in ``fourd_ros.core``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from fourd_ros.core.backends.rgbd_odometry import OdometryConfig, RgbdOdometry
from fourd_ros.core.engine.objects import depth_edges, label_moving_segments
from fourd_ros.core.geometry import (invert_pose, make_pose, project, ransac_rigid,
                                     sample_bilinear, sample_depth, transform_points,
                                     unproject_pixels)


def _object_odometry() -> OdometryConfig:
    # objects are small: sample every pixel, weigh the photometric term fully, no depth-noise
    # reweighting (that favours the near background), a looser prior than a camera's (objects
    # accelerate more), and no model fusion (each pair of frames is aligned on its own)
    return OdometryConfig(sample_step=(1, 1, 1), noise_power=(0.0, 0.0, 0.0), photo_weight=1.0,
                          photo_stride=1, prior_sigma_m=0.05, prior_sigma_deg=5.0, fuse=False,
                          min_depth=0.05, max_depth=20.0)


@dataclass
class SegmentMotionConfig:
    """Settings (lengths in metres, intensities in grey levels 0-255).

    Attributes:
        min_pixels: smallest segment (pixels with depth) given a motion.
        max_segments: largest number of segments (the largest ones) given a motion per frame;
            bounds the time per frame.
        static_cost, static_margin: a segment is static (no motion given) when staying still
            explains it with a mean cost of at most static_cost (then no fit is run), or when
            the fitted motion does not beat staying still by static_margin agreement.
        max_points: points sampled per segment for scoring and for the flow RANSAC.
        ransac_iters, ransac_min_inliers, ransac_tol_abs, ransac_tol_rel: flow RANSAC
            (iterations, smallest inlier share, inlier distance max(abs, rel * depth)).
        agree_abs, agree_rel, agree_photo: a moved point's cost is the mean of its depth error
            over max(agree_abs, agree_rel * depth) and its intensity error over agree_photo,
            each capped at 1; a motion's agreement is the mean of 1 - cost over the segment's
            points.
        hidden_cost: cost of a point moved out of view or behind something nearer.
        leftover_min_share: smallest share of the image a part of the dynamic mask that no
            segment explains must cover to be fitted a motion of its own
            (`current_segments`).
        min_agreement: smallest agreement a segment's motion must reach.
        shading_sigma_px: Gaussian sigma (pixels) of the smooth shading removed from the
            intensities that motions are scored and aligned with.
        explained_max_cost: largest cost of a pixel kept in its segment after the first fit
            (it must also be explained better by the motion than by staying still).
        refine_candidates: how many of the best-scoring candidates are refined by alignment.
        history: motions kept per followed segment for its constant-velocity prior.
        prior_min_history: motions a segment needs before its prior applies.
        prior_per_deg: agreement a candidate loses per degree between its rotation and the
            prior's (the median of the segment's recent rotations).
        prior_refine_deg: the prior is refined by alignment too when no refined candidate
            turns less than this from it (degrees).
        track_gate_m: largest distance between a segment's centroid and a followed segment's
            moved centroid for the two to be the same object.
        odometry: aligner settings for one segment.
    """

    min_pixels: int = 64
    max_segments: int = 8
    static_cost: float = 0.3
    static_margin: float = 0.02
    max_points: int = 400
    ransac_iters: int = 64
    ransac_min_inliers: float = 0.3
    ransac_tol_abs: float = 0.01
    ransac_tol_rel: float = 0.01
    agree_abs: float = 0.01
    agree_rel: float = 0.02
    agree_photo: float = 20.0
    min_agreement: float = 0.4
    shading_sigma_px: float = 4.0
    refine_candidates: int = 1
    explained_max_cost: float = 0.25
    hidden_cost: float = 0.5
    leftover_min_share: float = 0.005
    history: int = 8
    prior_min_history: int = 3
    prior_per_deg: float = 0.04
    prior_refine_deg: float = 1.0
    track_gate_m: float = 0.1
    odometry: OdometryConfig = field(default_factory=_object_odometry)


@dataclass
class RgbdView:
    """What segment tracking needs of one processed frame (processing resolution).

    Attributes:
        gray: H x W uint8 intensity.
        depth: H x W float32 metres, NaN = missing.
        T_wc: 4x4 camera-to-world pose.
        points_world: H x W x 3 float32 world points (NaN without depth).
        dynamic: H x W bool dynamic mask.
    """

    gray: np.ndarray
    depth: np.ndarray
    T_wc: np.ndarray
    points_world: np.ndarray
    dynamic: np.ndarray


@dataclass
class SegmentMotions:
    """Rigid motions of one frame's moving segments from the previous frame to the current.

    Attributes:
        labels: H x W uint8 segment labels on the previous frame's pixel grid (0 = none), or
            uint16 labels on the current frame's grid (`SegmentMotionTracker.current_segments`).
        motions: (n + 1) x 4 x 4 float32 world-frame motions, row k for label k (row 0 unused).
    """

    labels: np.ndarray
    motions: np.ndarray


@dataclass
class _Pair:
    """The two frames of one estimate, their shading-free intensities and the aligner's
    pyramids of both (built on first use: static segments never need them)."""

    prev: RgbdView
    cur: RgbdView
    prev_detail: np.ndarray
    cur_detail: np.ndarray
    aligner: RgbdOdometry
    kept_prev_levels: list | None = None

    @functools.cached_property
    def prev_levels(self) -> list:
        if self.kept_prev_levels is not None:
            return self.kept_prev_levels
        return self.aligner.prepare(self.prev_detail, self.prev.depth)

    @functools.cached_property
    def cur_levels(self) -> list:
        return self.aligner.prepare(self.cur_detail, self.cur.depth)

    def built_cur_levels(self) -> list | None:
        """The current frame's pyramid if it was built (to reuse as the next previous one)."""
        return self.__dict__.get('cur_levels')


@dataclass
class FollowedSegment:
    """A moving segment followed from frame to frame, at the newest frame (world, metres): what
    `SegmentMotionTracker` keeps of each object between frames to predict its next motion.

    Attributes:
        centroid: centroid of the segment's mask points, moved by its last motion (to match
            the next frame's segment by).
        anchor: a point of the object (the first fitted points' centroid) carried along by
            its motions: the recent motions are expressed as rotations about it.
        rotvecs: recent rotations (rotation vectors, rad).
        displacements: the anchor's recent displacements.
    """

    centroid: np.ndarray
    anchor: np.ndarray | None = None
    rotvecs: list[np.ndarray] = field(default_factory=list)
    displacements: list[np.ndarray] = field(default_factory=list)

    def prior(self, min_history: int) -> np.ndarray | None:
        """Constant-velocity motion (4x4, world): the median of the recent rotations (about
        the anchor) and displacements, robust to a few aliased estimates; None when there are
        fewer than ``min_history`` of them."""
        if self.anchor is None or len(self.rotvecs) < min_history:
            return None
        R = Rotation.from_rotvec(np.median(self.rotvecs, axis=0)).as_matrix()
        return make_pose(R, self.anchor + np.median(self.displacements, axis=0)
                         - R @ self.anchor)

    def moved(self, motion: np.ndarray, centroid: np.ndarray, fitted_centroid: np.ndarray,
              history: int) -> FollowedSegment:
        """This segment after ``motion``; ``centroid`` is the mask's centroid it was matched
        by, ``fitted_centroid`` that of the points the motion was fitted to."""
        anchor = fitted_centroid if self.anchor is None else self.anchor
        moved_anchor = transform_points(motion, anchor[None])[0]
        rotvec = Rotation.from_matrix(motion[:3, :3]).as_rotvec()
        return FollowedSegment(transform_points(motion, centroid[None])[0], moved_anchor,
                               [*self.rotvecs, rotvec][-history:],
                               [*self.displacements, moved_anchor - anchor][-history:])


class SegmentMotionTracker:
    """Estimates ``SegmentMotions`` frame after frame (see the module docstring)."""

    def __init__(self, K: np.ndarray, width: int, height: int,
                 config: SegmentMotionConfig | None = None) -> None:
        self.config = config or SegmentMotionConfig()
        self.K = np.asarray(K, np.float64)
        self.size = (width, height)
        self._aligner = RgbdOdometry(self.K, width, height, self.config.odometry)
        self.reset()

    def reset(self) -> None:
        self._last: list[np.ndarray] = []
        self._followed: list[FollowedSegment] = []
        # the current frame's intensities and pyramid serve again as the previous frame's
        self._kept: tuple[RgbdView, np.ndarray, list] | None = None
        # the last estimate's two frames and their shading-free intensities
        self._details: tuple[RgbdView, np.ndarray, RgbdView, np.ndarray] | None = None
        # (previous grey, current grey, cost and seen maps of staying still): `_still`
        self._still_cache: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def estimate(self, prev: RgbdView, cur: RgbdView, flow: np.ndarray) -> SegmentMotions:
        """Motions of ``prev``'s dynamic segments to ``cur``; ``flow`` is prev -> cur (pixels).

        Called frame after frame with the previous call's ``cur`` as ``prev`` (the same
        arrays), the intensities and pyramid built for it are reused.
        """
        cfg = self.config
        labels = np.zeros(prev.dynamic.shape, np.int32)
        order: list[int] = []
        if prev.dynamic.any():  # most frames of a static scene: no per-frame work at all
            # pixels at depth jumps mix two surfaces: they fit no motion, and without them
            # objects that touch in the image but not in depth become separate segments
            edges = depth_edges(prev.depth)
            _, labels, stats, _ = cv2.connectedComponentsWithStats(
                (prev.dynamic & ~edges & np.isfinite(prev.depth)).astype(np.uint8),
                connectivity=8)
            order = [k for k in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1
                     if stats[k, cv2.CC_STAT_AREA] >= cfg.min_pixels][:cfg.max_segments]
        out_labels = np.zeros(labels.shape, np.uint8)
        motions = np.full((len(order) + 1, 4, 4), np.nan, np.float32)
        found: list[np.ndarray] = []
        if not order:
            self._last, self._kept, self._followed = [], None, []
            return SegmentMotions(out_labels, motions)
        kept = self._kept
        if kept is not None and kept[0].gray is prev.gray and kept[0].depth is prev.depth:
            pair = _Pair(prev, cur, kept[1], _detail(cur.gray, cfg), self._aligner, kept[2])
        else:
            pair = _Pair(prev, cur, _detail(prev.gray, cfg), _detail(cur.gray, cfg),
                         self._aligner)
        rng = np.random.default_rng(0)
        followed: list[FollowedSegment] = []
        for new_label, seg in enumerate(order, start=1):
            mask = labels == seg
            points, intensity = self._sample(pair, mask, rng)
            still = self._agreement(pair, np.eye(4), points, intensity)
            if still >= 1.0 - cfg.static_cost:
                # static after all (a false detection, e.g. at a depth edge): not worth a fit
                continue
            centroid = points.mean(axis=0)
            track = self._match(centroid)
            prior = track.prior(cfg.prior_min_history)
            candidates = [np.eye(4), *self._last, *([] if prior is None else [prior])]
            fitted = self._flow_candidate(pair, mask, flow, rng)
            if fitted is not None:
                candidates.append(fitted)
            scores = [still] + [self._agreement(pair, M, points, intensity)
                                for M in candidates[1:]]
            motion, score = self._best_motion(pair, mask, points, intensity, candidates, scores,
                                              prior)
            if score < still + cfg.static_margin:
                continue  # no motion explains the segment clearly better than staying still
            # the dynamic mask also takes in some background next to the object (where it was
            # or will be); those pixels bias the fit, so keep only the pixels the motion
            # explains better than staying still, and fit again
            mask = self._explained(pair, mask, motion)
            if np.count_nonzero(mask) < cfg.min_pixels:
                continue
            points, intensity = self._sample(pair, mask, rng)
            candidates = [motion, *([] if prior is None else [prior])]
            motion, score = self._best_motion(
                pair, mask, points, intensity, candidates,
                [self._agreement(pair, M, points, intensity) for M in candidates], prior)
            if score >= cfg.min_agreement:
                motions[new_label] = motion
                out_labels[mask] = new_label
                found.append(motion)
                followed.append(track.moved(motion, centroid, points.mean(axis=0),
                                            cfg.history))
        self._last, self._followed = found, followed
        self._kept = (cur, pair.cur_detail, pair.built_cur_levels())
        self._details = (prev, pair.prev_detail, cur, pair.cur_detail)
        return SegmentMotions(out_labels, motions)

    def current_segments(self, prev: RgbdView, cur: RgbdView, segments: SegmentMotions,
                         dynamic: np.ndarray, flow: np.ndarray) -> SegmentMotions:
        """The moving segments of ``cur`` (labels on its pixel grid) with their motions from
        ``prev`` (world, ``prev`` -> ``cur``; NaN = unknown), after `estimate` of the same two
        frames gave ``segments``; ``dynamic`` is ``cur``'s dynamic mask, ``flow`` prev -> cur.

        1. Segment k keeps label k and its motion: its pixels moved into ``cur`` by the
           motion, and the dynamic pixels beside them that the motion explains
           (`_moved_forward`).
        2. The dynamic mask's parts that no segment explains, unless mostly within 3 pixels
           of one (a segment's fringe), are objects that `estimate` found no motion for (slow,
           or just detected). Their motion is a rigid fit to the optical flow of the previous
           pixels that land on them; the pixels it explains become a segment (none when the
           fit fails or explains too few).
        3. Each segment keeps its main connected parts (`_main_parts`). A segment is dropped
           when its motion does not explain it better than staying still (`_moves`: a
           surface just covered or uncovered by an object fits a wrong motion by chance), or
           when it also explains the static background better: that is the camera's pose
           error, not an object.
        """
        cfg = self.config
        labels = self._moved_forward(prev, cur, segments, dynamic)
        motions = list(segments.motions) if len(segments.motions) else [np.eye(4)]
        fringe = cv2.dilate((labels > 0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        leftover = label_moving_segments(
            dynamic & (labels == 0), cur.depth,
            max(cfg.min_pixels, int(cfg.leftover_min_share * dynamic.size)), cfg.max_segments)
        parts = [(k, part) for k, part in ((k, leftover == k)
                                           for k in range(1, int(leftover.max(initial=0)) + 1))
                 if np.count_nonzero(part & fringe) <= 0.5 * np.count_nonzero(part)]
        landed = self._landed(leftover, flow, prev) if parts else leftover
        rng = np.random.default_rng(0)
        for k, part in parts:
            ys, xs = self._pixels(landed == k, rng)
            motion = None
            if len(ys) >= cfg.min_pixels:
                motion = fit_rigid_to_flow(
                    prev.points_world[ys, xs].astype(np.float64),
                    np.stack([xs, ys], axis=1).astype(np.float32) + flow[ys, xs], cur.depth,
                    cur.T_wc, self.K, rng, cfg.ransac_tol_abs, cfg.ransac_tol_rel,
                    cfg.ransac_iters, cfg.ransac_min_inliers, cfg.min_pixels)
            if motion is None:
                continue
            # keep the pixels the motion explains (the mask also covers background the object
            # has just uncovered, which neither the motion nor staying still explains)
            part &= self._explains(prev, cur, part, motion)
            # checked here too, not only with every segment below: a part that fails must not
            # take a label (measured: the DDS clip's false-object frames 18 % -> 29 % without)
            if np.count_nonzero(part) >= cfg.min_pixels \
                    and self._moves(prev, cur, part, motion):
                labels[part] = len(motions)
                motions.append(motion)
        labels = _main_parts(labels)
        # a motion that explains the static background better than staying still is the
        # camera's pose error showing on a surface, not an object
        background = ~dynamic & (labels == 0) & np.isfinite(cur.depth)
        ys, xs = self._pixels(background, rng)
        sample = np.zeros_like(background)
        sample[ys, xs] = True
        for k in range(1, len(motions)):
            part = labels == k
            if not part.any():
                continue
            if not self._moves(prev, cur, part, motions[k]) or (
                    len(ys) >= cfg.min_pixels and self._moves(prev, cur, sample, motions[k])):
                labels[part] = 0
        return SegmentMotions(labels, np.asarray(motions, np.float32))

    def _explains(self, prev: RgbdView, cur: RgbdView, mask: np.ndarray,
                  motion: np.ndarray) -> np.ndarray:
        """H x W bool: the pixels of ``mask`` of ``cur`` that ``motion`` (world, prev -> cur)
        explains: moved back by it they agree with ``prev`` (cost below
        ``explained_max_cost``), at least as well as staying still, which must see them (a
        pixel just uncovered is hidden in ``prev`` when it stays still: a wrong motion can
        explain it by chance, so it is no evidence)."""
        ys, xs, still, moved, seen = self._compare(prev, cur, mask, motion)
        out = np.zeros(mask.shape, bool)
        keep = seen & (moved < self.config.explained_max_cost) & (moved <= still)
        out[ys[keep], xs[keep]] = True
        return out

    def _moves(self, prev: RgbdView, cur: RgbdView, mask: np.ndarray,
               motion: np.ndarray) -> bool:
        """Whether ``motion`` explains the pixels of ``mask`` of ``cur`` that staying still
        sees better than staying still does, by ``static_margin`` on average (a segment of a
        static surface does not move). Scored on at most ``max_points`` of them, spread evenly.
        """
        _, _, still, moved, seen = self._compare(prev, cur, mask, motion,
                                                 self.config.max_points)
        if seen.sum() < self.config.min_pixels // 2:
            return False
        return bool(moved[seen].mean() + self.config.static_margin <= still[seen].mean())

    def _compare(self, prev: RgbdView, cur: RgbdView, mask: np.ndarray, motion: np.ndarray,
                 limit: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns, costs of staying still and of moving back by ``motion`` of the pixels
        of ``mask`` of ``cur`` (at most ``limit``, spread evenly) against ``prev``, and whether
        staying still sees them."""
        prev_detail, cur_detail = self._frame_details(prev, cur)
        ys, xs = np.nonzero(mask)
        if limit is not None and len(ys) > limit:
            pick = np.linspace(0, len(ys) - 1, limit).astype(int)
            ys, xs = ys[pick], xs[pick]
        still, seen = self._still(prev, cur, ys, xs)
        moved = self._costs_in(prev, prev_detail, invert_pose(motion.astype(np.float64)),
                               cur.points_world[ys, xs].astype(np.float64),
                               cur_detail[ys, xs])
        return ys, xs, still, moved, seen

    def _still(self, prev: RgbdView, cur: RgbdView, ys: np.ndarray, xs: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Cost of staying still of pixels (rows ``ys``, columns ``xs``) of ``cur`` against
        ``prev``, and whether staying still sees them: computed once per pixel and frame pair
        (every segment's checks ask for it)."""
        cache = self._still_cache
        if cache is None or cache[0] is not prev.gray or cache[1] is not cur.gray:
            cache = self._still_cache = (prev.gray, cur.gray,
                                         np.full(cur.depth.shape, np.nan, np.float32),
                                         np.zeros(cur.depth.shape, bool))
        _, _, cost, seen = cache
        todo = np.isnan(cost[ys, xs])
        if todo.any():
            prev_detail, cur_detail = self._frame_details(prev, cur)
            ty, tx = ys[todo], xs[todo]
            cost[ty, tx], seen[ty, tx] = self._costs_in(
                prev, prev_detail, np.eye(4), cur.points_world[ty, tx].astype(np.float64),
                cur_detail[ty, tx], with_seen=True)
        return cost[ys, xs], seen[ys, xs]

    def _frame_details(self, prev: RgbdView, cur: RgbdView) -> tuple[np.ndarray, np.ndarray]:
        """Shading-free intensities of ``prev`` and ``cur`` (those of the last estimate when
        it was of these two frames)."""
        if self._details is not None and self._details[0].gray is prev.gray \
                and self._details[2].gray is cur.gray:
            return self._details[1], self._details[3]
        self._details = (prev, _detail(prev.gray, self.config), cur,
                         _detail(cur.gray, self.config))
        return self._details[1], self._details[3]

    @staticmethod
    def _landed(labels: np.ndarray, flow: np.ndarray, prev: RgbdView) -> np.ndarray:
        """H x W labels, on the previous frame's grid, of the current-frame segment each
        previous pixel with depth lands on by ``flow`` (0 = none)."""
        h, w = labels.shape
        v, u = np.mgrid[0:h, 0:w]
        target_u = np.rint(u + flow[..., 0]).astype(np.int32)
        target_v = np.rint(v + flow[..., 1]).astype(np.int32)
        lands = (target_u >= 0) & (target_u < w) & (target_v >= 0) & (target_v < h) \
            & np.isfinite(prev.depth)
        out = np.zeros((h, w), labels.dtype)
        out[lands] = labels[target_v[lands], target_u[lands]]
        return out

    def _moved_forward(self, prev: RgbdView, cur: RgbdView, segments: SegmentMotions,
                       dynamic: np.ndarray) -> np.ndarray:
        """H x W uint16 labels of ``cur``: each segment's pixels of ``prev`` moved by its motion
        into ``cur`` where they agree with its depth (not hidden behind something), small holes
        between the moved pixels closed, and the dynamic pixels within 3 pixels of them that
        the motion explains (`_explains`: parts ``prev`` did not show or its segment left out);
        0 elsewhere."""
        labels = np.zeros(dynamic.shape, np.uint16)
        h, w = dynamic.shape
        T_cw = invert_pose(cur.T_wc)
        for k in range(1, len(segments.motions)):
            if not np.isfinite(segments.motions[k]).all():
                continue
            ys, xs = np.nonzero(segments.labels == k)
            uv, z = project(transform_points(T_cw @ segments.motions[k].astype(np.float64),
                                             prev.points_world[ys, xs].astype(np.float64)),
                            self.K)
            ok = np.isfinite(uv).all(axis=1) & (z > 0)
            ui, vi, z = np.rint(uv[ok, 0]).astype(int), np.rint(uv[ok, 1]).astype(int), z[ok]
            inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
            ui, vi, z = ui[inside], vi[inside], z[inside]
            d = cur.depth[vi, ui]
            with np.errstate(invalid='ignore'):
                seen = np.abs(d - z) <= np.maximum(self.config.agree_abs,
                                                   self.config.agree_rel * z) * 3.0
            part = np.zeros((h, w), np.uint8)
            part[vi[seen], ui[seen]] = 1
            part = cv2.morphologyEx(part, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0
            # parts the previous frame did not show (or its segment left out): the dynamic
            # pixels next to them that the motion explains
            near = cv2.dilate(part.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
            extra = dynamic & near & ~part & (labels == 0) & np.isfinite(cur.depth)
            if extra.any():
                part |= self._explains(prev, cur, extra, segments.motions[k])
            labels[part & (labels == 0) & np.isfinite(cur.depth)] = k
        return labels

    def refine(self, prev: RgbdView, cur: RgbdView, mask: np.ndarray,
               motions: list[np.ndarray]) -> np.ndarray:
        """The motion (world, ``prev`` -> ``cur``) of the segment ``mask`` of ``prev`` that
        best explains ``cur``: each of ``motions`` as given and refined by aligning the two
        frames directly. Frames may be far apart: a motion chained over many frames gathers
        each step's error, one fit across the whole gap does not. Leaves the frame-to-frame
        state alone."""
        cfg = self.config
        pair = _Pair(prev, cur, _detail(prev.gray, cfg), _detail(cur.gray, cfg), self._aligner)
        points, intensity = self._sample(pair, mask, np.random.default_rng(0))
        candidates = [*motions, *(self._aligned(pair, mask, M) for M in motions)]
        scores = [self._agreement(pair, M, points, intensity) for M in candidates]
        return candidates[int(np.argmax(scores))]

    def _aligned(self, pair: _Pair, mask: np.ndarray, start: np.ndarray) -> np.ndarray:
        """World motion of the mask's points found by alignment from ``start``."""
        T_init = invert_pose(pair.cur.T_wc) @ start @ pair.prev.T_wc
        T, _, _ = self._aligner.align_to(pair.cur_levels, pair.prev_levels, mask, T_init)
        return pair.cur.T_wc @ T @ invert_pose(pair.prev.T_wc)

    def _match(self, centroid: np.ndarray) -> FollowedSegment:
        """The followed segment nearest to ``centroid`` within the gate, else a new one."""
        if self._followed:
            gaps = [np.linalg.norm(f.centroid - centroid) for f in self._followed]
            if min(gaps) <= self.config.track_gate_m:
                return self._followed[int(np.argmin(gaps))]
        return FollowedSegment(centroid)

    def _best_motion(self, pair: _Pair, mask: np.ndarray, points: np.ndarray,
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
                [_rotation_deg(M[:3, :3] @ prior[:3, :3].T) for M in candidates])

        # refine the best few: one started in the wrong basin (e.g. a constant velocity that
        # was slightly off) stays there, another one may not
        for c in np.argsort(ranks())[::-1][:cfg.refine_candidates]:
            candidates.append(self._aligned(pair, mask, candidates[c]))
            scores.append(self._agreement(pair, candidates[-1], points, intensity))
        # the prior's basin is the one an aliased texture may hide (a millimetre off, the
        # prior scores low unrefined): refine it too unless a refinement already ended there
        if prior is not None and min(_rotation_deg(M[:3, :3] @ prior[:3, :3].T)
                                     for M in candidates[-cfg.refine_candidates:]
                                     ) > cfg.prior_refine_deg:
            candidates.append(self._aligned(pair, mask, prior))
            scores.append(self._agreement(pair, candidates[-1], points, intensity))
        best = int(np.argmax(ranks()))
        return candidates[best], scores[best]

    def _pixels(self, mask: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of at most ``max_points`` pixels of the mask, drawn at random."""
        ys, xs = np.nonzero(mask)
        if len(ys) > self.config.max_points:
            pick = rng.choice(len(ys), self.config.max_points, replace=False)
            ys, xs = ys[pick], xs[pick]
        return ys, xs

    def _sample(self, pair: _Pair, mask: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
        """World points and shading-free intensities of at most ``max_points`` mask pixels."""
        ys, xs = self._pixels(mask, rng)
        return pair.prev.points_world[ys, xs].astype(np.float64), pair.prev_detail[ys, xs]

    def _explained(self, pair: _Pair, mask: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """The pixels of ``mask`` that ``motion`` explains well, and better than no motion."""
        ys, xs = np.nonzero(mask)
        points = pair.prev.points_world[ys, xs].astype(np.float64)
        intensity = pair.prev_detail[ys, xs]
        moved = self._costs(pair, motion, points, intensity)
        still = self._costs(pair, np.eye(4), points, intensity)
        keep = (moved < self.config.explained_max_cost) & (moved <= still)
        out = np.zeros_like(mask)
        out[ys[keep], xs[keep]] = True
        return out

    def _agreement(self, pair: _Pair, M: np.ndarray, points: np.ndarray,
                   intensity: np.ndarray) -> float:
        """How well M predicts the current frame at the segment points, in [0, 1]."""
        return float(np.mean(1.0 - self._costs(pair, M, points, intensity)))

    def _costs(self, pair: _Pair, M: np.ndarray, points: np.ndarray,
               intensity: np.ndarray) -> np.ndarray:
        """Per-point cost in [0, 1] of moving world points of the previous frame by M into the
        current one (``hidden_cost`` when moved out of view or behind something)."""
        return self._costs_in(pair.cur, pair.cur_detail, M, points, intensity)

    def _costs_in(self, cur: RgbdView, cur_detail: np.ndarray, M: np.ndarray,
                  points: np.ndarray, intensity: np.ndarray, with_seen: bool = False
                  ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """`_costs` against any frame ``cur`` with shading-free intensities ``cur_detail``;
        ``with_seen`` also returns whether each moved point is in view and not hidden."""
        cfg = self.config
        uv, z = project(transform_points(invert_pose(cur.T_wc) @ M, points), self.K)
        h, w = cur.depth.shape
        inside = (np.isfinite(uv).all(axis=1) & (z > 0) & (uv[:, 0] >= 0) & (uv[:, 1] >= 0)
                  & (uv[:, 0] <= w - 1) & (uv[:, 1] <= h - 1))
        uv = np.where(inside[:, None], uv, 0.0).astype(np.float32)
        d = sample_bilinear(cur.depth, uv)
        g = sample_bilinear(cur_detail, uv)
        # truncated linear costs: unlike inlier counts they still rank motions that are all
        # within the tolerances, which is where sub-pixel accuracy is decided
        with np.errstate(invalid='ignore'):
            tol = np.maximum(cfg.agree_abs, cfg.agree_rel * z)
            depth_cost = np.abs(d - z) / tol
            photo_cost = np.abs(g - intensity) / cfg.agree_photo
            # something nearer now stands in front of the point
            hidden = d < z - 3.0 * tol
        cost = 0.5 * (np.minimum(np.nan_to_num(depth_cost, nan=1.0), 1.0)
                      + np.minimum(np.nan_to_num(photo_cost, nan=1.0), 1.0))
        # points that leave the view or become hidden neither support nor refute a motion
        # (counting them as misfits would favour motions that keep an exiting object in view)
        seen = inside & ~hidden
        cost = np.where(seen, cost, cfg.hidden_cost)
        return (cost, seen) if with_seen else cost

    def _flow_candidate(self, pair: _Pair, mask: np.ndarray, flow: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray | None:
        """Rigid fit (RANSAC) to the segment's optical flow lifted to 3D with current depth."""
        cfg = self.config
        ys, xs = self._pixels(mask, rng)
        return fit_rigid_to_flow(
            pair.prev.points_world[ys, xs].astype(np.float64),
            np.stack([xs, ys], axis=1).astype(np.float32) + flow[ys, xs], pair.cur.depth,
            pair.cur.T_wc, self.K, rng, cfg.ransac_tol_abs, cfg.ransac_tol_rel,
            cfg.ransac_iters, cfg.ransac_min_inliers, cfg.min_pixels)


def attach_to_segments(labels: np.ndarray, dynamic_mask: np.ndarray, depth: np.ndarray,
                       iu: np.ndarray, iv: np.ndarray, max_px: float, depth_abs: float,
                       depth_rel: float) -> np.ndarray:
    """Segment label (0 = none) of each query pixel (columns `iu`, rows `iv`) of a frame.

    `labels` are the frame's moving segments (H x W ints), `dynamic_mask` its moving pixels,
    `depth` its depth (metres). A moving pixel just outside every segment (segments keep only
    the pixels their motion explains well, and a fine texture may fail that on the object
    itself) takes the label of the nearest segment pixel within `max_px` pixels when their
    depths agree within max(depth_abs, depth_rel * depth): the same surface. Pixels not flagged
    as moving keep their own label.
    """
    query_seg = labels[iv, iu]
    loose = (query_seg == 0) & dynamic_mask[iv, iu]
    if not loose.any() or not labels.any():
        return query_seg
    dist, (near_v, near_u) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    lv, lu = iv[loose], iu[loose]
    nv, nu = near_v[lv, lu], near_u[lv, lu]
    z = depth[lv, lu]
    with np.errstate(invalid='ignore'):
        same = ((dist[lv, lu] <= max_px)
                & (np.abs(depth[nv, nu] - z) <= np.maximum(depth_abs, depth_rel * z)))
    query_seg = query_seg.copy()
    query_seg[np.flatnonzero(loose)[same]] = labels[nv[same], nu[same]]
    return query_seg


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
    ok = np.isfinite(moved).all(axis=1)
    if ok.sum() < min_points:
        return None
    tol = np.maximum(tol_abs, tol_rel * z[ok])
    return ransac_rigid(points[ok], moved[ok], tol, rng, iterations, min_inlier_ratio)


def _main_parts(labels: np.ndarray, share: float = 0.25) -> np.ndarray:
    """Labels with each label's connected parts smaller than ``share`` of its largest part
    removed: a motion also explains stray pixels far from its object (by chance, on a smooth
    texture), which would stretch the object's box."""
    out = labels.copy()
    for k in np.unique(labels[labels > 0]):
        _, parts, stats, _ = cv2.connectedComponentsWithStats((labels == k).astype(np.uint8),
                                                              connectivity=8)
        area = stats[1:, cv2.CC_STAT_AREA]
        small = np.flatnonzero(area < share * area.max()) + 1
        out[np.isin(parts, small)] = 0
    return out


def _rotation_deg(R: np.ndarray) -> float:
    """Angle of a 3x3 rotation in degrees."""
    return float(np.degrees(Rotation.from_matrix(R).magnitude()))


def _detail(gray: np.ndarray, cfg: SegmentMotionConfig) -> np.ndarray:
    """High-pass intensity (float32 grey levels): the texture without the smooth shading, which
    stays put in the image while a lit object turns and would pull the photometric term
    towards no rotation."""
    g = gray.astype(np.float32)
    return g - cv2.GaussianBlur(g, (0, 0), cfg.shading_sigma_px)


def rigid_flow_of_segments(segments: SegmentMotions, prev: RgbdView, T_wc_cur: np.ndarray,
                           K: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``flow`` (prev -> cur, pixels) with the pixels of segments that have a motion replaced
    by the flow that motion induces (exact for rigid objects, unlike DIS on fast textured ones).
    """
    out = flow.copy()
    T_cw = invert_pose(T_wc_cur)
    for k in range(1, len(segments.motions)):
        M = segments.motions[k].astype(np.float64)
        if not np.isfinite(M).all():
            continue
        ys, xs = np.nonzero((segments.labels == k) & np.isfinite(prev.depth))
        uv, _ = project(transform_points(T_cw @ M, prev.points_world[ys, xs].astype(np.float64)),
                        K)
        out[ys, xs] = uv - np.stack([xs, ys], axis=1)
    return out
