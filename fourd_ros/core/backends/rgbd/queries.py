"""Motion queries of the rgbd backend: where the points seen at pixels of a cached source frame
are at a cached target frame, read from the cache alone.

Static points stay where the source frame's depth and pose put them; moving points (world
displacement along the optical flow above the DPM threshold) follow the flow lifted with the
target's depth, and points of a moving segment follow that segment's rigid motion, hop by hop
through the cached frames (the motions stored while processing when every frame in between is
cached, which is the most accurate; otherwise flow computed directly between cached frames,
hopping through keyframes). Status and confidence come from visibility in the target frame.
"""

from __future__ import annotations

import functools
import threading

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from fourd_ros.core.backends.rgbd.config import RgbdConfig
from fourd_ros.core.backends.rgbd.latent import RgbdView
from fourd_ros.core.backends.rgbd.motion_scoring import MotionScorer, fit_rigid_to_flow
from fourd_ros.core.backends.rgbd.segmentation import attach_to_segments
from fourd_ros.core.engine.backend import CacheEntry, MotionEstimate
from fourd_ros.core.flow import CachedFlows, consecutive, DisFlow, full_flow
from fourd_ros.core.geometry import (finite_rows, inside_image, invert_pose, make_pose,
                                     mask_pixels, project, sample_bilinear, sample_depth,
                                     transform_points, unproject_pixels)
from fourd_ros.core.types import PointStatus


