"""End-to-end evaluation: run a `StreamingEngine` over a sequence and score it against GT.

Metrics (definitions in ``fourd_ros.core.eval.metrics``):

- depth: AbsRel and delta<1.25 of the backend's depth against GT depth at the processing
  resolution (GT resized with nearest neighbour, as the engine resizes sensor depth); no scaling
  for metric backends, one median scale per sequence otherwise.
- camera: ATE (SE(3) alignment when metric, else Sim(3); ``ate_sim3_m`` always Sim(3)) and RPE
  between consecutive frames. GT poses are re-expressed relative to the first GT pose of the
  stream, so both trajectories live in "world = first camera" coordinates.
- 3D tracking: for pairs (i, i + gap) on a few source frames i, a grid of input pixels of frame i
  is queried while frame i + gap is the newest one (``engine.query_pixels``), and compared in the
  target camera's frame (prediction through the estimated target pose, GT through the GT pose, so
  the comparison does not depend on the world frame). GT: ``SyntheticClip.points_at`` for
  synthetic clips (visible points only, dynamic split from ``dynamic_mask``); for real RGB-D with
  GT poses (static scenes such as 7-Scenes) the point stays put in the world and is visible when
  it projects into frame j with GT depth there within ``visibility_tol_m`` of its depth.
- moving objects (synthetic clips only): the motion mask, scene flow and objects the engine
  publishes, scored per frame by ``moving_objects.MovingObjectScorer`` (``OBJECT_KEYS``, as
  ``objects_<key>``; outputs up to scale are median-scaled per frame).

Baselines, measured in the same run on the same pixels / points (``BASELINE_KEYS``):

- ``baseline_const_depth_*``: a constant depth map, fed to a second depth accumulator next to the
  backend's depth (same frames, and the backend's valid pixels only) and always median-scaled
  per sequence, i.e. the prediction is the median of the GT depth samples. A constant has no
  metric meaning, so even for a metric backend it is scored like a monocular one (pixel
  subsample); for a non-metric backend both use the very same subsample.
- ``baseline_zero_motion_*``: the backend's own query answer without its displacement
  (``QueryResult.source_positions``, the backend's source-time position of each queried pixel,
  instead of ``positions``), scored exactly like the tracking metrics (same points, GT, target
  pose and scale alignment). The gap to ``apd3d`` / ``track_epe_m`` is what the motion estimate
  adds (none where the backend predicts no motion, e.g. the oracle on a static scene).

Timing: ``fps`` = frames / (time reading frames + time in ``engine.process``); the evaluation's own
bookkeeping (GT, queries, metrics) is excluded.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fourd_ros.core.backends import factory
from fourd_ros.core.data.readers import open_sequence, timed
from fourd_ros.core.engine.cache import budget_policy
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
from fourd_ros.core.eval import metrics as M
from fourd_ros.core.eval.moving_objects import add_engine_frame, MovingObjectScorer
from fourd_ros.core.geometry import (finite_rows, inside_image, invert_pose, project,
                                     transform_points, unproject_pixels)
from fourd_ros.core.jsonsafe import json_safe
from fourd_ros.core.types import Frame, GroundPlane

METRIC_KEYS = ('depth_absrel', 'depth_delta125', 'ate_m', 'ate_sim3_m', 'rpe_trans_m',
               'rpe_rot_deg', 'track_epe_m', 'apd3d', 'apd3d_dynamic', 'track_median_err_m')
# moving objects on synthetic clips (`moving_objects.MovingObjectScorer`, issue 15), as
# ``objects_<key>`` in the metrics
OBJECT_KEYS = ('mask_iou', 'flow_moving_rel_median', 'flow_static_median_m_s',
               'objects_matched_share', 'object_velocity_rel_median_worst',
               'id_stability_worst', 'frames_with_false_object')
BASELINE_KEYS = ('baseline_const_depth_absrel', 'baseline_const_depth_delta125',
                 'baseline_zero_motion_apd3d', 'baseline_zero_motion_apd3d_dynamic',
                 'baseline_zero_motion_epe_m')
NAN = float('nan')


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

@dataclass
class DepthSample:
    """One frame for the depth figure (processing resolution; depth in metres, 0/NaN invalid)."""

    name: str
    rgb: np.ndarray
    gt: np.ndarray
    pred: np.ndarray


@dataclass
class TrackSample:
    """One tracking pair for the figure (input resolution pixels, u v).

    ``gt_px`` / ``pred_px`` are the GT and predicted positions projected into the target image
    (GT intrinsics); ``err_m`` the 3D error (metres, NaN where no prediction).
    """

    source_name: str
    target_name: str
    source_rgb: np.ndarray
    target_rgb: np.ndarray
    query_px: np.ndarray
    gt_px: np.ndarray
    pred_px: np.ndarray
    visible: np.ndarray
    dynamic: np.ndarray
    err_m: np.ndarray


@dataclass
class TrailSample:
    """Track trails of the engine's persistent tracks over the last frames (processing res).

    ``history`` is a list (oldest first) of dicts id -> (u, v); ``status`` id -> TrackStatus at
    the last frame.
    """

    name: str
    rgb: np.ndarray
    history: list[dict[int, tuple[float, float]]]
    status: dict[int, int]


@dataclass
class EvalReport:
    """Outcome of `evaluate`: the metric dict plus the material for the plots.

    Attributes:
        metrics: ``backend``, ``metric``, ``frames``, ``fps``, the ``METRIC_KEYS`` and the
            ``BASELINE_KEYS`` (NaN when the sequence lacks the GT a metric needs), on synthetic
            clips ``objects_<key>`` for the ``OBJECT_KEYS``, plus counts
            and timings.
        stamps: F stamps (s) of frames with a GT pose.
        poses_est: F x 4 x 4 estimated camera-to-world poses (world = first camera).
        poses_gt: F x 4 x 4 GT camera-to-world poses re-expressed relative to the first GT pose.
        depth_samples, track_samples, trail: plot material (may be empty / None).
    """

    metrics: dict[str, Any]
    stamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    poses_est: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    poses_gt: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    depth_samples: list[DepthSample] = field(default_factory=list)
    track_samples: list[TrackSample] = field(default_factory=list)
    trail: TrailSample | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Metrics with NaN/inf as None (strict JSON)."""
        return json_safe(self.metrics)


