"""Persistent point tracks: seeded on keyframes (dynamic pixels first), advanced frame to frame."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fourd_ros.core.engine.backend import CacheEntry, MotionEstimate
from fourd_ros.core.types import PointStatus, TrackStatus


@dataclass
class TrackConfig:
    """Track manager settings.

    Attributes:
        max_tracks: cap on live tracks.
        grid_step_px: spacing of seed candidates, pixels at processing resolution.
        reseed_every: seed new tracks at least every this many frames (also on keyframes).
        max_occluded_frames: a track occluded or out of view this long becomes LOST.
        dynamic_fraction: share of new seeds reserved for dynamic pixels.
    """

    max_tracks: int = 256
    grid_step_px: int = 16
    reseed_every: int = 10
    max_occluded_frames: int = 15
    dynamic_fraction: float = 0.5


@dataclass
class TrackSnapshot:
    """Tracks at one frame (parallel arrays; positions in the world frame, metres or units)."""

    stamp: float
    ids: np.ndarray         # N uint64
    positions: np.ndarray   # N x 3
    velocities: np.ndarray  # N x 3, units per second
    confidence: np.ndarray  # N float32
    status: np.ndarray      # N uint8 TrackStatus
    pixels: np.ndarray      # N x 2 pixel positions in that frame (processing resolution)
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    # N uint64 moving object each track is on (0 = static scene); a hidden track keeps its own


MotionFn = Callable[[CacheEntry, CacheEntry, np.ndarray], MotionEstimate]


class TrackManager:
    """Keeps tracks alive across frames using the backend's pairwise motion decoder."""

    def __init__(self, config: TrackConfig) -> None:
        self.config = config
        self.reset()

    def restart(self) -> None:
        """Forget every track but not the ids given (a new track never takes an old id)."""
        next_id = self._next_id
        self.reset()
        self._next_id = next_id

    def reset(self) -> None:
        self._next_id = 1
        self._ids = np.zeros(0, np.uint64)
        self._pix = np.zeros((0, 2), np.float32)
        self._pos = np.zeros((0, 3), np.float32)
        self._vel = np.zeros((0, 3), np.float32)
        self._conf = np.zeros(0, np.float32)
        self._status = np.zeros(0, np.uint8)
        self._hidden = np.zeros(0, np.int32)
        self._objects = np.zeros(0, np.uint64)
        self._frames_since_seed = 0
        self.snapshot = TrackSnapshot(0.0, self._ids, self._pos, self._vel, self._conf,
                                      self._status, self._pix, self._objects)

    def step(self, prev: CacheEntry | None, cur: CacheEntry, motion: MotionFn,
             confidence_map: np.ndarray) -> TrackSnapshot:
        """Advance tracks from `prev` to `cur`, drop lost ones, seed new ones; returns a copy."""
        # tracks reported LOST last frame are gone now
        alive = self._status != TrackStatus.LOST
        self._keep(alive)
        if prev is not None and len(self._ids):
            self._advance(prev, cur, motion)
        self._frames_since_seed += 1
        if (cur.keyframe or prev is None or self._frames_since_seed >= self.config.reseed_every
                or self._live_count() < 0.5 * self.config.max_tracks):
            self._seed(cur, confidence_map)
            self._frames_since_seed = 0
        seen = self._status == TrackStatus.TRACKED
        self._objects[seen] = cur.object_ids_at(self._pix[seen])
        self.snapshot = TrackSnapshot(cur.stamp, self._ids.copy(), self._pos.copy(),
                                      self._vel.copy(), self._conf.copy(), self._status.copy(),
                                      self._pix.copy(), self._objects.copy())
        return self.snapshot

    # ------------------------------------------------------------------ internals
    def _live_count(self) -> int:
        return int(np.count_nonzero(self._status != TrackStatus.LOST))

    def _keep(self, mask: np.ndarray) -> None:
        for name in ('_ids', '_pix', '_pos', '_vel', '_conf', '_status', '_hidden',
                     '_objects'):
            setattr(self, name, getattr(self, name)[mask])

    def _advance(self, prev: CacheEntry, cur: CacheEntry, motion: MotionFn) -> None:
        est = motion(prev, cur, self._pix)
        dt = max(cur.stamp - prev.stamp, 1e-6)
        valid = est.status == PointStatus.VALID
        hidden = (est.status == PointStatus.OCCLUDED) | (est.status == PointStatus.OUT_OF_VIEW)
        known = valid | hidden
        new_pos = np.where(known[:, None], est.positions, self._pos)
        self._vel = np.where(known[:, None], (new_pos - self._pos) / dt, self._vel)
        self._vel = self._vel.astype(np.float32)
        self._pos = new_pos.astype(np.float32)
        self._pix = np.where(known[:, None], est.pixels, self._pix).astype(np.float32)
        self._conf = np.where(known, est.confidence, 0.0).astype(np.float32)
        self._hidden = np.where(valid, 0, self._hidden + 1)
        status = np.full(len(self._ids), TrackStatus.TRACKED, np.uint8)
        status[hidden] = TrackStatus.OCCLUDED
        lost = (~known) | (self._hidden > self.config.max_occluded_frames)
        status[lost] = TrackStatus.LOST
        self._status = status

    def _seed(self, cur: CacheEntry, confidence_map: np.ndarray) -> None:
        cfg = self.config
        free = cfg.max_tracks - self._live_count()
        if free <= 0:
            return
        h, w = cur.dynamic_mask.shape
        step = cfg.grid_step_px
        v, u = np.mgrid[step // 2:h:step, step // 2:w:step]
        u = u.ravel()
        v = v.ravel()
        ok = np.isfinite(cur.points_world[v, u, 0]) & (confidence_map[v, u] > 0.2)
        if len(self._ids):
            # no new seed within one grid cell of a live track
            live = self._pix[self._status != TrackStatus.LOST]
            cell = np.zeros((h // step + 2, w // step + 2), bool)
            iu = np.clip(np.round(live[:, 0] / step).astype(int), 0, cell.shape[1] - 1)
            iv = np.clip(np.round(live[:, 1] / step).astype(int), 0, cell.shape[0] - 1)
            cell[iv, iu] = True
            ok &= ~cell[np.round(v / step).astype(int), np.round(u / step).astype(int)]
        u, v = u[ok], v[ok]
        dynamic = cur.dynamic_mask[v, u]
        n_dyn = min(int(np.count_nonzero(dynamic)), max(int(cfg.dynamic_fraction * free), 0))
        dyn_idx = np.flatnonzero(dynamic)[:n_dyn]
        static_idx = np.flatnonzero(~dynamic)
        n_static = min(len(static_idx), free - len(dyn_idx))
        if n_static > 0:
            # spread static seeds evenly over the candidates rather than taking the top rows
            static_idx = static_idx[np.linspace(0, len(static_idx) - 1, n_static).astype(int)]
        else:
            static_idx = static_idx[:0]
        chosen = np.concatenate([dyn_idx, static_idx])
        if not len(chosen):
            return
        n = len(chosen)
        pix = np.stack([u[chosen], v[chosen]], axis=1).astype(np.float32)
        self._ids = np.concatenate([self._ids, np.arange(self._next_id, self._next_id + n,
                                                         dtype=np.uint64)])
        self._next_id += n
        self._pix = np.concatenate([self._pix, pix])
        self._pos = np.concatenate([self._pos, cur.points_world[v[chosen], u[chosen]]])
        self._vel = np.concatenate([self._vel, np.zeros((n, 3), np.float32)])
        self._conf = np.concatenate([self._conf, confidence_map[v[chosen], u[chosen]]
                                     .astype(np.float32)])
        self._status = np.concatenate([self._status,
                                       np.full(n, TrackStatus.TRACKED, np.uint8)])
        self._hidden = np.concatenate([self._hidden, np.zeros(n, np.int32)])
        self._objects = np.concatenate([self._objects, np.zeros(n, np.uint64)])
