"""Scores of moving-object outputs (motion mask, scene flow, objects) against a synthetic clip's
ground truth: the figures of issue 15 (docs/measurements.md, "Moving objects").

Per frame (frames before ``warmup`` are skipped: a backend needs two earlier frames to see
motion) the caller gives the object id of each pixel, the world velocity of each pixel and
the published objects (id, world centroid, world velocity), all in the core's world (the
first camera, which is the clip's world) at the clip's resolution.

- mask IoU: of the pixels with an object id against the truly moving pixels, per frame, then
  averaged;
- scene flow: relative error |v - v_true| / |v_true| of moving pixels that have a velocity
  (median), and the speed of static pixels (median and 99th percentile);
- objects: each truly moving object seen with at least ``min_pixels`` pixels is matched to the
  id that covers most of its pixels (at least a third of them); its velocity error is that
  object's centroid velocity against the true velocity of the point at the same centroid,
  relative to the true speed (median over frames, per object); the share of its frames it is
  matched on (mean and lowest over objects); for objects matched on at least half of their
  frames, its id is stable on the frames where the id is its most frequent one (share of the
  frames it is seen, unmatched frames count against it), and its id consistency is the share
  of the frames it is matched on with that id; the mask's id stability is the same share for
  the id covering most of the object in the motion mask (reported as an object or not); a
  false object is a published one
  whose pixels are mostly static (share of published objects, and share of frames with one).

`add_engine_frame` scores one frame of a `StreamingEngine` (`score_objects` plays a whole clip;
`fourd eval` scores synthetic clips alongside depth and tracking); for a backend whose output is
up to scale (monocular), each frame's velocities and centroids are first brought to metres by
the ratio of the true to the predicted median depth of that frame.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np

from fourd_ros.core.data.synthetic import SyntheticClip
from fourd_ros.core.engine.engine import StreamingEngine
from fourd_ros.core.engine.objects import ObjectSnapshot
from fourd_ros.core.types import FrameResult


@dataclass
class PublishedObject:
    """What the scorer needs of a published object (core world frame)."""

    id: int
    centroid: np.ndarray
    velocity: np.ndarray


@dataclass
class MovingObjectScorer:
    """Accumulates per-frame outputs of one clip (see the module docstring)."""

    clip: SyntheticClip
    warmup: int = 2
    min_pixels: int = 100
    _iou: list[float] = field(default_factory=list)
    _flow_rel: list[np.ndarray] = field(default_factory=list)
    _static_speed: list[np.ndarray] = field(default_factory=list)
    _ids: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    _mask_ids: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    _vel_rel: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    _false: int = 0
    _published: int = 0
    _frames: int = 0
    _frames_with_false: int = 0

    def add(self, i: int, id_mask: np.ndarray, scene_flow: np.ndarray,
            objects: list[PublishedObject]) -> None:
        """Frame ``i``'s outputs: H x W object ids (0 = static), H x W x 3 world velocities
        (m/s, NaN = unknown), the published objects."""
        if i < self.warmup:
            return
        clip = self.clip
        truth = clip.dynamic_mask(i)
        mask = id_mask > 0
        if truth.any():
            self._iou.append(float((mask & truth).sum() / max((mask | truth).sum(), 1)))
        v_true = self._true_velocity(i)
        known = np.isfinite(scene_flow).all(axis=-1)
        moving = truth & mask & known
        speed = np.linalg.norm(v_true[moving], axis=1)
        fast = speed > 1e-3
        self._flow_rel.append(np.linalg.norm(scene_flow[moving] - v_true[moving], axis=1)[fast]
                              / speed[fast])
        static = ~truth & known
        self._static_speed.append(np.linalg.norm(scene_flow[static], axis=1))
        by_id = {o.id: o for o in objects}
        instance = clip.instance[i]
        self._frames += 1
        false = 0
        for obj in objects:
            own = id_mask == obj.id
            false += int(not own.any() or truth[own].mean() < 0.5)
        self._published += len(objects)
        self._false += false
        self._frames_with_false += int(false > 0)
        poses = [clip.object_poses_at(clip.stamps[i] + d) for d in (-1e-3, 0.0, 1e-3)]
        for k in np.flatnonzero(clip.moving):
            pixels = instance == k
            if pixels.sum() < self.min_pixels:
                continue
            ids = id_mask[pixels]
            counts = Counter(ids[ids > 0].tolist())
            best, covered = counts.most_common(1)[0] if counts else (0, 0)
            self._mask_ids[int(k)].append(int(best) if covered >= pixels.sum() / 3 else 0)
            if covered < pixels.sum() / 3 or best not in by_id:
                self._ids[int(k)].append(0)
                continue
            self._ids[int(k)].append(int(best))
            obj = by_id[best]
            c = np.append(np.asarray(obj.centroid, np.float64), 1.0)
            local = np.linalg.solve(poses[1][k], c)
            truth_v = (poses[2][k] @ local - poses[0][k] @ local)[:3] / 2e-3
            if np.linalg.norm(truth_v) > 1e-3:
                self._vel_rel[int(k)].append(float(
                    np.linalg.norm(np.asarray(obj.velocity) - truth_v)
                    / np.linalg.norm(truth_v)))

    def _true_velocity(self, i: int) -> np.ndarray:
        """H x W x 3 true world velocities of frame i's pixels (central difference, 1 ms)."""
        t = float(self.clip.stamps[i])
        return (self.clip.positions_at_time(i, t + 1e-3)
                - self.clip.positions_at_time(i, t - 1e-3)) / 2e-3

    def id_stabilities(self) -> dict[int, float]:
        """Per true moving object (its instance id in the clip): the share of the frames it
        is seen on where the reported id it has most often matches it (0 for an object never
        matched): issue 15's "one id per true object on >= 90 % of its frames"."""
        return {k: _stability(ids) for k, ids in self._ids.items()}

    def result(self) -> dict[str, float]:
        """The scores (NaN where there was nothing to score)."""
        rel = np.concatenate(self._flow_rel) if self._flow_rel else np.zeros(0)
        still = np.concatenate(self._static_speed) if self._static_speed else np.zeros(0)
        matched = [np.mean(np.asarray(ids) > 0) for ids in self._ids.values()]
        # id stability of the objects matched on at least half of their frames (how often an
        # object is found at all is `objects_matched_share`)
        mask_stability = [_stability(ids) for ids in self._mask_ids.values()]
        stability = [_stability(ids) for ids in self._ids.values()
                     if np.mean(np.asarray(ids) > 0) >= 0.5]
        consistency = [Counter([x for x in ids if x]).most_common(1)[0][1]
                       / max(sum(1 for x in ids if x), 1)
                       for ids in self._ids.values() if any(ids)]
        velocity = [float(np.median(v)) for v in self._vel_rel.values() if v]

        def stat(values: list | np.ndarray, fn) -> float:
            return float(fn(values)) if len(values) else float('nan')

        return {
            'mask_iou': stat(self._iou, np.mean),
            'flow_moving_rel_median': stat(rel, np.median),
            'flow_static_median_m_s': stat(still, np.median),
            'flow_static_p99_m_s': stat(still, lambda x: np.percentile(x, 99)),
            'objects_matched_share': stat(matched, np.mean),
            'objects_matched_min': stat(matched, np.min),
            'object_velocity_rel_median_worst': stat(velocity, np.max),
            'object_velocity_rel_median_mean': stat(velocity, np.mean),
            'id_stability_worst': stat(stability, np.min),
            'mask_id_stability_worst': stat(mask_stability, np.min),
            'mask_id_stability_mean': stat(mask_stability, np.mean),
            'id_consistency_worst': stat(consistency, np.min),
            'false_object_share': self._false / max(self._published, 1),
            'frames_with_false_object': self._frames_with_false / max(self._frames, 1),
        }