# ----------------------------------------------------------------------------------------------
# Accumulators
# ----------------------------------------------------------------------------------------------

class DepthAccumulator:
    """Depth errors over a sequence: exact sums when metric; a pixel subsample for median scaling.

    Monocular AbsRel needs one median scale over the whole sequence before the errors, so it keeps
    up to ``per_frame`` random valid pixels per frame (fixed seed) instead of whole maps.
    """

    def __init__(self, metric: bool, per_frame: int = 20000) -> None:
        self.metric = metric
        self.per_frame = per_frame
        self.frames = 0
        self._n = 0
        self._absrel = 0.0
        self._delta = 0
        self._pred: list[np.ndarray] = []
        self._gt: list[np.ndarray] = []
        self._rng = np.random.default_rng(0)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        p = pred.astype(np.float64)
        g = gt.astype(np.float64)
        ok = np.isfinite(p) & np.isfinite(g) & (p > 0) & (g > 0)
        if not ok.any():
            return
        self.frames += 1
        p, g = p[ok], g[ok]
        if self.metric:
            self._n += p.size
            self._absrel += float(np.sum(np.abs(p - g) / g))
            self._delta += int(np.count_nonzero(np.maximum(p / g, g / p) < 1.25))
        else:
            if p.size > self.per_frame:
                idx = self._rng.choice(p.size, self.per_frame, replace=False)
                p, g = p[idx], g[idx]
            self._pred.append(p.astype(np.float32))
            self._gt.append(g.astype(np.float32))

    def result(self) -> dict[str, float]:
        if self.metric:
            if not self._n:
                return {'absrel': NAN, 'delta125': NAN, 'scale': NAN}
            return {'absrel': self._absrel / self._n, 'delta125': self._delta / self._n,
                    'scale': 1.0}
        if not self._pred:
            return {'absrel': NAN, 'delta125': NAN, 'scale': NAN}
        return M.depth_metrics(np.concatenate(self._pred), np.concatenate(self._gt),
                               align='median')


