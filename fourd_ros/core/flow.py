"""Dense optical flow shared by the backends: OpenCV DIS started from the flow the camera motion
alone would cause (a static scene), so that DIS only has to find the objects' own motion; and
the flow between two cached frames for queries (`CachedFlows`): each frame's latent stores the
flow from the frame processed before it (`FlowLink`), and a query over several frames follows
those small steps instead of matching across the whole gap.

Flows are H x W x 2 float32 pixel offsets from an earlier frame's pixels, at the processing
resolution.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numba
import numpy as np

from fourd_ros.core.geometry import invert_pose, pixel_grid

if TYPE_CHECKING:
    from fourd_ros.core.engine.backend import CacheEntry

DIS_PRESETS = {
    'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
    'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def rigid_flow(points_world: np.ndarray, T_wc: np.ndarray, K: np.ndarray) -> np.ndarray:
    """H x W x 2 flow (pixels) that a static scene would show in a camera at T_wc (0 where the
    points are invalid or behind the camera)."""
    T_cw = invert_pose(T_wc)
    return _rigid_flow(np.ascontiguousarray(points_world, np.float32),
                       T_cw[:3, :3].astype(np.float32), T_cw[:3, 3].astype(np.float32),
                       np.asarray(K, np.float64))


@numba.njit(cache=True, nogil=True)
def _rigid_flow(points_world: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray
                ) -> np.ndarray:
    """`rigid_flow` in one pass: each world point (float32) into the camera (``R``, ``t``:
    world to camera, float32), projected in float64."""
    h, w = points_world.shape[0], points_world.shape[1]
    flow = np.zeros((h, w, 2), np.float32)
    for v in range(h):
        for u in range(w):
            x, y, z = points_world[v, u, 0], points_world[v, u, 1], points_world[v, u, 2]
            zc = R[2, 0] * x + R[2, 1] * y + R[2, 2] * z + t[2]
            if not zc > 0:
                continue
            xc = R[0, 0] * x + R[0, 1] * y + R[0, 2] * z + t[0]
            yc = R[1, 0] * x + R[1, 1] * y + R[1, 2] * z + t[1]
            fu = np.float32(K[0, 0] * xc / zc + K[0, 2] - u)
            fv = np.float32(K[1, 1] * yc / zc + K[1, 2] - v)
            if np.isfinite(fu) and np.isfinite(fv):
                flow[v, u, 0], flow[v, u, 1] = fu, fv
    return flow


class DisFlow:
    """DIS optical flow with one OpenCV instance per thread (they are not thread-safe).

    Args:
        preset: 'ultrafast', 'fast' or 'medium'.
        smoothness, gradient_weight: variational refinement alpha and gamma (a weaker
            smoothness than OpenCV's default alpha 20 halves DIS's underestimate of small moving
            objects' motion, measured on synthetic GT flow).
    """

    def __init__(self, preset: str = 'medium', smoothness: float = 10.0,
                 gradient_weight: float = 20.0) -> None:
        if preset not in DIS_PRESETS:
            raise ValueError(f'flow preset must be one of {sorted(DIS_PRESETS)}')
        self.preset, self.smoothness, self.gradient_weight = preset, smoothness, gradient_weight
        self._local = threading.local()

    def __call__(self, first: np.ndarray, second: np.ndarray,
                 init: np.ndarray | None = None) -> np.ndarray:
        """H x W x 2 float32 flow from uint8 grey `first` to `second`, started from `init`."""
        dis = getattr(self._local, 'dis', None)
        if dis is None:
            dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
            dis.setVariationalRefinementAlpha(self.smoothness)
            dis.setVariationalRefinementGamma(self.gradient_weight)
            self._local.dis = dis
        # DIS starts from a given flow of the right size
        return dis.calc(first, second, None if init is None
                        else np.ascontiguousarray(init, np.float32))

    def from_static(self, first: np.ndarray, second: np.ndarray, points_world: np.ndarray,
                    T_wc: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Flow from ``first`` to ``second`` started from the flow a static scene would show:
        ``first``'s H x W x 3 world points seen from a camera at ``T_wc`` (4x4, world) with
        intrinsics ``K``."""
        return self(first, second, rigid_flow(points_world, T_wc, K))


def compose_flows(flows: list[np.ndarray]) -> np.ndarray:
    """One H x W x 2 flow equivalent to following `flows` one after the other."""
    h, w = flows[0].shape[:2]
    u, v = pixel_grid(h, w)
    pu, pv = u.copy(), v.copy()
    for f in flows:
        advance(pu, pv, cv2.remap(f, pu, pv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return np.stack([pu - u, pv - v], axis=-1)


@numba.njit(cache=True, nogil=True)
def flow_targets(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel (column u, row v) lands along an H x W x 2 flow: x = u + flow_x,
    y = v + flow_y (H x W float32 each)."""
    h, w = flow.shape[:2]
    x = np.empty((h, w), np.float32)
    y = np.empty((h, w), np.float32)
    for v in range(h):
        for u in range(w):
            x[v, u] = np.float32(u) + flow[v, u, 0]
            y[v, u] = np.float32(v) + flow[v, u, 1]
    return x, y


@numba.njit(cache=True, nogil=True)
def advance(x: np.ndarray, y: np.ndarray, step: np.ndarray) -> None:
    """Move positions ``x``, ``y`` (H x W float32, in place) by ``step`` (H x W x 2, the flow
    sampled there)."""
    for v in range(x.shape[0]):
        for u in range(x.shape[1]):
            x[v, u] += step[v, u, 0]
            y[v, u] += step[v, u, 1]


def half_flow(flow: np.ndarray) -> np.ndarray:
    """A float32 flow stored as float16 (what a latent keeps; half the bytes): the values of
    ``flow.astype(np.float16)``, converted by OpenCV (F16C), some 20 times faster."""
    return cv2.convertFp16(np.ascontiguousarray(flow, np.float32)).view(np.float16)


def full_flow(flow: np.ndarray) -> np.ndarray:
    """A stored float16 flow back as float32 (the values of ``flow.astype(np.float32)``)."""
    return cv2.convertFp16(np.ascontiguousarray(flow, np.float16).view(np.int16))


@dataclass(kw_only=True)
class FlowLink:
    """Base of a backend's cached latent: the flow from the frame processed just before.

    Attributes:
        prev_index: stream index of the frame processed before this one (-1: none).
        flow_from_prev: H x W x 2 float16 optical flow (pixels) from that frame to this one
            (`half_flow`); None when there is none (first frame, tracking lost).
    """

    prev_index: int = -1
    flow_from_prev: np.ndarray | None = None

    def follows(self, entry: CacheEntry) -> bool:
        """This frame was processed right after ``entry`` (its stored flow starts there)."""
        return self.prev_index == entry.index


def consecutive(source: CacheEntry, target: CacheEntry,
                via: list[CacheEntry]) -> list[CacheEntry] | None:
    """Source, every frame in between and target, if all are cached and forward in time."""
    gap = target.index - source.index
    if gap < 2 or len(via) != gap - 1:
        return None
    return [source, *sorted(via, key=lambda e: e.index), target]


class CachedFlows:
    """Optical flow between cached frames (whose latents are `FlowLink`s with a ``gray``
    image), for queries. Thread-safe; the last few results are memoised by the frames' stamps.

    Args:
        dis: DIS optical flow, for pairs without a stored flow.
        memo_size: how many flows to keep before the memo is emptied.
    """

    def __init__(self, dis: DisFlow, memo_size: int = 8) -> None:
        self._dis = dis
        # (first stamp, last stamp, hops) -> flow
        self._memo: dict[tuple[float, float, int], np.ndarray] = {}
        self._memo_size = memo_size
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget the memo (the stream was reset)."""
        with self._lock:
            self._memo.clear()

    def between(self, source: CacheEntry, target: CacheEntry,
                via: list[CacheEntry] | None = None) -> np.ndarray:
        """Flow from ``source`` to ``target``: the stored frame-to-frame flows composed when
        every frame in between is cached (``via``), else one DIS pass across the gap."""
        chain = consecutive(source, target, via or [])
        return self.composed(chain) if chain is not None else self.step(source, target)

    def composed(self, chain: list[CacheEntry]) -> np.ndarray:
        """Flow from chain[0] to chain[-1] by composing the flows of consecutive frames."""
        key = (chain[0].stamp, chain[-1].stamp, len(chain) - 1)
        with self._lock:
            cached = self._memo.get(key)
        if cached is None:
            cached = compose_flows([self.step(a, b) for a, b in zip(chain[:-1], chain[1:])])
            self._remember(key, cached)
        return cached

    def step(self, a: CacheEntry, b: CacheEntry) -> np.ndarray:
        """Flow from ``a`` to ``b``: the one stored with ``b`` when it follows ``a``, else DIS
        started from the flow of a static scene."""
        stored = b.latent.flow_from_prev
        if stored is not None and b.latent.follows(a):
            return full_flow(stored)
        key = (a.stamp, b.stamp, 1)
        with self._lock:
            cached = self._memo.get(key)
        if cached is None:
            cached = self._dis.from_static(a.latent.gray, b.latent.gray, a.points_world,
                                           b.T_wc, b.K)
            self._remember(key, cached)
        return cached

    def _remember(self, key: tuple[float, float, int], flow: np.ndarray) -> None:
        with self._lock:
            if len(self._memo) > self._memo_size:
                self._memo.clear()
            self._memo[key] = flow
