"""Moving objects: per-frame segments of moving pixels followed from frame to frame under
persistent ids, each with a rigid motion, velocity and oriented box.

Every backend reports, per frame, its moving segments (``FrameResult.segments``, labels on the
frame's pixel grid, not persistent) and the world velocity of every pixel
(``FrameResult.scene_flow``). This module turns them into objects, the same way for every
backend:

1. each segment's rigid motion since the previous frame is the least-squares rigid transform
   that takes its points back in time along their velocities (``X - v dt``) to where they are
   (``X``): exact for a backend that moves segments rigidly (rgbd), a best fit for a per-pixel
   field (learned);
2. its velocity is the centroid's, its angular velocity the motion's rotation over ``dt``, its
   box the principal axes of its points (2nd-98th percentile extents, robust to stray pixels);
3. segments are matched to the objects followed so far by their centroids (Hungarian
   assignment on the distance to each object's centroid predicted with its velocity, or to
   its last centroid when nearer: it may have stopped; gated by distance). A segment left
   unmatched next to one matched to an object, moving alike, is another part of that object
   (the segmentation split it): the parts are measured together. Any other unmatched segment
   starts a new object, unless an object that was sure (reported over a whole path window)
   was lost near it within ``reid_s`` and had about its size: then that object is back (it
   left the view, or was hidden) and keeps its id. An object without a segment is kept for
   ``max_missed`` frames (an object the segmentation misses for a frame keeps its id). Ids
   start at 1 and are never given to another object within a stream;
4. every followed segment carries its object's id (`ObjectSnapshot.segment_ids`: the motion
   mask), but an object is reported (`ObjectSnapshot.objects`) only from its ``min_age``-th
   frame on and while its centroid travels (``min_straightness``): a static surface that depth
   noise or a pose error makes look like moving jitters in place.

Conventions as in ``fourd_ros.core.types``: world = the first camera (OpenCV axes), metres or
scene units (``metric``), seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numba
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

from fourd_ros.core.geometry import (finite_rows, invert_pose, make_pose, nan_to_zero,
                                     transform_points, umeyama)


@dataclass
class ObjectConfig:
    """Object settings (lengths in world units: metres for metric backends).

    Attributes:
        min_points: smallest segment (pixels with geometry) that becomes an object.
        min_share: ... and smallest share of the image's pixels.
        fit_points: points (evenly spread) each rigid fit and box uses at most.
        gate: largest distance between an object's predicted centroid and a segment's
            centroid for the two to match, plus ``gate_size`` times the object's largest extent
            (the largest seen so far).
        gate_size: see ``gate``.
        max_missed: frames an object is kept without a segment before it is dropped.
        min_age: frames an object must be followed before it is reported (a segment seen on
            one frame only is more often a false detection than an object).
        path_window, min_straightness: an object is reported while its centroids over the
            last ``path_window`` frames run straight enough: net displacement at least
            ``min_straightness`` of the path's length. A static surface mistaken for an object
            (depth noise, a pose error) jitters about in place (7-Scenes: median 0.22), a
            moving object travels (synthetic: median 0.90, 5th percentile 0.31).
        keep_straightness: an object reported on the last ``path_window`` frames in a row
            stays reported while its straightness is at least this: an object that turns
            sharply runs partly back over its path for a few frames (a 135 degree turn at
            constant speed: 0.38; the DDS test's object turning round: 0.47).
        inlier_speed: a point's velocity agrees with its object's rigid motion when they differ
            by less than max(inlier_speed, inlier_rel x the object's speed) (units/s).
        inlier_rel: see ``inlier_speed``.
        reid_s: an object reported over a whole ``path_window`` and then lost is remembered
            this long (seconds): a new segment near where it was last seen (within ``gate``
            plus ``reid_size`` times its largest extent), of about its size (half to 1.5
            times that extent), is that object back under its id.
        reid_size: see ``reid_s``.
    """

    min_points: int = 64
    min_share: float = 0.005
    fit_points: int = 2000
    gate: float = 0.15
    gate_size: float = 0.5
    max_missed: int = 5
    min_age: int = 3
    path_window: int = 6
    min_straightness: float = 0.5
    keep_straightness: float = 0.3
    inlier_speed: float = 0.02
    inlier_rel: float = 0.2
    reid_s: float = 3.0
    reid_size: float = 1.0


@dataclass
class MovingObject:
    """One moving object at one frame (world frame, world units, seconds).

    Attributes:
        id: persistent id (>= 1), never reused within a stream.
        num_points: pixels of the object seen in this frame.
        centroid: 3, mean of its points.
        box_center, box_rotation, box_size: oriented box: centre (3), axes (3x3, columns; det
            +1) and full lengths along them (3).
        velocity: 3, velocity of the point at the centroid (units/s).
        angular_velocity: 3, rotation vector per second (rad/s).
        motion: 4x4 rigid transform since the previous frame, ``X(t) = motion @ X(t - dt)``
            (identity when the object's velocity is unknown).
        confidence: in [0, 1]: mean pixel confidence x share of its points that move with the
            rigid motion.
        age: frames the object has been followed (1 = first seen now).
    """

    id: int
    num_points: int
    centroid: np.ndarray
    box_center: np.ndarray
    box_rotation: np.ndarray
    box_size: np.ndarray
    velocity: np.ndarray
    angular_velocity: np.ndarray
    motion: np.ndarray
    confidence: float
    age: int


@dataclass
class ObjectSnapshot:
    """The objects of one frame and the frame's segments.

    Attributes:
        stamp: capture time (s).
        dt: seconds since the previous frame (the interval of each object's motion; 0 at
            the start of a stream).
        objects: the objects reported in this frame, by id.
        segments: H x W uint16 segment labels of the frame (0 = static), as the backend gave.
        segment_ids: persistent object id of each label (index = label; 0 for label 0 and for
            segments too small to be an object), reported or not.
    """

    stamp: float
    dt: float = 0.0
    objects: list[MovingObject] = field(default_factory=list)
    segments: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint16))
    segment_ids: np.ndarray = field(default_factory=lambda: np.zeros(1, np.uint64))

    def id_mask(self) -> np.ndarray:
        """H x W uint64 object id of each pixel (0 = static)."""
        return object_ids_of(self.segments, self.segment_ids)


def object_ids_of(segments: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """Object ids of segment labels (any shape): ``segment_ids[label]``, 0 past its end."""
    ids = np.zeros(max(int(segments.max(initial=0)) + 1, len(segment_ids)), np.uint64)
    ids[:len(segment_ids)] = segment_ids
    return ids[segments]


@dataclass
class _Followed:
    """An object followed across frames (what association needs)."""

    id: int
    stamp: float
    centroid: np.ndarray
    velocity: np.ndarray
    size: float
    age: int = 1
    missed: int = 0
    reported: int = 0  # frames reported in a row, up to the last one
    confirmed: bool = False  # reported on a whole path window once
    path: list[np.ndarray] = field(default_factory=list)  # recent centroids, oldest first

    def straightness(self) -> float:
        """Net displacement of the recent centroids over the length of their path (1 = a
        straight line; a static surface the segmentation mistook for an object jitters about
        in place, near 0)."""
        steps = np.diff(np.asarray(self.path), axis=0)
        length = float(np.linalg.norm(steps, axis=1).sum())
        return float(np.linalg.norm(steps.sum(axis=0))) / length if length > 0 else 0.0


class ObjectTracker:
    """Turns each frame's segments and scene flow into persistent objects (module docstring)."""

    def __init__(self, config: ObjectConfig | None = None) -> None:
        self.config = config or ObjectConfig()
        self.reset()

    def restart(self) -> None:
        """Forget every object but not the ids given (ids are never reused in a stream)."""
        next_id = self._next_id
        self.reset()
        self._next_id = next_id

    def reset(self) -> None:
        self._next_id = 1
        self._followed: list[_Followed] = []
        self._lost: list[_Followed] = []
        self._last_stamp: float | None = None

    def _reidentify(self, stamp: float, obj: MovingObject) -> _Followed | None:
        """The lost object a new segment's `obj` is (the nearest that fits, `ObjectConfig.reid_s`)
        or None; objects lost longer than ``reid_s`` ago are forgotten."""
        cfg = self.config
        self._lost = [f for f in self._lost if stamp - f.stamp <= cfg.reid_s]
        size = float(obj.box_size.max())
        best, best_d = None, np.inf
        for f in self._lost:
            d = float(np.linalg.norm(obj.centroid - f.centroid))
            if d <= cfg.gate + cfg.reid_size * f.size and f.size / 2 <= size <= 1.5 * f.size \
                    and d < best_d:
                best, best_d = f, d
        if best is not None:
            self._lost.remove(best)
            best.path = [best.centroid]
            best.missed = 0
        return best

    def _reportable(self, followed: _Followed) -> bool:
        """Whether a followed object is reported this frame (`ObjectConfig`: age, then
        straightness, with the lower bar once it has been reported for a whole window)."""
        cfg = self.config
        if followed.age < cfg.min_age:
            return False
        bar = (cfg.keep_straightness if followed.reported >= cfg.path_window
               else cfg.min_straightness)
        return followed.straightness() >= bar

    def step(self, stamp: float, points_world: np.ndarray, segments: np.ndarray,
             scene_flow: np.ndarray, confidence: np.ndarray) -> ObjectSnapshot:
        """Objects of a frame: `points_world` H x W x 3, `segments` H x W labels, `scene_flow`
        H x W x 3 world velocities (NaN = unknown), `confidence` H x W in [0, 1]."""
        dt = None if self._last_stamp is None else stamp - self._last_stamp
        self._last_stamp = stamp
        n_labels = int(segments.max(initial=0))
        measured: list[tuple[int, MovingObject]] = []
        for label in range(1, n_labels + 1):
            obj = self._measure(segments == label, points_world, scene_flow, confidence, dt)
            if obj is not None:
                measured.append((label, obj))
        segment_ids = np.zeros(n_labels + 1, np.uint64)
        objects = []
        for labels, obj, followed in self._parts_of_objects(
                stamp, measured, segments, points_world, scene_flow, confidence, dt):
            if followed is None:
                followed = self._reidentify(stamp, obj)
                if followed is None:
                    followed = _Followed(self._next_id, stamp, obj.centroid, np.zeros(3), 0.0, 0)
                    self._next_id += 1
                self._followed.append(followed)
            followed.stamp, followed.centroid, followed.missed = stamp, obj.centroid, 0
            if np.isfinite(obj.velocity).all():
                followed.velocity = obj.velocity
            # the largest extent seen: a partly seen object's box is smaller than the object
            followed.size = max(followed.size, float(obj.box_size.max()))
            followed.age += 1
            followed.path = [*followed.path, obj.centroid][-(self.config.path_window + 1):]
            obj.id, obj.age = followed.id, followed.age
            segment_ids[labels] = followed.id
            if self._reportable(followed):
                objects.append(obj)
                followed.reported += 1
                followed.confirmed |= followed.reported >= self.config.path_window
            else:
                followed.reported = 0
        self._lost += [f for f in self._followed
                       if f.missed > self.config.max_missed and f.confirmed]
        self._followed = [f for f in self._followed if f.missed <= self.config.max_missed]
        return ObjectSnapshot(stamp, dt or 0.0, sorted(objects, key=lambda o: o.id),
                              segments.astype(np.uint16, copy=False), segment_ids)

    # ------------------------------------------------------------------ internals
    def _parts_of_objects(self, stamp: float, measured: list[tuple[int, MovingObject]],
                          segments: np.ndarray, points_world: np.ndarray,
                          scene_flow: np.ndarray, confidence: np.ndarray, dt: float | None
                          ) -> list[tuple[list[int], MovingObject, _Followed | None]]:
        """(labels, object, followed object or None = new) of this frame's objects. A segment
        that matches no followed object but lies within the gate of one that another segment
        matched, moving alike, is another part of it (an object the segmentation split): the
        parts are measured together."""
        cfg = self.config
        matches = self._associate(stamp, measured)
        for j, (_, obj) in enumerate(measured):
            if matches[j] is not None:
                continue
            for k, (_, other) in enumerate(measured):
                followed = matches[k]
                if followed is None or k == j:
                    continue
                near = np.linalg.norm(obj.centroid - other.centroid) <= \
                    cfg.gate + cfg.gate_size * max(followed.size, float(other.box_size.max()))
                alike = np.linalg.norm(np.nan_to_num(obj.velocity - other.velocity)) <= max(
                    cfg.inlier_speed * 10, cfg.inlier_rel * 2 * np.linalg.norm(
                        np.nan_to_num(other.velocity)))
                if near and alike:
                    matches[j] = followed
                    break
        out: list[tuple[list[int], MovingObject, _Followed | None]] = []
        done: set[int] = set()
        for j, (label, obj) in enumerate(measured):
            followed = matches[j]
            if followed is None:
                out.append(([label], obj, None))
                continue
            if id(followed) in done:
                continue
            done.add(id(followed))
            labels = [lab for (lab, _), m in zip(measured, matches) if m is followed]
            if len(labels) > 1:
                obj = self._measure(np.isin(segments, labels), points_world, scene_flow,
                                    confidence, dt) or obj
            out.append((labels, obj, followed))
        return out

    def _associate(self, stamp: float, measured: list[tuple[int, MovingObject]]
                   ) -> list[_Followed | None]:
        """The followed object of each measured segment (None = a new one); objects left
        without a segment count a missed frame."""
        matches: list[_Followed | None] = [None] * len(measured)
        if self._followed and measured:
            cfg = self.config
            predicted = np.array([f.centroid + f.velocity * (stamp - f.stamp)
                                  for f in self._followed])
            last = np.array([f.centroid for f in self._followed])
            centroids = np.array([obj.centroid for _, obj in measured])
            # an object may also have stopped (a swing turning round, a person pausing)
            gap = np.minimum(np.linalg.norm(predicted[:, None] - centroids[None], axis=2),
                             np.linalg.norm(last[:, None] - centroids[None], axis=2))
            gate = np.array([cfg.gate + cfg.gate_size * f.size for f in self._followed])
            cost = np.where(gap <= gate[:, None], gap, 1e6)
            for i, j in zip(*linear_sum_assignment(cost)):
                if cost[i, j] < 1e6:
                    matches[j] = self._followed[i]
        for followed in self._followed:
            if not any(m is followed for m in matches):
                followed.missed += 1
                followed.reported = 0
        return matches

    def _measure(self, mask: np.ndarray, points_world: np.ndarray, scene_flow: np.ndarray,
                 confidence: np.ndarray, dt: float | None) -> MovingObject | None:
        """The object a segment shows (id unset), or None when it is too small."""
        cfg = self.config
        points = points_world[mask].astype(np.float64)
        flow = scene_flow[mask].astype(np.float64)
        conf = confidence[mask]
        ok = finite_rows(points)
        if ok.sum() < max(cfg.min_points, cfg.min_share * mask.size):
            return None
        points, flow, conf = points[ok], flow[ok], conf[ok]
        if len(points) > cfg.fit_points:  # evenly spread over the segment's pixels
            pick = np.linspace(0, len(points) - 1, cfg.fit_points).astype(int)
            points, flow, conf = points[pick], flow[pick], conf[pick]
        centroid = points.mean(axis=0)
        center, rotation, size = _oriented_box(points)
        motion = np.eye(4)
        velocity = angular = np.full(3, np.nan)
        agree = 0.0
        known = finite_rows(flow)
        if dt is not None and dt > 0 and known.sum() >= 3:
            before = points[known] - flow[known] * dt
            _, R, t = umeyama(before, points[known], with_scale=False)
            motion = make_pose(R, t)
            velocity = (centroid - transform_points(invert_pose(motion), centroid[None])[0]) / dt
            angular = Rotation.from_matrix(R).as_rotvec() / dt
            rigid = (points[known] - transform_points(invert_pose(motion), points[known])) / dt
            tol = max(cfg.inlier_speed, cfg.inlier_rel * float(np.linalg.norm(velocity)))
            agree = float(np.mean(np.linalg.norm(rigid - flow[known], axis=1) < tol)) \
                * known.mean()
        return MovingObject(id=0, num_points=int(ok.sum()), centroid=centroid,
                            box_center=center, box_rotation=rotation, box_size=size,
                            velocity=velocity, angular_velocity=angular, motion=motion,
                            confidence=float(np.clip(conf.mean() * agree, 0.0, 1.0)), age=0)


def _oriented_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, 3x3 axes as columns with det +1, full lengths) of the points' box along their
    principal axes, from the 2nd to the 98th percentile along each. Points more than 3 times
    the median distance from the median point are left out first: a segment may take in a few
    pixels of the surface behind its object (a metre away), which would stretch the box (by
    1.8 m from 3 % of a segment's points, seen on the node test's clip)."""
    spread = np.linalg.norm(points - np.median(points, axis=0), axis=1)
    near = spread <= 3.0 * np.median(spread)
    if near.sum() >= 3:
        points = points[near]
    mean = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
    axes = vt.T
    if np.linalg.det(axes) < 0:
        axes[:, 2] *= -1.0
    local = (points - mean) @ axes
    lo, hi = np.percentile(local, [2.0, 98.0], axis=0)
    return mean + axes @ ((lo + hi) / 2.0), axes, hi - lo


def depth_jump(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether depths ``a`` and ``b`` (metres) differ by a jump: by more than 5 % of the
    nearer, at least 5 cm (two surfaces, not one)."""
    return np.abs(a - b) > np.maximum(0.05, 0.05 * np.minimum(a, b))


def depth_edges(depth: np.ndarray) -> np.ndarray:
    """H x W bool: pixels next to a `depth_jump` (NaN = no depth) above, below, left or right
    (one compiled pass, `depth_jump`'s arithmetic)."""
    z = nan_to_zero(depth)
    return _depth_edges(z, z.dtype.type(0.05))


@numba.njit(cache=True, nogil=True)
def _depth_edges(z: np.ndarray, five_percent: float) -> np.ndarray:
    """`depth_edges` of a zero-filled depth map; ``five_percent``: 0.05 in its float type
    (the 5 cm floor and the 5 % share)."""
    h, w = z.shape
    edges = np.zeros((h, w), np.bool_)
    for v in range(h):
        for u in range(w):
            for dv, du in ((1, 0), (0, 1)):
                if v + dv >= h or u + du >= w:
                    continue
                a, b = z[v, u], z[v + dv, u + du]
                if abs(a - b) > max(five_percent, five_percent * min(a, b)):
                    edges[v, u] = edges[v + dv, u + du] = True
    return edges


def label_moving_segments(dynamic_mask: np.ndarray, depth: np.ndarray, min_pixels: int,
                          max_segments: int = 255, edges: np.ndarray | None = None
                          ) -> np.ndarray:
    """H x W uint16 segments of a dynamic mask: its connected parts split at depth jumps
    (objects that touch in the image but not in depth are separate), the `max_segments`
    largest of at least `min_pixels` pixels, numbered from 1 by size; 0 = none. For backends
    without a segmentation of their own. ``edges``: `depth_edges` of ``depth`` when the
    caller has it already."""
    if edges is None:
        edges = depth_edges(depth)
    ok = dynamic_mask & ~edges & np.isfinite(depth) & (depth > 0)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ok.astype(np.uint8),
                                                               connectivity=8)
    area = stats[1:, cv2.CC_STAT_AREA]
    order = [k + 1 for k in np.argsort(-area) if area[k] >= min_pixels][:max_segments]
    relabel = np.zeros(count, np.uint16)
    relabel[order] = np.arange(1, len(order) + 1, dtype=np.uint16)
    return relabel[labels]


def rigid_scene_flow(points_world: np.ndarray, segments: np.ndarray, motions: np.ndarray,
                     dt: float, dynamic_mask: np.ndarray) -> np.ndarray:
    """H x W x 3 float32 world velocities (units/s) of a frame whose segment k moved rigidly by
    ``motions[k]`` (4x4, world, since ``dt`` seconds ago; NaN = unknown): on each segment the
    velocity of that motion at each point, 0 on static pixels, NaN on moving pixels with no
    known motion and where there is no geometry."""
    flow = _unknown_on_moving(np.ascontiguousarray(dynamic_mask, bool),
                              np.ascontiguousarray(segments))
    for k in range(1, len(motions)):
        M = motions[k]
        m = segments == k
        if not m.any() or not np.isfinite(M).all():
            continue
        X = points_world[m].astype(np.float64)
        flow[m] = (X - transform_points(invert_pose(M), X)) / dt
    _unknown_without_geometry(flow, np.ascontiguousarray(points_world))
    return flow


@numba.njit(cache=True, nogil=True)
def _unknown_on_moving(dynamic_mask: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """H x W x 3 float32 velocities: 0, NaN on moving pixels (the mask or a segment)."""
    h, w = dynamic_mask.shape
    flow = np.zeros((h, w, 3), np.float32)
    for v in range(h):
        for u in range(w):
            if dynamic_mask[v, u] or segments[v, u] > 0:
                flow[v, u, 0] = flow[v, u, 1] = flow[v, u, 2] = np.nan
    return flow


@numba.njit(cache=True, nogil=True)
def _unknown_without_geometry(flow: np.ndarray, points: np.ndarray) -> None:
    """NaN velocities where a point is not finite (H x W x 3 each, in place)."""
    for v in range(points.shape[0]):
        for u in range(points.shape[1]):
            if not (np.isfinite(points[v, u, 0]) and np.isfinite(points[v, u, 1])
                    and np.isfinite(points[v, u, 2])):
                flow[v, u, 0] = flow[v, u, 1] = flow[v, u, 2] = np.nan
