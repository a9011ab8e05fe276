"""Streaming engine: one backend, a bounded latent cache, persistent tracks, moving objects
(``objects.py``: the backend's per-frame segments followed under persistent ids), motion
queries and object-motion queries.

Typical use (CoTracker-style online contract: push frames in order, ask at any time)::

    engine = StreamingEngine(RgbdBackend(), EngineConfig(width=320))
    for frame in reader:
        result = engine.process(frame)           # FrameResult at processing resolution
    answer = engine.query_pixels(stamp, [[320, 240]])   # pixels at the input resolution

Thread safety: `process` runs the backend outside the engine lock and only takes it to publish
the new cache entry and tracks, so queries from other threads wait at most for that short step.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from threadpoolctl import ThreadpoolController

from fourd_ros.core.engine.backend import Backend, BackendError, CacheEntry
from fourd_ros.core.engine.cache import CachePolicy, LatentCache
from fourd_ros.core.engine.objects import (ObjectConfig, ObjectSnapshot, ObjectTracker,
                                           object_ids_of)
from fourd_ros.core.engine.tracks import TrackConfig, TrackManager, TrackSnapshot
from fourd_ros.core.geometry import (default_intrinsics, finite_rows, invert_pose, make_pose,
                                     project, sample_bilinear, scale_intrinsics, transform_points,
                                     umeyama)
from fourd_ros.core.types import (Frame, FrameResult, ObjectMotionResult, PointStatus,
                                  QueryResult)

LOG = logging.getLogger(__name__)


class InputError(ValueError):
    """A frame the engine cannot use (bad shape/dtype, duplicate stamp, bad intrinsics)."""


class QueryError(ValueError):
    """A query the engine refuses as a whole (too many points, bad shape)."""


@dataclass
class EngineConfig:
    """Streaming engine settings.

    Attributes:
        width: processing width in pixels (height follows the input's aspect ratio, rounded to
            a multiple of 8); 0 = process at the input resolution.
        cache: latent cache retention policy and memory budget.
        tracks: track manager settings.
        objects: moving-object settings.
        max_query_points: largest number of points served by one query.
        max_trajectory: poses kept for `trajectory()` (oldest dropped first).
        uncalibrated_hfov_deg: horizontal field of view assumed when no intrinsics are given.
        blas_threads: threads of the OpenBLAS that numpy and scipy use, set for the whole
            process when an engine is built (None: left as they are). Every matrix product of
            the per-frame path is small (N x 3 by 3 x 3, 6 x N by N x 6); OpenBLAS's extra
            threads only spin between them and take a core from the rest of the frame (rgbd on
            the 2-core machine: 132 -> 77 ms of CPU and 62 -> 53 ms a frame with one).
    """

    width: int = 320
    cache: CachePolicy = field(default_factory=CachePolicy)
    tracks: TrackConfig = field(default_factory=TrackConfig)
    objects: ObjectConfig = field(default_factory=ObjectConfig)
    max_query_points: int = 100_000
    max_trajectory: int = 100_000
    uncalibrated_hfov_deg: float = 60.0
    blas_threads: int | None = 1


@dataclass
class StepInfo:
    """Bookkeeping of the last `process` call."""

    reset_reason: str = ''
    evicted: int = 0


class StreamingEngine:
    """Runs a backend over a stream of frames and answers motion queries about cached frames."""

    def __init__(self, backend: Backend, config: EngineConfig | None = None) -> None:
        self.backend = backend
        self.config = config or EngineConfig()
        if self.config.blas_threads is not None:
            ThreadpoolController().select(internal_api='openblas').limit(
                limits=self.config.blas_threads)
        self.cache = LatentCache(self.config.cache)
        self.tracks = TrackManager(self.config.tracks)
        self._snapshot = self.tracks.snapshot
        self.objects = ObjectTracker(self.config.objects)
        self._objects = ObjectSnapshot(0.0)
        # Two locks (the threading contract of `Backend`): `_stream` serialises `process` and
        # `reset`, so a reset from a service thread waits for the frame in flight instead of
        # clearing the backend under it; `_lock` guards the cache and trajectory for the short
        # look-ups of queries and is never held during a backend call, so a decoder pass (a
        # query, or the track update of `process`) never blocks another query.
        self._stream = threading.Lock()
        self._lock = threading.RLock()
        self._trajectory: deque[tuple[float, np.ndarray]] = deque(
            maxlen=self.config.max_trajectory)
        self._input_size: tuple[int, int] | None = None
        self._input_K: np.ndarray | None = None  # the stream's input intrinsics (None = none)
        self._proc_size: tuple[int, int] | None = None
        self._index = 0
        self._last_metric: bool | None = None  # the last frame's units (None: no frame yet)
        # stamp of the first frame in the current units (a query cannot span a units change)
        self._units_since: float | None = None
        self._first_stamp: float | None = None  # of the stream's first frame
        self.last_step = StepInfo()

    # ------------------------------------------------------------------ stream
    @property
    def metric(self) -> bool:
        """The outputs are metres (a monocular backend may turn metric during a stream: a
        ground robot's floor)."""
        return bool(self.backend.metric)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) of the input images of the current stream."""
        return self._input_size

    @property
    def processing_size(self) -> tuple[int, int] | None:
        """(width, height) the backend works at."""
        return self._proc_size

    def reset(self) -> None:
        """Forget the stream: cache, tracks, trajectory and the backend's state. Safe from any
        thread: waits for a frame being processed to finish."""
        with self._stream:
            self._reset()

    def _reset(self) -> None:
        self.backend.reset()  # under `_stream` only: no query lock held in a backend call
        with self._lock:
            self.cache.clear()
            self.tracks.reset()
            self._snapshot = self.tracks.snapshot
            self.objects.reset()
            self._objects = ObjectSnapshot(0.0)
            self._trajectory.clear()
            self._input_size = None
            self._input_K = None
            self._proc_size = None
            self._index = 0
            self._last_metric = None
            self._units_since = None
            self._first_stamp = None

    def close(self) -> None:
        """Drop the stream and release the backend (its model and device memory)."""
        with self._stream:
            self._reset()
            self.backend.close()

    def process(self, frame: Frame) -> FrameResult:
        """Process the next frame; returns its geometry at the processing resolution.

        A stamp older than the last one (bag loop, camera restart), an image size change or an
        intrinsics change resets the stream first (see `last_step.reset_reason`). Raises
        `InputError` for frames that cannot be used; the stream is left as it was. Frames are
        processed one at a time (a second caller waits).
        """
        with self._stream:
            return self._process(frame)

    def _process(self, frame: Frame) -> FrameResult:
        self._validate(frame)
        info = StepInfo()
        latest = self.cache.latest()
        h, w = frame.rgb.shape[:2]
        if latest is not None and frame.stamp < latest.stamp:
            info.reset_reason = (f'time went backwards ({frame.stamp:.6f} s after '
                                 f'{latest.stamp:.6f} s): stream reset')
        elif latest is not None and frame.stamp == latest.stamp:
            raise InputError(f'duplicate stamp {frame.stamp:.6f} s: frame ignored')
        elif self._input_size is not None and (w, h) != self._input_size:
            info.reset_reason = (f'image size changed from {self._input_size[0]}x'
                                 f'{self._input_size[1]} to {w}x{h}: stream reset')
        elif latest is not None and not _same_intrinsics(frame.K, self._input_K):
            # e.g. the first frames came before the first CameraInfo: the cached geometry was
            # built with other intrinsics and cannot be matched against the new frames
            info.reset_reason = 'camera intrinsics changed: stream reset'
        if info.reset_reason:
            LOG.warning(info.reset_reason)
            self._reset()
        self._input_K = None if frame.K is None else np.array(frame.K, np.float64)
        if self._input_size is None:
            self._input_size = (w, h)
            self._proc_size = self.backend.processing_size(w, h, int(self.config.width))
        proc = self._resize(frame)
        with self._lock:
            context = self.cache.entries()
        result, latent = self.backend.process(proc, context)
        segments = np.asarray(result.segments).astype(np.uint16, copy=False)
        entry = CacheEntry(stamp=frame.stamp, index=self._index, T_wc=result.T_wc, K=result.K,
                           latent=latent, points_world=result.points_world,
                           dynamic_mask=result.dynamic_mask,
                           nbytes_by_device=latent_nbytes_by_device(
                               [latent, result.points_world, result.dynamic_mask, segments]),
                           keyframe=bool(result.extras.get('keyframe', self._index == 0)),
                           segments=segments)
        if too_big := self.cache.oversize(entry):
            # the budgets are hard: a frame that cannot be cached is refused, with the fix
            raise InputError(
                f'one frame at {self._proc_size[0]}x{self._proc_size[1]} needs more cache than '
                f'the budget allows ({too_big}): raise the budget (cache_budget_mb, or '
                'cache_device_budget_mb on a GPU) or, for the rgbd backend, lower the '
                'processing width (processing_width)')
        prev_metric = self._last_metric
        self._last_metric = result.metric
        units_changed = prev_metric is not None and result.metric != prev_metric
        if units_changed:
            # a monocular stream that has just turned metric (a ground robot's floor): the
            # tracks' and objects' positions and velocities are in the old units; they start
            # again, with new ids
            LOG.info('the backend turned metric: tracks and moving objects start again')
            self.objects.restart()
            self.tracks.restart()
        objects = self.objects.step(frame.stamp, result.points_world, segments,
                                    result.scene_flow, result.confidence)
        entry.segment_ids = objects.segment_ids
        with self._lock:
            self._objects = objects
            prev = self.cache.latest()
            info.evicted = len(self.cache.add(entry))
            if units_changed:
                # the path so far is in the old units: it starts again (like the map cloud)
                self._units_since = frame.stamp
                self._trajectory.clear()
            self._trajectory.append((frame.stamp, result.T_wc.copy()))
            if self._first_stamp is None:
                self._first_stamp = frame.stamp
            self._index += 1
        # outside `_lock`: the tracks decode motion (a model pass for the learned backend);
        # only this thread changes the cache (under `_stream`), so `prev` and `entry` stay valid;
        # they are consecutive frames, so there is nothing to chain through
        try:
            snapshot = self.tracks.step(None if units_changed else prev, entry,
                                        lambda a, b, px: self.backend.motion(a, b, px, []),
                                        result.confidence)
        except BackendError as exc:
            # the frame is cached and its pose is good; only the tracks could not be advanced
            # (e.g. device out of memory): they start again from this frame
            LOG.error('tracks restarted: %s', exc)
            self.tracks.reset()
            snapshot = self.tracks.step(None, entry, lambda a, b, px: None, result.confidence)
        with self._lock:
            self._snapshot = snapshot
        self.last_step = info
        return result

    # ------------------------------------------------------------------ outputs
    def track_snapshot(self) -> TrackSnapshot:
        """Tracks at the latest frame (a copy, safe to use from any thread)."""
        with self._lock:
            return self._snapshot

    def object_snapshot(self) -> ObjectSnapshot:
        """Moving objects at the latest frame (safe to use from any thread; do not modify)."""
        with self._lock:
            return self._objects

    def trajectory(self, start: float | None = None,
                   end: float | None = None) -> list[tuple[float, np.ndarray]]:
        """(stamp, T_wc) of processed frames with start <= stamp <= end (None = open), in the
        current units: when a monocular stream turns metric the path starts again."""
        with self._lock:
            return [(s, T) for s, T in self._trajectory
                    if (start is None or s >= start) and (end is None or s <= end)]

    def cached_pose(self, stamp: float) -> np.ndarray | None:
        """Camera-to-world pose of a cached frame (None when not cached); thread-safe."""
        with self._lock:
            entry = self.cache.get(stamp)
            return None if entry is None else entry.T_wc.copy()

    # ------------------------------------------------------------------ queries
    def query_pixels(self, source_stamp: float, pixels: np.ndarray,
                     target_stamp: float | None = None) -> QueryResult:
        """Where are pixels (N x 2, u v at the INPUT resolution) of a past frame at the target?

        `target_stamp` None = latest processed frame. Per-point problems are reported in
        `QueryResult.status`; only a malformed or oversized request raises `QueryError`.
        """
        pixels = self._check_query(pixels, 2)
        n = len(pixels)
        with self._lock:
            source, target, via, message = self._resolve(source_stamp, target_stamp)
            proc_size, input_size = self._proc_size, self._input_size
        result = _empty_result(source_stamp, target, n, message)
        if source is None or target is None:
            return result
        sx = proc_size[0] / input_size[0]
        sy = proc_size[1] / input_size[1]
        proc_px = np.stack([(pixels[:, 0] + 0.5) * sx - 0.5, (pixels[:, 1] + 0.5) * sy - 0.5],
                           axis=1).astype(np.float32)
        h, w = source.dynamic_mask.shape
        inside = (finite_rows(proc_px) & (proc_px[:, 0] >= -0.5)
                  & (proc_px[:, 0] <= w - 0.5) & (proc_px[:, 1] >= -0.5)
                  & (proc_px[:, 1] <= h - 0.5))
        src_pos = np.full((n, 3), np.nan, np.float32)
        src_pos[inside] = sample_bilinear(source.points_world, proc_px[inside])
        ok = inside & finite_rows(src_pos)
        return self._finish(result, source, target, via, proc_px, src_pos, ok)

    def query_points(self, source_stamp: float, points_world: np.ndarray,
                     target_stamp: float | None = None) -> QueryResult:
        """Where are 3D points (N x 3, world frame) observed at `source_stamp` at the target?

        Each point is projected into the source image to find the surface it belongs to; its
        displacement is that surface point's displacement. Points outside the source view or
        behind the camera are INVALID.
        """
        points_world = self._check_query(points_world, 3)
        n = len(points_world)
        with self._lock:
            source, target, via, message = self._resolve(source_stamp, target_stamp)
        result = _empty_result(source_stamp, target, n, message)
        if source is None or target is None:
            return result
        cam = transform_points(invert_pose(source.T_wc), points_world.astype(np.float64))
        px, z = project(cam, source.K)
        h, w = source.dynamic_mask.shape
        ok = (finite_rows(px) & (z > 0) & (px[:, 0] >= -0.5) & (px[:, 0] <= w - 0.5)
              & (px[:, 1] >= -0.5) & (px[:, 1] <= h - 0.5))
        src_pos = np.where(ok[:, None], points_world, np.nan).astype(np.float32)
        return self._finish(result, source, target, via, px.astype(np.float32), src_pos, ok)

    def object_motion(self, object_id: int, source_stamp: float,
                      target_stamp: float | None = None) -> ObjectMotionResult:
        """Rigid motion (world) of moving object `object_id` from a cached source frame, where
        it must be seen, to a cached target frame (None = latest): its source pixels are moved
        by the backend's motion decoder, as a pixel query would, and a rigid transform is
        fitted to where they go (points more than 3x the median residual away refitted out).
        """
        with self._lock:
            source, target, via, message = self._resolve(source_stamp, target_stamp)
        answer = ObjectMotionResult(int(object_id), source_stamp,
                                    target.stamp if target is not None else float('nan'),
                                    np.full((4, 4), np.nan), message=message)
        if source is None or target is None:
            return answer
        if source.segments is None or source.segment_ids is None:
            vs = us = np.zeros(0, np.int64)
        else:
            vs, us = np.nonzero(object_ids_of(source.segments, source.segment_ids)
                                == np.uint64(object_id))
        if not len(vs):
            answer.message = f'object {object_id} is not seen in the source frame'
            return answer
        pick = np.linspace(0, len(vs) - 1, min(len(vs), 500)).astype(int)
        vs, us = vs[pick], us[pick]
        try:
            est = self.backend.motion(source, target,
                                      np.stack([us, vs], axis=1).astype(np.float32), via)
        except BackendError as exc:
            answer.message = str(exc)
            return answer
        before = source.points_world[vs, us].astype(np.float64)
        after = est.positions.astype(np.float64)
        known = ((est.status != PointStatus.INVALID) & finite_rows(before)
                 & finite_rows(after))
        if known.sum() < 3:
            answer.message = f'no point of object {object_id} could be followed to the target'
            return answer
        A, B = before[known], after[known]
        _, R, t = umeyama(A, B, with_scale=False)
        residual = np.linalg.norm(A @ R.T + t - B, axis=1)
        inlier = residual <= 3.0 * np.median(residual) + 1e-9
        if inlier.sum() >= 3:
            _, R, t = umeyama(A[inlier], B[inlier], with_scale=False)
        answer.motion = make_pose(R, t)
        answer.num_points = int(known.sum())
        answer.confidence = float(np.mean(est.confidence[known]) * inlier.mean()
                                  * known.mean())
        return answer

    # ------------------------------------------------------------------ internals
    def _resolve(self, source_stamp: float, target_stamp: float | None):
        """Look up source/target entries (call with the lock held)."""
        latest = self.cache.latest()
        if latest is None:
            return None, None, [], 'no frame processed yet'
        target = latest if target_stamp is None else self.cache.get(target_stamp)
        source = self.cache.get(source_stamp)
        since = self._units_since
        if since is not None and target is not None \
                and (source_stamp < since) != (target.stamp < since):
            # the frames before the switch keep their positions in the old units
            return None, target, [], (
                f'source stamp {source_stamp:.6f} s and target stamp {target.stamp:.6f} s lie '
                f'on both sides of the switch to metres at {since:.6f} s (the earlier frames '
                'are up to scale): query frames from one side')
        first = latest.stamp if self._first_stamp is None else self._first_stamp
        if source is None:
            seen = first <= source_stamp <= latest.stamp
            why = 'evicted from the cache' if seen else 'never processed in this stream'
            return None, target, [], f'source stamp {source_stamp:.6f} s {why}'
        if target is None:
            return source, None, [], f'target stamp {target_stamp:.6f} s is not cached'
        return source, target, self.cache.between(source, target), ''

    def _finish(self, result: QueryResult, source: CacheEntry, target: CacheEntry,
                via: list[CacheEntry], proc_px: np.ndarray, src_pos: np.ndarray,
                ok: np.ndarray) -> QueryResult:
        n = len(ok)
        status = np.full(n, PointStatus.INVALID, np.uint8)
        try:
            est = self.backend.motion(source, target, proc_px[ok], via) if np.any(ok) else None
        except BackendError as exc:
            # the query cannot be served now (e.g. device out of memory): every point INVALID
            est, ok = None, np.zeros(n, bool)
            result.message = str(exc)
        if est is not None:
            disp = est.positions - sample_bilinear(source.points_world, proc_px[ok])
            # 3D-point queries keep their own source position and move with their surface
            pos = src_pos[ok] + np.where(np.isfinite(disp), disp, np.nan)
            result.positions[ok] = pos
            result.source_positions[ok] = src_pos[ok]
            result.displacements[ok] = pos - src_pos[ok]
            result.confidence[ok] = est.confidence
            status[ok] = est.status
        result.object_ids = source.object_ids_at(np.where(ok[:, None], proc_px, np.nan))
        result.status = status
        counts = {s.name: int(np.count_nonzero(status == s)) for s in PointStatus
                  if np.any(status == s)}
        result.message = result.message or ', '.join(f'{k}: {v}' for k, v in counts.items())
        return result

    def _check_query(self, values: np.ndarray, dims: int) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != dims:
            raise QueryError(f'query points must have shape (N, {dims}), got {arr.shape}')
        if len(arr) > self.config.max_query_points:
            raise QueryError(f'{len(arr)} query points exceed max_query_points='
                             f'{self.config.max_query_points}; split the request')
        return arr

    def _validate(self, frame: Frame) -> None:
        rgb = frame.rgb
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f'image must be H x W x 3, got shape {getattr(rgb, "shape", None)}')
        if rgb.dtype != np.uint8:
            raise InputError(f'image must be uint8, got {rgb.dtype}')
        if rgb.shape[0] < 8 or rgb.shape[1] < 8:
            raise InputError(f'image too small: {rgb.shape[1]}x{rgb.shape[0]}')
        if not np.isfinite(frame.stamp):
            raise InputError('stamp is not finite')
        if frame.depth is not None and frame.depth.shape != rgb.shape[:2]:
            raise InputError(f'depth {frame.depth.shape[1]}x{frame.depth.shape[0]} does not '
                             f'match image {rgb.shape[1]}x{rgb.shape[0]}')
        if frame.K is not None:
            K = np.asarray(frame.K)
            if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise InputError('intrinsics K must be a finite 3x3 matrix with fx, fy > 0')

    def _resize(self, frame: Frame) -> Frame:
        h, w = frame.rgb.shape[:2]
        pw, ph = self._proc_size
        known = frame.K is not None
        K = frame.K if known else default_intrinsics(
            w, h, self.config.uncalibrated_hfov_deg)
        if (pw, ph) == (w, h):
            rgb, depth = frame.rgb, frame.depth
        else:
            rgb = cv2.resize(frame.rgb, (pw, ph), interpolation=cv2.INTER_AREA)
            depth = None if frame.depth is None else cv2.resize(
                frame.depth, (pw, ph), interpolation=cv2.INTER_NEAREST)
            K = scale_intrinsics(K, pw / w, ph / h)
        if depth is not None:
            depth = depth.astype(np.float32, copy=False)
        # every other field (stamp, name, ground truth, ground plane) as it came
        return dataclasses.replace(frame, rgb=rgb, depth=depth, K=K, index=self._index,
                                   intrinsics_known=known)


def _same_intrinsics(K: np.ndarray | None, ref: np.ndarray | None) -> bool:
    """Whether a frame's intrinsics are the stream's (both unknown counts as the same)."""
    if K is None or ref is None:
        return K is None and ref is None
    return bool(np.allclose(np.asarray(K, np.float64), ref, rtol=1e-6, atol=1e-6))


def latent_nbytes_by_device(record: Any) -> dict[str, int]:
    """Bytes of storage held by the arrays and tensors in `record`, per device ('cpu',
    'cuda:0', ...). Walks dicts, lists, tuples and dataclasses; a storage shared by several
    views counts once, at its full size (what freeing it gives back)."""
    seen: set[tuple[str, int]] = set()
    out: dict[str, int] = {}

    def add(device: str, key: int, nbytes: int) -> None:
        if (device, key) not in seen:
            seen.add((device, key))
            out[device] = out.get(device, 0) + int(nbytes)

    def walk(x: Any) -> None:
        if isinstance(x, np.ndarray):
            base = x
            while isinstance(base.base, np.ndarray):
                base = base.base
            add('cpu', id(base), base.nbytes)
        elif hasattr(x, 'untyped_storage'):  # torch tensor
            st = x.untyped_storage()
            add(str(x.device), st.data_ptr(), st.nbytes())
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            for f in dataclasses.fields(x):
                walk(getattr(x, f.name))

    walk(record)
    return out


def _empty_result(source_stamp: float, target: CacheEntry | None, n: int,
                  message: str) -> QueryResult:
    status = np.full(n, PointStatus.OUT_OF_WINDOW if message else PointStatus.INVALID, np.uint8)
    nan3 = np.full((n, 3), np.nan, np.float32)
    return QueryResult(source_stamp=source_stamp,
                       target_stamp=target.stamp if target is not None else float('nan'),
                       positions=nan3.copy(), source_positions=nan3.copy(),
                       displacements=nan3.copy(), confidence=np.zeros(n, np.float32),
                       status=status, message=message)