@dataclass
class _PendingSource:
    """What tracking needs of a source frame until its target frame arrives."""

    index: int
    stamp: float
    name: str
    pixels: np.ndarray            # N x 2 input-resolution pixels (integers)
    world_gt: np.ndarray | None   # N x 3 GT positions at the source time (real RGB-D), world
    rgb: np.ndarray


def query_grid(width: int, height: int, cols: int = 24) -> np.ndarray:
    """N x 2 integer pixel grid (u, v) covering the image with a margin of half a cell."""
    step = max(1, int(round(width / cols)))
    u = np.arange(step // 2, width, step)
    v = np.arange(step // 2, height, step)
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu.ravel(), vv.ravel()], axis=1).astype(np.float64)


def _pick(n: int | None, count: int, hi_exclusive_margin: int = 0) -> set[int]:
    """Up to `count` evenly spaced frame indices in [0, n - margin)."""
    if n is None:
        return set(range(0, 100000, max(1, 3 * max(hi_exclusive_margin, 1))))
    hi = n - hi_exclusive_margin
    if hi <= 0 or count <= 0:
        return set()
    return {int(round(x)) for x in np.linspace(0, hi - 1, min(count, hi))}


# ----------------------------------------------------------------------------------------------
# Main entry point
# ----------------------------------------------------------------------------------------------