class QueryDecoder:
    """Answers `Backend.motion` for the rgbd backend (see the module docstring). Thread-safe:
    it reads cached frames only, its memos of flows (`CachedFlows`) and segment motions are
    guarded by locks, and its motion scorer is stateless; it may run while frames are processed.

    Args:
        config: the backend's settings.
        dis: DIS optical flow (one OpenCV instance per thread), shared with frame processing.
    """

    def __init__(self, config: RgbdConfig, dis: DisFlow) -> None:
        self.config = config
        self._flows = CachedFlows(dis)
        # (chain stamps, segment id) -> world motion (None = lost) of queried segments
        self._segment_memo: dict[tuple[tuple[float, ...], int], np.ndarray | None] = {}
        self._memo_lock = threading.Lock()
        self._motion_scorer: MotionScorer | None = None

    def clear(self) -> None:
        """Forget the memos (the stream was reset)."""
        self._flows.clear()
        with self._memo_lock:
            self._segment_memo.clear()

    def motion(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
               via: list[CacheEntry] | None = None) -> MotionEstimate:
        """World positions at ``target``'s time of the points seen at ``pixels`` (N x 2, u v)
        of ``source``, their target pixels, confidences and statuses; ``via`` are the cached
        frames between the two (see the module docstring)."""
        pixels = np.asarray(pixels, np.float32).reshape(-1, 2)
        chain = consecutive(source, target, via or []) if source is not target else None
        if (chain is not None and source.latent.flow_from_prev is None
                and chain[1].latent.follows(source)
                and chain[1].latent.flow_from_prev is not None):
            return self._from_next_frame(chain, pixels)
        return self._motion(source, target, pixels, via)

    def _from_next_frame(self, chain: list[CacheEntry], pixels: np.ndarray) -> MotionEstimate:
        """Answers for a source frame processed with no frame before it (stream start,
        tracking lost): its dynamic mask is empty because nothing could be seen moving yet, so
        the points are also followed to the next cached frame by its stored flow and answered
        from there, where motion is known. Points that both answers say moved take the next
        frame's answer; the others (static by either, or taken out of view by that flow) keep
        the direct one (docs/measurements.md, "Every queried point")."""
        source, following, target = chain[0], chain[1], chain[-1]
        direct = self._motion(source, target, pixels, chain[1:-1])
        h, w = following.dynamic_mask.shape
        p1 = pixels + sample_bilinear(full_flow(following.latent.flow_from_prev),
                                      pixels)
        src_world = sample_bilinear(source.points_world, pixels)
        next_world = sample_bilinear(following.points_world, p1)
        seen = np.flatnonzero(inside_image(p1, w, h) & np.isfinite(src_world[:, 2])
                              & np.isfinite(next_world[:, 2]))
        if not len(seen):
            return direct
        est = self._motion(following, target, p1[seen], chain[2:-1])
        # where both say the point moved (a static answer is the frame's own point), the next
        # frame's answer (its segments place moving points the target does not show); where
        # either says it stayed, the direct answer (the source's own depth; the next frame's
        # first dynamic mask is the noisiest)
        moved = (~np.all(est.positions == next_world[seen], axis=1)
                 & ~np.all(direct.positions[seen] == src_world[seen], axis=1))
        take = seen[moved]
        positions, out_pixels = direct.positions.copy(), direct.pixels.copy()
        confidence, status = direct.confidence.copy(), direct.status.copy()
        positions[take] = est.positions[moved]
        out_pixels[take] = est.pixels[moved]
        confidence[take] = est.confidence[moved]
        status[take] = est.status[moved]
        return MotionEstimate(positions, out_pixels, confidence, status)

    def _motion(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
                via: list[CacheEntry] | None) -> MotionEstimate:
        """`motion` answered from ``source``'s own dynamic mask and segments."""
        cfg = self.config
        n = len(pixels)
        h, w = source.dynamic_mask.shape
        status = np.full(n, PointStatus.VALID, np.uint8)
        conf = np.ones(n, np.float32)
        src_world = sample_bilinear(source.points_world, pixels)
        moving_src = sample_bilinear(source.dynamic_mask.astype(np.float32), pixels) > 0.5
        if source is target:
            return MotionEstimate(src_world, pixels.copy(), conf * np.isfinite(src_world[:, 2]),
                                  np.where(np.isfinite(src_world[:, 2]), status,
                                           PointStatus.INVALID).astype(np.uint8))
        # follow the pixels with optical flow, hop by hop through cached frames
        chain = consecutive(source, target, via or [])
        p = pixels.copy()
        lost = np.zeros(n, bool)
        f = None
        if chain is not None:
            # every frame in between is cached: compose the stored frame-to-frame flows (small
            # motions, the most accurate; refining the composite with one direct DIS pass
            # between source and target measured worse on moving objects)
            hops = [source, target]
            f = self._flows.composed(chain)
        else:
            hops = _hops(source, target, via or [], cfg.max_hop)
        for a, b in zip(hops[:-1], hops[1:]):
            p = p + sample_bilinear(f if f is not None else self._flows.step(a, b), p)
            lost |= ~inside_image(p, w, h)
        # positions from flow + target depth (valid for moving and static points)
        z_t = sample_depth(target.latent.depth, p)
        flow_world = transform_points(target.T_wc, unproject_pixels(p, z_t, target.K))
        # static prediction: the source point does not move in the world
        cam_t = transform_points(invert_pose(target.T_wc), src_world.astype(np.float64))
        p_static, z_static = project(cam_t, target.K)
        disp = np.linalg.norm(flow_world - src_world, axis=1)
        thresh = np.maximum(cfg.dynamic_rel * np.abs(z_static), cfg.dynamic_abs)
        moving = np.where(np.isfinite(disp), disp > thresh, moving_src)
        # where the source did not see a point move, the target can still show that it stayed
        # still although its flow says it moved:
        # - occluded: a nearer surface hides its static place; the chained flow was dragged
        #   along by the occluder passing over it (measured: 10-30 px off where staying still
        #   projects it);
        # - stays: the target shows it at its static place, in depth and in appearance, at
        #   least as well as where the flow took it (dragged by a neighbouring object, or by an
        #   occluder that has passed again);
        # - slid: its static place is out of view while the flow ends within half a DIS patch
        #   of the border: the patch left the image and the flow slid along the border (a mover
        #   that stays in view ends further in)
        z_seen = sample_depth(target.latent.depth, p_static)
        tol = np.maximum(cfg.occlusion_rel * z_static, cfg.occlusion_abs)
        hidden = z_seen < z_static - tol
        occluded = z_seen < (1.0 - cfg.occluder_rel) * z_static
        gray_t = target.latent.gray.astype(np.float32)
        gray_s = sample_bilinear(source.latent.gray.astype(np.float32), pixels)
        photo_static = np.abs(sample_bilinear(gray_t, p_static.astype(np.float32)) - gray_s)
        photo_flow = np.abs(sample_bilinear(gray_t, p.astype(np.float32)) - gray_s)
        stays = ((np.abs(z_seen - z_static) <= tol) & (photo_static <= cfg.static_photo_max)
                 & ~(photo_flow < photo_static))
        static_in = inside_image(p_static, w, h) & (z_static > 0)
        edge = np.minimum(np.minimum(p[:, 0], w - 1 - p[:, 0]),
                          np.minimum(p[:, 1], h - 1 - p[:, 1]))
        slid = ~static_in & ~(edge >= cfg.flow_border_px)
        moving &= ~(~moving_src & (occluded | stays | slid))
        if len(hops) > 2 or chain is not None:
            # chained flows drift by a fraction of a pixel per frame on moving objects; a small
            # Lucas-Kanade step from the source patch straight to the target removes the drift
            p, z_t, flow_world = self._refine_moving(source, target, pixels, p, z_t, flow_world,
                                                     moving)
        use = np.zeros(n, bool)  # points placed by their segment's rigid motion
        if chain is not None:
            # rigid objects: one motion per moving segment, fitted hop by hop, replaces the
            # per-point estimates (outlier flows cannot drag single points away), and places
            # the segment's points that are hidden or out of view at the target as well
            rigid = self._rigid_object_positions(chain, pixels, src_world)
            use = moving & finite_rows(rigid)
            flow_world[use] = rigid[use]
            p[use], _ = project(transform_points(invert_pose(target.T_wc), rigid[use]),
                                target.K)
        # a point of the source's dynamic mask that no moving segment places (the mask's fringe:
        # the background beside an object) and that staying still puts clearly behind what the
        # target sees, or that the target shows where staying still puts it: as for the static
        # points above (attached to a segment too, such points cost the segment's own hidden
        # points)
        fringe = moving & moving_src & ~use & (occluded | stays)
        moving &= ~fringe
        # brightness constancy catches moving points that became hidden (the flow then follows
        # the occluder, whose appearance differs); cheaper than a backward flow per frame
        photo_err = np.abs(sample_bilinear(gray_t, p) - gray_s)
        positions = np.where(moving[:, None], flow_world, src_world).astype(np.float32)
        pix_out = np.where(moving[:, None], p, p_static).astype(np.float32)
        # static points: visibility from their predicted projection and the target depth
        st = ~moving
        status[st & ~static_in] = PointStatus.OUT_OF_VIEW
        status[st & static_in & hidden] = PointStatus.OCCLUDED
        # moving points: visibility from the flow (out of view, appearance disagreement)
        mv = moving
        out = lost | ~inside_image(p, w, h)
        status[mv & out] = PointStatus.OUT_OF_VIEW
        status[mv & ~out & ~(photo_err <= cfg.photo_max)] = PointStatus.OCCLUDED
        no_depth = mv & ~out & ~np.isfinite(z_t)
        status[no_depth] = PointStatus.OCCLUDED
        # a moving point out of view or without target depth and without a rigid segment
        # motion has no measured position at the target: its source position, low confidence
        unknown = mv & (out | no_depth) & ~use
        positions[unknown] = src_world[unknown]
        invalid = ~finite_rows(src_world)
        status[invalid] = PointStatus.INVALID
        positions[invalid] = np.nan
        # how sure each answer is: a visible point by how well the target's appearance agrees;
        # an unseen static point is placed by geometry and the poses; an unseen moving one by
        # its object's rigid motion (extrapolated where nothing measures it); a moving point
        # with neither is a guess. A visible point placed by geometry or by its object's rigid
        # motion is at least as sure as an unseen one placed the same way: its answer does not
        # come from the pixel's appearance, which also changes with shading and the object's
        # turn (docs/measurements.md, query confidence)
        photo_conf = np.exp(-np.nan_to_num(photo_err, nan=255.0) / cfg.photo_max)
        conf = np.select(
            [status == PointStatus.VALID, st, use],
            [np.select([st, use], [np.maximum(photo_conf, cfg.unseen_static_confidence),
                                   np.maximum(photo_conf, cfg.unseen_rigid_confidence)],
                       photo_conf),
             cfg.unseen_static_confidence, cfg.unseen_rigid_confidence],
            cfg.guess_confidence)
        conf[invalid] = 0.0
        return MotionEstimate(positions, pix_out, conf.astype(np.float32), status)

    def _refine_moving(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
                       p: np.ndarray, z_t: np.ndarray, flow_world: np.ndarray,
                       moving: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refine moving points' target pixels with LK (source patch -> target image)."""
        sel = np.flatnonzero(moving & finite_rows(p))
        if not len(sel):
            return p, z_t, flow_world
        cfg = self.config
        start = p[sel].reshape(-1, 1, 2).astype(np.float32)
        refined, ok, _ = cv2.calcOpticalFlowPyrLK(
            source.latent.gray, target.latent.gray,
            pixels[sel].reshape(-1, 1, 2).astype(np.float32), start.copy(),
            winSize=(cfg.lk_window, cfg.lk_window), maxLevel=0,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
            criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01))
        refined = refined.reshape(-1, 2)
        # accept small corrections only: a large jump means LK locked onto something else
        keep = (ok.ravel() == 1) & (np.linalg.norm(refined - p[sel], axis=1) < cfg.lk_max_px)
        sel = sel[keep]
        p = p.copy()
        p[sel] = refined[keep]
        z_t = z_t.copy()
        z_t[sel] = sample_depth(target.latent.depth, p[sel])
        flow_world = flow_world.copy()
        flow_world[sel] = transform_points(target.T_wc,
                                           unproject_pixels(p[sel], z_t[sel], target.K))
        return p, z_t, flow_world

    def _rigid_object_positions(self, chain: list[CacheEntry], pixels: np.ndarray,
                                src_world: np.ndarray) -> np.ndarray:
        """Target-time positions of query points on moving segments, from rigid object motion.

        Segments are the ones whose motion to the next frame was estimated while processing
        it (objects only, see ``segment_motion.py``), else the connected parts of the source's
        dynamic mask. Each is followed through the chain hop by hop: with the motion stored
        for that hop when the segment has one, else its points are projected into frame a with
        the current rigid estimate (so pixels never drift), moved to frame b by the stored
        flow, lifted with b's depth, and a RANSAC rigid fit to those 3D correspondences gives
        the step. Over more than one hop, the composed motion and a constant-velocity one are
        then refined by aligning the source and target frames directly
        (``MotionScorer.refine``), which removes the error the steps gather. Segments
        that get lost in any hop are left out (NaN rows), as are points off the segments.
        """
        source = chain[0]
        stored = chain[1].latent.segments_from_prev
        if stored is not None and chain[1].latent.follows(source):
            labels = stored.labels
        else:
            _, labels = cv2.connectedComponents(source.dynamic_mask.astype(np.uint8),
                                                connectivity=8)
        h, w = labels.shape
        iu = np.clip(np.round(pixels[:, 0]).astype(np.int64), 0, w - 1)
        iv = np.clip(np.round(pixels[:, 1]).astype(np.int64), 0, h - 1)
        cfg = self.config
        query_seg = attach_to_segments(labels, source.dynamic_mask, source.latent.depth, iu,
                                       iv, cfg.rigid_attach_px, cfg.dynamic_abs,
                                       cfg.dynamic_rel)
        out = np.full((len(pixels), 3), np.nan, np.float64)
        chain_key = tuple(e.stamp for e in chain)
        for seg in np.unique(query_seg):
            if seg == 0:
                continue
            # a segment's motion over a chain does not depend on the pixels queried: planners
            # query the same frames again and again (measured: 100-140 ms per query 2 frames
            # back at 320x240, the refinement recomputed each time)
            key = (chain_key, int(seg))
            with self._memo_lock:
                T = self._segment_memo.get(key, False)
            if T is False:
                T = self._segment_motion(chain, labels, int(seg))
                with self._memo_lock:
                    if len(self._segment_memo) > 64:
                        self._segment_memo.clear()
                    self._segment_memo[key] = T
            if T is None:
                continue
            rows = query_seg == seg
            out[rows] = transform_points(T, src_world[rows].astype(np.float64))
        return out

    def _segment_motion(self, chain: list[CacheEntry], labels: np.ndarray,
                        seg: int) -> np.ndarray | None:
        """4x4 world motion of segment `seg` of the source frame over the chain, or None."""
        cfg = self.config
        source = chain[0]
        rng = np.random.default_rng(seg)  # the same answer whatever else is queried
        ys, xs = mask_pixels(labels == seg)
        P = source.points_world[ys, xs].astype(np.float64)
        P = P[finite_rows(P)]
        if len(P) < cfg.rigid_min_pixels:
            return None
        if len(P) > cfg.rigid_max_points:
            P = P[rng.choice(len(P), cfg.rigid_max_points, replace=False)]
        steps = self._track_rigid_segment(chain, P, rng)
        if steps is None:
            return None
        T = functools.reduce(lambda acc, step: step @ acc, steps, np.eye(4))
        if len(steps) > 1 and cfg.segment_motion:
            # the chained motion and a constant-velocity one (the median step repeated:
            # robust to a few aliased steps), each refined across the whole gap
            T = self._scorer(source).refine(
                RgbdView.of(source), RgbdView.of(chain[-1]), labels == seg,
                [T, _constant_velocity(steps, P.mean(axis=0), T)])
        return T

    def _scorer(self, entry: CacheEntry) -> MotionScorer:
        """The motion scorer for frames like ``entry`` (one for all query threads: it is
        stateless, and its aligner's tables are built once per camera)."""
        h, w = entry.dynamic_mask.shape
        with self._memo_lock:
            scorer = self._motion_scorer
            if scorer is None or not np.array_equal(scorer.K, entry.K) or scorer.size != (w, h):
                scorer = self._motion_scorer = MotionScorer(entry.K, w, h, self.config.segments)
        return scorer

    def _track_rigid_segment(self, chain: list[CacheEntry], P: np.ndarray,
                             rng: np.random.Generator) -> list[np.ndarray] | None:
        """World-frame rigid motions of points P (world, chain[0] time), one per hop of the
        chain, or None.

        Per hop: the motion estimated while processing (``segment_motion.py``), else, for at
        most ``rigid_max_coast`` hops in a row, the previous hop's motion (an object's motion
        changes little in one frame, while a flow that lost it is no better), else a RANSAC
        fit to the stored flow lifted to 3D, else (the object has left the view or is hidden:
        nothing measures it) the previous hop's motion again.
        """
        cfg = self.config
        steps: list[np.ndarray] = []
        last, coasted = None, 0
        for a, b in zip(chain[:-1], chain[1:]):
            h, w = a.dynamic_mask.shape
            uv, z = project(transform_points(invert_pose(a.T_wc), P), a.K)
            seen = inside_image(uv, w, h) & (z > 0)
            step = _stored_segment_motion(a, b, uv[seen])
            if step is not None:
                coasted = 0
            elif last is not None and coasted < cfg.rigid_max_coast:
                step, coasted = last, coasted + 1
            else:
                step = self._flow_rigid_step(a, b, P[seen], uv[seen], rng)
                if step is None:
                    if last is None:
                        return None
                    step = last
            P = transform_points(step, P)
            steps.append(step)
            last = step
        return steps

    def _flow_rigid_step(self, a: CacheEntry, b: CacheEntry, P: np.ndarray, uv: np.ndarray,
                         rng: np.random.Generator) -> np.ndarray | None:
        """Rigid world motion a -> b of points P (seen at pixels uv of a) from the flow a -> b."""
        cfg = self.config
        uv_b = uv + sample_bilinear(self._flows.step(a, b), uv.astype(np.float32))
        return fit_rigid_to_flow(P, uv_b, b.latent.depth, b.T_wc, b.K, rng,
                                 cfg.rigid_tol_abs, cfg.rigid_tol_rel, cfg.rigid_ransac_iters,
                                 cfg.rigid_min_inliers, cfg.rigid_min_pixels)