def _stability(ids: list[int]) -> float:
    """Share of the frames (one id per frame, 0 = unmatched) that carry the most frequent
    non-zero id."""
    counts = Counter(x for x in ids if x)
    return counts.most_common(1)[0][1] / len(ids) if counts else 0.0


def add_engine_frame(scorer: MovingObjectScorer, i: int, result: FrameResult,
                     snapshot: ObjectSnapshot) -> None:
    """Score clip frame ``i`` from an engine's `FrameResult` and its `ObjectSnapshot`.

    Outputs at another processing size are brought to the clip's pixels (nearest). Outputs up
    to scale (``FrameResult.metric`` False) are scaled by median(true depth) / median(predicted
    depth) of the frame, the usual median alignment of monocular depth."""
    ids, flow = snapshot.id_mask(), result.scene_flow
    h, w = scorer.clip.depth[i].shape
    if ids.shape != (h, w):
        ids = cv2.resize(ids, (w, h), interpolation=cv2.INTER_NEAREST)
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_NEAREST)
    scale = 1.0
    if not result.metric:
        pred = result.depth[np.isfinite(result.depth) & (result.depth > 0)]
        scale = float(np.median(scorer.clip.depth[i]) / np.median(pred)) if pred.size else 1.0
    scorer.add(i, ids, flow * np.float32(scale),
               [PublishedObject(o.id, o.centroid * scale, o.velocity * scale)
                for o in snapshot.objects])


def score_objects(engine: StreamingEngine, clip: SyntheticClip) -> MovingObjectScorer:
    """Play every frame of ``clip`` through ``engine`` (fresh, stamps as in the clip) and
    score its motion mask, scene flow and objects (`add_engine_frame`); returns the filled
    scorer."""
    scorer = MovingObjectScorer(clip)
    for i in range(len(clip)):
        result = engine.process(clip.frame(i))
        add_engine_frame(scorer, i, result, engine.object_snapshot())
    return scorer