def evaluate(backend_name: str, source: str | Path, *, width: int = 320,
             max_frames: int | None = None, depth_every: int = 1, track_gap: int = 10,
             track_pairs: int = 8, grid_cols: int = 24, cache_mb: float | None = None,
             cache_device_mb: float | None = None,
             visibility_tol_m: float = 0.03, progress: bool = True,
             plot_samples: int = 4, device: str = 'auto',
             checkpoint: str | None = None, metric_depth: bool = False,
             ground: GroundPlane | None = None) -> EvalReport:
    """Run one backend over a sequence and score depth, camera poses and 3D tracking.

    Args:
        backend_name: 'oracle' (GT replay, tests the pipeline; always at native resolution),
            'rgbd', 'learned' or 'auto' (rgbd when the sequence has depth, else learned).
        source: sequence path (any layout ``open_sequence`` reads).
        width: processing width in pixels (0 = input resolution); ignored for 'oracle'.
        max_frames: stop after this many frames (None/0 = all).
        depth_every: score depth on every k-th frame.
        track_gap: frame gap of the tracking pairs (i, i + gap).
        track_pairs: number of source frames i (evenly spaced over the sequence).
        grid_cols: query grid columns (rows follow the aspect ratio).
        cache_mb, cache_device_mb: latent cache budgets in host memory and on each
            accelerator, MiB (None = engine default; the host's for the devices).
        visibility_tol_m: GT visibility depth tolerance on real RGB-D data (metres).
        progress: show a progress bar on a terminal.
        plot_samples: number of depth / tracking samples kept for the plots.
        device, checkpoint: inference device and model checkpoint of the learned backend.
        metric_depth: the learned backend takes metres from the sequence's depth (an RGB-D
            camera; metric from the first frame, so scored like a metric backend). Otherwise
            the depth is ground truth only.
        ground: a ground robot's floor (camera height and up vector) given with every frame
            (the learned backend then turns metric; scored up to scale like any monocular
            stream, and its metric frames without alignment: ``depth_absrel_once_metric``).

    Raises:
        DatasetError, InputError, ValueError: bad input data or options.
    """
    reader = open_sequence(source, max_frames=max_frames or None)
    backend_name = factory.resolve_backend(backend_name, reader.has_depth)
    if metric_depth:
        factory.check_metric_depth(backend_name, reader.has_depth)
    backend = factory.make_backend(backend_name, device=device, checkpoint=checkpoint,
                                   sequence=reader, metric_depth=metric_depth)
    cfg = EngineConfig(width=0 if backend_name == 'oracle' else int(width))
    cfg.cache = budget_policy(cache_mb, cache_device_mb)
    engine = StreamingEngine(backend, cfg)
    clip = getattr(reader, 'clip', None)
    objects = MovingObjectScorer(clip) if clip is not None else None
    n = reader.length
    sources = _pick(n, track_pairs, track_gap)
    depth_pick = sorted(i for i in range(0, n or 0, max(1, depth_every)))
    depth_plot = {depth_pick[int(round(x))] for x in
                  np.linspace(0, len(depth_pick) - 1, min(plot_samples, len(depth_pick)))} \
        if depth_pick else set()

    # metric from the first frame on (a monocular stream that turns metric on the way, a
    # ground robot's, is scored up to scale like any monocular one: one unit over the stream)
    metric = engine.metric
    depth_acc = DepthAccumulator(metric)
    # constant-depth baseline: always median-scaled (a constant depth has no metric meaning)
    const_acc = DepthAccumulator(metric=False)
    # ... and its frames once metric, scored without any alignment
    late_metric_acc = DepthAccumulator(metric=True)
    metric_from = -1
    poses: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}   # index -> stamp, est, gt
    est_pose: dict[int, np.ndarray] = {}
    pending: dict[int, _PendingSource] = {}
    names: dict[int, str] = {}
    tr = {'pred': [], 'pred_zero': [], 'gt': [], 'z': [], 'vis': [], 'inview': [], 'dyn': [],
          'conf': [], 'focal': []}
    report = EvalReport(metrics={})
    trail_hist: deque[dict[int, tuple[float, float]]] = deque(maxlen=15)
    latencies: list[float] = []
    T_first_inv: np.ndarray | None = None
    resets = 0
    t_io = 0.0
    last: tuple[Frame, Any] | None = None

    bar = progress_bar(n, f'eval {backend_name}', progress)
    i = -1  # stays -1 for an empty sequence
    try:
        for i, (frame, t_read) in enumerate(timed(reader)):
            if ground is not None:
                frame = replace(frame, ground=ground)
            t1 = time.perf_counter()
            result = engine.process(frame)
            t_proc = time.perf_counter() - t1
            t_io += t_read + t_proc
            latencies.append(t_proc)
            resets += bool(engine.last_step.reset_reason)
            if result.metric and not metric and metric_from < 0:
                metric_from = i
            names[i] = frame.name or str(i)
            est_pose[i] = result.T_wc
            T_gt = _valid_pose(frame.T_wc_gt)
            if T_gt is not None and T_first_inv is None:
                T_first_inv = invert_pose(T_gt)
            T_gt_w = T_first_inv @ T_gt if T_gt is not None else None
            if T_gt_w is not None:
                poses[i] = (frame.stamp, result.T_wc, T_gt_w)
            # depth
            if frame.depth is not None and i % max(1, depth_every) == 0:
                gt = _resize_nearest(frame.depth, result.depth.shape)
                depth_acc.add(result.depth, gt)
                const_acc.add(constant_depth_like(result.depth), gt)
                if result.metric and not metric:
                    late_metric_acc.add(result.depth, gt)
                if i in depth_plot:
                    report.depth_samples.append(
                        DepthSample(names[i], result.colors.copy(), gt.copy(),
                                    result.depth.copy()))
            # tracking: register sources, answer the pair whose target is this frame
            if i in sources and frame.K is not None and T_gt_w is not None and (
                    clip is not None or frame.depth is not None):
                pending[i] = _make_source(i, frame, T_gt_w, clip is not None, grid_cols)
            src = pending.pop(i - track_gap, None)
            if src is not None and frame.K is not None and T_gt_w is not None:
                _score_pair(engine, src, i, frame, result.T_wc, T_gt_w, T_first_inv, clip,
                            visibility_tol_m, tr, report, plot_samples, names[i])
            if objects is not None:
                add_engine_frame(objects, i, result, engine.object_snapshot())
            snap = engine.track_snapshot()
            trail_hist.append({int(k): (float(p[0]), float(p[1]))
                               for k, p in zip(snap.ids, snap.pixels)})
            last = (frame, result)
            bar.update(1)
    finally:
        bar.close()

    frames = i + 1
    if last is not None:
        snap = engine.track_snapshot()
        report.trail = TrailSample(names[frames - 1], last[1].colors.copy(), list(trail_hist),
                                   {int(k): int(s) for k, s in zip(snap.ids, snap.status)})
    if metric_from == 0:
        # metres from the very first frame (the learned backend with a depth sensor): scored
        # as a metric backend, without alignment
        metric, depth_acc, metric_from = True, late_metric_acc, -1
    metrics: dict[str, Any] = {'backend': backend_name, 'metric': metric,
                               'frames': frames,
                               'fps': frames / t_io if t_io > 0 else NAN}
    d = depth_acc.result()
    metrics['depth_absrel'] = d['absrel']
    if metric_from >= 0:
        metrics['metric_from_frame'] = metric_from
        metrics['depth_absrel_once_metric'] = late_metric_acc.result()['absrel']
    metrics['depth_delta125'] = d['delta125']
    c = const_acc.result()
    metrics['baseline_const_depth_absrel'] = c['absrel']
    metrics['baseline_const_depth_delta125'] = c['delta125']
    metrics.update(_camera_metrics(poses, metric, report))
    metrics.update(_track_metrics(tr, metric))
    if objects is not None:
        metrics.update({f'objects_{k}': v for k, v in objects.result().items()
                        if k in OBJECT_KEYS})
    lat = np.asarray(latencies) * 1e3 if latencies else np.array([NAN])
    proc = engine.processing_size or (0, 0)
    metrics.update({
        'depth_frames': depth_acc.frames, 'pose_frames': len(poses),
        'latency_ms_p50': float(np.median(lat)), 'latency_ms_p95': float(np.percentile(lat, 95)),
        'processing_size': f'{proc[0]}x{proc[1]}', 'cache_mb': engine.cache.megabytes,
        'stream_resets': resets, 'input': str(source), 'layout': reader.layout,
        'has_depth': bool(reader.has_depth),
    })
    report.metrics = metrics
    return report