def _hops(source: CacheEntry, target: CacheEntry, via: list[CacheEntry],
          max_hop: int) -> list[CacheEntry]:
    """Frames to chain optical flow through: direct when close, else greedy longest hops."""
    if abs(target.index - source.index) <= max_hop or not via:
        return [source, target]
    forward = target.index > source.index
    candidates = sorted(via, key=lambda e: e.index, reverse=not forward)
    path = [source]
    i = 0
    while abs(target.index - path[-1].index) > max_hop:
        best = None
        while i < len(candidates) and abs(candidates[i].index - path[-1].index) <= max_hop:
            best = candidates[i]
            i += 1
        if best is None:  # gap with nothing cached inside: take the next frame available
            if i >= len(candidates):
                break
            best = candidates[i]
            i += 1
        path.append(best)
    path.append(target)
    return path


def _constant_velocity(steps: list[np.ndarray], centroid: np.ndarray, chained: np.ndarray
                       ) -> np.ndarray:
    """World motion over all ``steps`` at constant angular velocity: the median step rotation
    repeated, about ``centroid`` (world, start time), which moves as ``chained`` moves it."""
    rotvec = np.median([Rotation.from_matrix(M[:3, :3]).as_rotvec() for M in steps], axis=0)
    R = Rotation.from_rotvec(rotvec * len(steps)).as_matrix()
    return make_pose(R, transform_points(chained, centroid[None])[0] - R @ centroid)


def _stored_segment_motion(a: CacheEntry, b: CacheEntry, uv: np.ndarray) -> np.ndarray | None:
    """The rigid motion a -> b estimated while processing b for the segment of frame a that
    most of the pixels ``uv`` (frame a) lie on; None when there is none."""
    stored = b.latent.segments_from_prev
    if stored is None or not b.latent.follows(a) or not len(uv):
        return None
    labels = stored.labels
    h, w = labels.shape
    iu = np.clip(np.round(uv[:, 0]).astype(np.int64), 0, w - 1)
    iv = np.clip(np.round(uv[:, 1]).astype(np.int64), 0, h - 1)
    votes = np.bincount(labels[iv, iu], minlength=2)
    k = int(np.argmax(votes[1:])) + 1
    # the segment must hold most of the points (not the background or another object)
    if votes[k] < 0.5 * len(uv):
        return None
    M = stored.motions[k].astype(np.float64)
    return M if np.isfinite(M).all() else None
