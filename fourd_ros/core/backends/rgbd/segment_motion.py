"""Rigid motion of each moving segment between consecutive RGB-D frames ("object odometry").

Dense optical flow alone fails on fast, finely textured objects (the pattern of a turning
checker moves by much of a period per frame). Geometry does not alias, so each connected part
of the previous frame's dynamic mask (split at depth jumps) is aligned to the current frame
like a small camera:

1. Score staying still: a segment that it explains well is a false detection and is skipped,
   unless the last frame's moving segments cover half of it (a slow, smoothly textured object
   that staying still explains nearly as well as its motion).
2. Score candidate motions (none, the motions found one frame earlier = constant velocity, a
   RANSAC fit to the optical flow lifted to 3D) by how well they predict the current depth and
   shading-free (high-pass) intensity, and refine the best by masked point-to-plane ICP with a
   photometric term (``motion_scoring.MotionScorer``).
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

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from fourd_ros.core.backends.rgbd.config import SegmentMotionConfig
from fourd_ros.core.backends.rgbd.latent import RgbdView, SegmentMotions
from fourd_ros.core.backends.rgbd.motion_scoring import MotionScorer, fit_rigid_to_flow
from fourd_ros.core.backends.rgbd.segmentation import main_parts
from fourd_ros.core.engine.objects import depth_edges, depth_jump, label_moving_segments
from fourd_ros.core.geometry import (finite_rows, invert_pose, make_pose, mask_pixels,
                                     pixel_grid, project, transform_points)


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
        self.scorer = MotionScorer(self.K, width, height, self.config)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix='rgbd-segment-pyramid')
        self.reset()

    def prefetch(self, gray: np.ndarray, depth: np.ndarray) -> None:
        """Start building a frame's intensities and pyramid (`MotionScorer.prepared`) on the
        worker thread, for the `estimate` calls that take it as the current and then as the
        previous frame: most frames of a moving scene need them, and their other core is
        free while the caller computes the frame's flow and camera pose. ``gray`` and
        ``depth`` are the arrays of that frame's `RgbdView` (not modified afterwards)."""
        job = self._worker.submit(self.scorer.prepared, gray, depth)
        self._ready = [*self._ready[-1:], (gray, depth, job)]

    def _prefetched(self, view: RgbdView) -> Future | None:
        """The `prefetch` job of a frame, if it was started."""
        for gray, depth, job in self._ready:
            if gray is view.gray and depth is view.depth:
                return job
        return None

    def close(self) -> None:
        """Stop the worker thread (after its pending job)."""
        self._worker.shutdown()

    def reset(self) -> None:
        self._ready: list[tuple[np.ndarray, np.ndarray, Future]] = []
        self._last: list[np.ndarray] = []
        self._followed: list[FollowedSegment] = []
        # the last `current_segments` call's frame (its grey image) and moving segments
        self._last_labels: tuple[np.ndarray, np.ndarray] | None = None
        # (depth map, its depth edges): the current frame's serve again as the previous one's
        self._edges: tuple[np.ndarray, np.ndarray] | None = None
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
            edges = self._depth_edges(prev.depth)
            _, labels, stats, _ = cv2.connectedComponentsWithStats(
                (prev.dynamic & ~edges & np.isfinite(prev.depth)).astype(np.uint8),
                connectivity=8)
            order = [k for k in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1
                     if stats[k, cv2.CC_STAT_AREA] >= cfg.min_pixels][:cfg.max_segments]
        out_labels = np.zeros(labels.shape, np.uint8)
        motions = np.full((len(order) + 1, 4, 4), np.nan, np.float32)
        found: list[np.ndarray] = []
        if not order:
            self._last, self._followed = [], []
            return SegmentMotions(out_labels, motions)
        # the two frames' intensities and pyramids: prefetched (`prefetch`), else built here
        prev_ready, cur_ready = self._prefetched(prev), self._prefetched(cur)
        prev_detail, prev_levels = (None, None) if prev_ready is None else prev_ready.result()
        pair = self.scorer.pair(prev, cur, prev_detail, prev_levels,
                                None if cur_ready is None else cur_ready.result())
        rng = np.random.default_rng(0)
        followed: list[FollowedSegment] = []
        for new_label, seg in enumerate(order, start=1):
            mask = labels == seg
            points, intensity = self.scorer.sample(pair, mask, rng)
            still = self.scorer.agreement(pair, np.eye(4), points, intensity)
            if still >= 1.0 - cfg.static_cost and not self._was_moving(prev, mask):
                # static after all (a false detection, e.g. at a depth edge): not worth a fit
                continue
            centroid = points.mean(axis=0)
            track = self._match(centroid)
            prior = track.prior(cfg.prior_min_history)
            candidates = [np.eye(4), *self._last, *([] if prior is None else [prior])]
            fitted = self.scorer.flow_candidate(pair, mask, flow, rng)
            if fitted is not None:
                candidates.append(fitted)
            scores = [still] + [self.scorer.agreement(pair, M, points, intensity)
                                for M in candidates[1:]]
            motion, score = self.scorer.best_motion(pair, mask, points, intensity, candidates,
                                                    scores, prior)
            if score < still + cfg.static_margin:
                continue  # no motion explains the segment clearly better than staying still
            # the dynamic mask also takes in some background next to the object (where it was
            # or will be); those pixels bias the fit, so keep only the pixels the motion
            # explains better than staying still, and fit again
            mask = self.scorer.explained(pair, mask, motion)
            if np.count_nonzero(mask) < cfg.min_pixels:
                continue
            points, intensity = self.scorer.sample(pair, mask, rng)
            candidates = [motion, *([] if prior is None else [prior])]
            motion, score = self.scorer.best_motion(
                pair, mask, points, intensity, candidates,
                [self.scorer.agreement(pair, M, points, intensity) for M in candidates], prior)
            if score >= cfg.min_agreement:
                motions[new_label] = motion
                out_labels[mask] = new_label
                found.append(motion)
                followed.append(track.moved(motion, centroid, points.mean(axis=0),
                                            cfg.history))
        self._last, self._followed = found, followed
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
        3. Each segment keeps its main connected parts (`segmentation.main_parts`). A segment
           is dropped when its motion does not explain it better than staying still (`_moves`: a
           surface just covered or uncovered by an object fits a wrong motion by chance), or
           when it also explains the static background better: that is the camera's pose
           error, not an object.
        4. Each segment left grows over the rest of its object's surface (`_grown`), and is
           published only when it stands out of its surroundings in depth (`_outlined`).
        """
        cfg = self.config
        labels = self._moved_forward(prev, cur, segments, dynamic)
        motions = list(segments.motions) if len(segments.motions) else [np.eye(4)]
        fringe = cv2.dilate((labels > 0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        leftover = label_moving_segments(
            dynamic & (labels == 0), cur.depth,
            max(cfg.min_pixels, int(cfg.leftover_min_share * dynamic.size)), cfg.max_segments,
            self._depth_edges(cur.depth))
        parts = [(k, part) for k, part in ((k, leftover == k)
                                           for k in range(1, int(leftover.max(initial=0)) + 1))
                 if np.count_nonzero(part & fringe) <= 0.5 * np.count_nonzero(part)]
        landed = self._landed(leftover, flow, prev) if parts else leftover
        rng = np.random.default_rng(0)
        for k, part in parts:
            ys, xs = self.scorer.pixels(landed == k, rng)
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
        labels = main_parts(labels)
        # a motion that explains the static background better than staying still is the
        # camera's pose error showing on a surface, not an object
        if labels.any():  # (the sample draws from `rng` last: skipping it changes nothing)
            background = ~dynamic & (labels == 0) & np.isfinite(cur.depth)
            ys, xs = self.scorer.pixels(background, rng)
            sample = np.zeros_like(background)
            sample[ys, xs] = True
        for k in range(1, len(motions)):
            part = labels == k
            if not part.any():
                continue
            if not self._moves(prev, cur, part, motions[k]) or (
                    len(ys) >= cfg.min_pixels and self._moves(prev, cur, sample, motions[k])):
                labels[part] = 0
        # only the published segments grow and are checked against their outline: the next
        # frame's fits start from these (grown ones took development seed 6's moving points
        # from 79.3 to 75.3 APD3D)
        self._last_labels = (cur.gray, labels)
        if labels.any():
            surfaces = _surfaces(cur.depth, self._depth_edges(cur.depth))
            labels = self._outlined(cur, self._grown(prev, cur, labels, motions, surfaces),
                                    surfaces)
        return SegmentMotions(labels, np.asarray(motions, np.float32))

    def _grown(self, prev: RgbdView, cur: RgbdView, labels: np.ndarray,
               motions: list[np.ndarray], surfaces: np.ndarray) -> np.ndarray:
        """``labels`` with each segment grown over the surface (``surfaces``: `_surfaces` of
        ``cur``) that most of it lies on, by the pixels its motion explains (cost below
        ``explained_max_cost``), when that surface is small enough to be one object seen whole
        against its background (``grow_max_factor``, ``grow_max_share``). A slow object shows
        its motion only at its silhouette, where it covers or uncovers the background: the
        dynamic mask held a crescent of the DDS test's slow sphere, a quarter of its pixels,
        too little for it to be matched as an object (docs/measurements.md)."""
        cfg = self.config
        if cfg.grow_max_factor <= 0:
            return labels
        sizes = np.bincount(surfaces.ravel())
        out = labels.copy()
        for k in range(1, len(motions)):
            part = labels == k
            s = _main_surface(surfaces, part)
            if not s or not np.isfinite(motions[k]).all() or sizes[s] > min(
                    cfg.grow_max_factor * np.count_nonzero(part),
                    cfg.grow_max_share * labels.size):
                continue
            todo = (surfaces == s) & (out == 0)
            if not todo.any():
                continue
            ys, xs, _, moved, _ = self._compare(prev, cur, todo, motions[k])
            keep = moved < cfg.explained_max_cost
            out[ys[keep], xs[keep]] = k
        return out

    def _outlined(self, cur: RgbdView, labels: np.ndarray, surfaces: np.ndarray
                  ) -> np.ndarray:
        """``labels`` without the segments that do not stand out of their surroundings in
        depth: neither the segment's outline nor that of the surface most of it lies on
        (``surfaces``; a segment may cover one face of an object) lies behind it on at least
        ``min_occluding_outline`` of its pixels (`_occluding_share`). A moving object
        occludes what is behind it along much of its outline; the false segments of the DDS
        test's clip, patches of the room beside the fast object that a wrong motion happened
        to explain, did nowhere (docs/measurements.md)."""
        floor = self.config.min_occluding_outline
        if floor <= 0:
            return labels
        out = labels.copy()
        for k in np.unique(labels[labels > 0]):
            part = labels == k
            if _occluding_share(cur.depth, part) >= floor:
                continue
            s = _main_surface(surfaces, part)
            if not s or _occluding_share(cur.depth, surfaces == s) < floor:
                out[part] = 0
        return out

    def _depth_edges(self, depth: np.ndarray) -> np.ndarray:
        """`depth_edges` of a depth map, computed once per frame: each frame's depth is
        asked for by `current_segments` (twice) and by the next frame's `estimate`."""
        if self._edges is None or self._edges[0] is not depth:
            self._edges = (depth, depth_edges(depth))
        return self._edges[1]

    def _was_moving(self, prev: RgbdView, mask: np.ndarray) -> bool:
        """Whether ``prev``'s moving segments (`current_segments` of it) cover at least half
        of ``mask`` (``prev``'s grid): a slow, smoothly textured object that staying still
        explains nearly as well as its motion is still fitted while it is followed."""
        if self._last_labels is None or self._last_labels[0] is not prev.gray:
            return False
        return bool(np.count_nonzero(self._last_labels[1][mask])
                    >= 0.5 * np.count_nonzero(mask))

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
        ys, xs = mask_pixels(mask)
        if limit is not None and len(ys) > limit:
            pick = np.linspace(0, len(ys) - 1, limit).astype(int)
            ys, xs = ys[pick], xs[pick]
        still, seen = self._still(prev, cur, ys, xs)
        moved = self.scorer.costs_in(prev, prev_detail, invert_pose(motion.astype(np.float64)),
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
            cost[ty, tx], seen[ty, tx] = self.scorer.costs_in(
                prev, prev_detail, np.eye(4), cur.points_world[ty, tx].astype(np.float64),
                cur_detail[ty, tx], with_seen=True)
        return cost[ys, xs], seen[ys, xs]

    def _frame_details(self, prev: RgbdView, cur: RgbdView) -> tuple[np.ndarray, np.ndarray]:
        """Shading-free intensities of ``prev`` and ``cur`` (those of the last estimate when
        it was of these two frames)."""
        if self._details is not None and self._details[0].gray is prev.gray \
                and self._details[2].gray is cur.gray:
            return self._details[1], self._details[3]
        prev_ready, cur_ready = self._prefetched(prev), self._prefetched(cur)
        self._details = (prev, self.scorer.detail(prev.gray) if prev_ready is None
                         else prev_ready.result()[0], cur,
                         self.scorer.detail(cur.gray) if cur_ready is None
                         else cur_ready.result()[0])
        return self._details[1], self._details[3]

    @staticmethod
    def _landed(labels: np.ndarray, flow: np.ndarray, prev: RgbdView) -> np.ndarray:
        """H x W labels, on the previous frame's grid, of the current-frame segment each
        previous pixel with depth lands on by ``flow`` (0 = none)."""
        h, w = labels.shape
        u, v = pixel_grid(h, w)
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
            ys, xs = mask_pixels(segments.labels == k)
            uv, z = project(transform_points(T_cw @ segments.motions[k].astype(np.float64),
                                             prev.points_world[ys, xs].astype(np.float64)),
                            self.K)
            ok = finite_rows(uv) & (z > 0)
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

    def _match(self, centroid: np.ndarray) -> FollowedSegment:
        """The followed segment nearest to ``centroid`` within the gate, else a new one."""
        if self._followed:
            gaps = [np.linalg.norm(f.centroid - centroid) for f in self._followed]
            if min(gaps) <= self.config.track_gate_m:
                return self._followed[int(np.argmin(gaps))]
        return FollowedSegment(centroid)


def _surfaces(depth: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """H x W int32 labels of the depth-continuous surfaces of a depth map (metres, NaN =
    none) with its ``edges`` (`depth_edges`): parts without a depth jump inside,
    4-connected; 0 = edge or no depth."""
    surface = ~edges & np.isfinite(depth)
    return cv2.connectedComponents(surface.astype(np.uint8), connectivity=4)[1]


def _main_surface(surfaces: np.ndarray, part: np.ndarray) -> int:
    """The surface label that most pixels of ``part`` lie on (0 when none)."""
    on = surfaces[part]
    on = on[on > 0]
    return int(np.bincount(on).argmax()) if on.size else 0


def _occluding_share(depth: np.ndarray, part: np.ndarray) -> float:
    """Share of the pixels around ``part`` (its 8-neighbours outside it, the image border left
    out) that lie behind it by a `depth_jump` or have no depth; 1 when it has no such
    pixels."""
    kernel = np.ones((3, 3), np.uint8)
    ring = cv2.dilate(part.astype(np.uint8), kernel).astype(bool) & ~part
    ring[[0, -1], :] = False
    ring[:, [0, -1]] = False
    if not ring.any():
        return 1.0
    # the nearest depth of the part next to each outline pixel
    nearest = cv2.erode(np.where(part & np.isfinite(depth), depth, np.float32(np.inf))
                        .astype(np.float32), kernel)[ring]
    z = depth[ring]
    with np.errstate(invalid='ignore'):
        behind = ~np.isfinite(z) | ((z > nearest) & depth_jump(nearest, z))
    return float(behind.mean())