# ----------------------------------------------------------------------------------------------
# Internals
# ----------------------------------------------------------------------------------------------

class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr when it is a terminal (disable=None), else a no-op."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit='frame', disable=None, dynamic_ncols=True)


def _valid_pose(T: np.ndarray | None) -> np.ndarray | None:
    if T is None:
        return None
    T = np.asarray(T, np.float64)
    return T if T.shape == (4, 4) and np.all(np.isfinite(T)) else None


def _resize_nearest(depth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    depth = depth.astype(np.float32, copy=False)
    if depth.shape == shape:
        return depth
    return cv2.resize(depth, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def constant_depth_like(depth: np.ndarray) -> np.ndarray:
    """1.0 where ``depth`` is a valid depth (finite, > 0), NaN elsewhere (constant baseline)."""
    d = depth.astype(np.float64)
    return np.where(np.isfinite(d) & (d > 0), 1.0, np.nan)


def _make_source(i: int, frame: Frame, T_gt_w: np.ndarray, synthetic: bool,
                 grid_cols: int) -> _PendingSource:
    h, w = frame.rgb.shape[:2]
    px = query_grid(w, h, grid_cols)
    world = None
    if not synthetic:
        ui, vi = px[:, 0].astype(int), px[:, 1].astype(int)
        z = frame.depth[vi, ui].astype(np.float64)
        z = np.where(np.isfinite(z) & (z > 0), z, np.nan)
        world = transform_points(T_gt_w, unproject_pixels(px, z, frame.K))
    return _PendingSource(i, frame.stamp, frame.name or str(i), px, world, frame.rgb.copy())


def _score_pair(engine: StreamingEngine, src: _PendingSource, j: int, frame: Frame,
                T_est_j: np.ndarray, T_gt_j: np.ndarray, T_first_inv: np.ndarray, clip: Any,
                tol: float, tr: dict, report: EvalReport, plot_samples: int,
                target_name: str) -> None:
    """Query the source grid at target j and append predictions and GT (target camera frame).

    ``tr['pred_zero']`` gets the zero-motion baseline: the backend's source-time positions of the
    queried pixels, seen from the same estimated target pose.
    """
    px = src.pixels
    ui, vi = px[:, 0].astype(int), px[:, 1].astype(int)
    K = np.asarray(frame.K, np.float64)
    h, w = frame.rgb.shape[:2]
    if clip is not None:
        P, vis_map = clip.points_at(src.index, j)
        world_gt = transform_points(T_first_inv, P[vi, ui])
        vis = vis_map[vi, ui]
        dyn = clip.dynamic_mask(src.index)[vi, ui]
    else:
        world_gt = src.world_gt
        dyn = np.zeros(len(px), bool)
        vis = None
    cam_gt = transform_points(invert_pose(T_gt_j), world_gt)
    gt_px, z = project(cam_gt, K)
    if vis is None:
        inside = finite_rows(gt_px) & (z > 0) & inside_image(gt_px, w, h)
        uj = np.clip(np.rint(np.nan_to_num(gt_px[:, 0])), 0, w - 1).astype(int)
        vj = np.clip(np.rint(np.nan_to_num(gt_px[:, 1])), 0, h - 1).astype(int)
        dj = frame.depth[vj, uj].astype(np.float64)
        vis = inside & np.isfinite(dj) & (dj > 0) & (np.abs(dj - z) <= tol)
    q = engine.query_pixels(src.stamp, px, frame.stamp)
    T_jw = invert_pose(T_est_j)
    cam_pred = transform_points(T_jw, q.positions.astype(np.float64))
    tr['pred'].append(cam_pred)
    tr['pred_zero'].append(transform_points(T_jw, q.source_positions.astype(np.float64)))
    tr['gt'].append(cam_gt)
    tr['z'].append(z)
    tr['vis'].append(vis)
    tr['conf'].append(q.confidence.astype(np.float64))
    tr['inview'].append(finite_rows(gt_px) & (z > 0) & inside_image(gt_px, w, h))
    tr['dyn'].append(dyn)
    tr['focal'].append(float(K[0, 0]))
    if len(report.track_samples) < plot_samples:
        pred_px, _ = project(cam_pred, K)
        err = np.linalg.norm(cam_pred - cam_gt, axis=1)
        report.track_samples.append(TrackSample(
            src.name, target_name, src.rgb, frame.rgb.copy(), px.copy(), gt_px, pred_px,
            vis.copy(), dyn.copy(), err))


def _camera_metrics(poses: dict[int, tuple[float, np.ndarray, np.ndarray]], metric: bool,
                    report: EvalReport) -> dict[str, float]:
    out = {'ate_m': NAN, 'ate_sim3_m': NAN, 'rpe_trans_m': NAN, 'rpe_rot_deg': NAN}
    if not poses:
        return out
    keys = sorted(poses)
    report.stamps = np.array([poses[k][0] for k in keys])
    report.poses_est = np.stack([poses[k][1] for k in keys])
    report.poses_gt = np.stack([poses[k][2] for k in keys])
    if len(keys) < 3:
        return out
    try:
        sim3 = M.ate(report.poses_est, report.poses_gt, align='sim3')
    except ValueError:  # degenerate (e.g. a static camera): no scale can be estimated
        sim3 = {'ate_m': NAN, 'scale': 1.0}
    out['ate_sim3_m'] = sim3['ate_m']
    if metric:
        out['ate_m'] = M.ate(report.poses_est, report.poses_gt, align='se3')['ate_m']
        r = M.rpe(report.poses_est, report.poses_gt, delta=1)
    else:
        out['ate_m'] = sim3['ate_m']
        r = M.rpe(report.poses_est, report.poses_gt, delta=1, scale=sim3['scale'])
    out.update(r)
    return out


def _track_metrics(tr: dict, metric: bool) -> dict[str, float]:
    """Tracking metrics of ``tr['pred']`` and the zero-motion baseline of ``tr['pred_zero']``.

    Both are scored on the same points against the same GT, with the same alignment (a global
    median scale, fitted to each prediction, unless metric). Distances in GT metres.
    """
    out = {'track_epe_m': NAN, 'apd3d': NAN, 'apd3d_dynamic': NAN, 'track_median_err_m': NAN,
           'track_points': 0, 'track_points_dynamic': 0, 'track_coverage': NAN, 'track_pairs': 0,
           'baseline_zero_motion_apd3d': NAN, 'baseline_zero_motion_apd3d_dynamic': NAN,
           'baseline_zero_motion_epe_m': NAN}
    if not tr['pred']:
        return out
    pred = np.concatenate(tr['pred'])
    pred_zero = np.concatenate(tr['pred_zero'])
    gt = np.concatenate(tr['gt'])
    z = np.concatenate(tr['z'])
    vis = np.concatenate(tr['vis'])
    dyn = np.concatenate(tr['dyn'])
    focal = float(np.median(tr['focal']))
    evaluated = vis & finite_rows(gt) & np.isfinite(z) & (z > 0)
    out['track_pairs'] = len(tr['pred'])
    out['track_points'] = int(evaluated.sum())
    out['track_points_dynamic'] = int((evaluated & dyn).sum())
    if not evaluated.any():
        return out
    m = M.tracking_metrics(pred, gt, z, focal, visible=vis, dynamic=dyn,
                           scale_align=not metric)
    both = evaluated & finite_rows(pred)
    err = np.linalg.norm(m['scale'] * pred[both] - gt[both], axis=1)
    out.update({'track_epe_m': m['epe'], 'apd3d': m['apd3d'],
                'apd3d_dynamic': m['apd3d_dynamic'],
                'track_median_err_m': float(np.median(err)) if err.size else NAN,
                'track_coverage': m['coverage']})
    b = M.tracking_metrics(pred_zero, gt, z, focal, visible=vis, dynamic=dyn,
                           scale_align=not metric)
    out.update({'baseline_zero_motion_apd3d': b['apd3d'],
                'baseline_zero_motion_apd3d_dynamic': b['apd3d_dynamic'],
                'baseline_zero_motion_epe_m': b['epe']})
    # every queried point, whatever its visibility, and whether the confidence tells good
    # answers (>= 0.5) from bad ones; predictions with the visible points' scale
    conf = np.concatenate(tr['conf'])
    groups = {**_visibility_groups(dyn, np.concatenate(tr['inview']), vis),
              'confidence_high': conf >= 0.5, 'confidence_low': conf < 0.5}
    out.update(_apd3d_of_groups(m['scale'] * pred, gt, z, focal, groups))
    return out


def _apd3d_of_groups(pred: np.ndarray, gt: np.ndarray, z: np.ndarray, focal: float,
                     groups: dict[str, np.ndarray]) -> dict[str, float]:
    """``apd3d_<name>`` and ``track_points_<name>`` of each group (N bool) of the queried
    points, on already scaled predictions (points without GT are left out)."""
    ok = finite_rows(gt) & np.isfinite(z) & (z > 0)
    out: dict[str, float] = {}
    for name, where in groups.items():
        pick = ok & where
        out[f'track_points_{name}'] = int(pick.sum())
        out[f'apd3d_{name}'] = (M.tracking_metrics(pred[pick], gt[pick], z[pick], focal,
                                                   scale_align=False)['apd3d']
                                if pick.any() else NAN)
    return out


def _visibility_groups(dyn: np.ndarray, inview: np.ndarray, vis: np.ndarray
                       ) -> dict[str, np.ndarray]:
    """Static and moving points by their ground-truth visibility at the target: visible,
    hidden (in view behind something), out of view, and all of them. A static point's position
    is known from geometry and poses whatever its visibility; a hidden or out-of-view point of
    a rigid object moves with it."""
    where = {'visible': vis, 'hidden': inview & ~vis, 'out_of_view': ~inview,
             'every': np.ones_like(vis)}
    return {f'{kind}_{name}': sel & w for kind, sel in (('static', ~dyn), ('dynamic', dyn))
            for name, w in where.items()}
