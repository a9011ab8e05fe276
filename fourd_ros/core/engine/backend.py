"""The protocol every geometry/motion backend implements (rgbd, learned, oracle).

A backend sees each frame once (`process`), returns its per-frame geometry and a small latent
record that the engine caches; motion between any two cached frames is decoded on demand from
their two records (`motion`), never by re-encoding a frame. This is the S-4RC contract: the learned
backend's latent is its token set on the inference device, the rgbd backend's is a grey image and
depth map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fourd_ros.core.engine.objects import object_ids_of
from fourd_ros.core.types import Frame, FrameResult


class BackendError(RuntimeError):
    """A backend could not serve one call (e.g. the inference device ran out of memory).

    The stream is left as it was: the frame is not cached (from `process`) or the query is
    answered INVALID with this message (from `motion`); later calls may succeed.
    """


@dataclass
class CacheEntry:
    """What the engine keeps of one processed frame.

    Attributes:
        stamp: capture time, seconds.
        index: running frame index in the stream (0 = anchor).
        T_wc: 4x4 camera-to-world pose (world = first camera, OpenCV axes).
        K: 3x3 intrinsics at the processing resolution.
        latent: the backend's own typed record of the frame (e.g. `rgbd.latent.RgbdLatent`):
            arrays or tensors, possibly on the inference device; only its backend reads it.
        points_world: H x W x 3 float32 world points at the frame's own time (NaN = invalid).
        dynamic_mask: H x W bool, True on moving scene points.
        nbytes_by_device: memory held by `latent`, `points_world`, `dynamic_mask` and
            `segments`, bytes per device ('cpu', 'cuda:0', ...; `latent_nbytes_by_device`).
        keyframe: kept preferentially by the cache's retention policy.
        segments: H x W uint16 moving segments of the frame (0 = static).
        segment_ids: persistent object id of each segment label (index = label, 0 = none).
    """

    stamp: float
    index: int
    T_wc: np.ndarray
    K: np.ndarray
    latent: Any
    points_world: np.ndarray
    dynamic_mask: np.ndarray
    nbytes_by_device: dict[str, int]
    keyframe: bool = False
    segments: np.ndarray | None = None
    segment_ids: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """All bytes of `nbytes_by_device`."""
        return sum(self.nbytes_by_device.values())

    def object_ids_at(self, pixels: np.ndarray) -> np.ndarray:
        """N uint64 object id at each pixel (N x 2, u v at processing resolution, rounded;
        0 = static, outside the image or unknown)."""
        out = np.zeros(len(pixels), np.uint64)
        if self.segments is None or self.segment_ids is None or not len(pixels):
            return out
        h, w = self.segments.shape
        px = np.nan_to_num(np.asarray(pixels, np.float64), nan=-1.0)
        ui, vi = np.rint(px[:, 0]).astype(np.int64), np.rint(px[:, 1]).astype(np.int64)
        inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
        out[inside] = object_ids_of(self.segments[vi[inside], ui[inside]], self.segment_ids)
        return out


@dataclass
class MotionEstimate:
    """Where points of a source frame are at a target frame's time (one row per point).

    Attributes:
        positions: N x 3 world positions at the target time (NaN where INVALID).
        pixels: N x 2 pixel positions (u, v) in the target image at processing resolution (NaN
            where unknown); may lie outside the image for OUT_OF_VIEW points.
        confidence: N in [0, 1].
        status: N uint8 `PointStatus` (VALID, OCCLUDED, OUT_OF_VIEW or INVALID).
    """

    positions: np.ndarray
    pixels: np.ndarray
    confidence: np.ndarray
    status: np.ndarray


def scaled_size(width: int, height: int, target_width: int, multiple: int) -> tuple[int, int]:
    """(w, h) of an image scaled to `target_width`, height kept in proportion and rounded to a
    multiple of `multiple` pixels; 0 or a width >= the input's keeps the input size."""
    if target_width <= 0 or target_width >= width:
        return width, height
    ph = max(multiple, int(round(height * target_width / width / multiple)) * multiple)
    return int(target_width), ph


@runtime_checkable
class Backend(Protocol):
    """Geometry + motion backend used by `StreamingEngine`.

    Frames reach `process` already resized to the processing resolution the backend chose
    (`processing_size`), with `K` set (given, or a default with ``intrinsics_known=False``).
    Implementations must be deterministic for a given input stream.

    Threading contract: the engine calls `process`, `reset` and `close` one at a time, never
    concurrently with each other (a reset from a service thread waits for the frame in
    flight); `motion` may run in several threads at once and at the same time as `process`
    (the engine's track update and queries from service threads), on cache entries that stay
    valid while it runs (evicted entries are only dropped by the cache, so their memory is
    released when the last user lets go of them). The engine holds no lock while a backend
    call runs.

    Errors: bad input raises ValueError; a call the backend cannot serve right now (device out
    of memory) raises `BackendError`; either leaves the stream as it was.

    Memory: the latent record may hold numpy arrays and torch tensors, nested in dicts, lists or
    dataclasses; the engine counts their storage per device (`latent_nbytes_by_device`) against
    the cache's budget for that device (`CachePolicy`), and eviction drops the engine's last
    reference to them.

    Units: `metric` says whether the outputs are metres now. A backend up to scale may turn
    metric during a stream (the learned one given the floor, `Frame.ground`) and turns back at
    `reset`; each `FrameResult.metric` is the value after that frame. The engine starts the
    tracks and moving objects again when it changes.
    """

    name: str
    metric: bool

    def reset(self) -> None:
        """Forget the stream (a new stream starts at the next frame)."""

    def close(self) -> None:
        """Release what the backend holds (model, device memory); it is not used afterwards."""

    def processing_size(self, width: int, height: int, requested_width: int) -> tuple[int, int]:
        """(w, h) the backend works at for width x height input images; `requested_width` is
        the engine's setting (0 = input resolution), which a model with a fixed input size may
        override."""

    def process(self, frame: Frame, context: list[CacheEntry]
                ) -> tuple[FrameResult, Any]:
        """Encode one frame: its geometry, pose, dynamic mask, moving segments and scene flow
        (`FrameResult`), and the latent record to cache.

        `context` is the cached frames of the stream, oldest first (the engine's one bounded
        cache: a backend keeps no second one); the backend reads the records it needs.
        """

    def motion(self, source: CacheEntry, target: CacheEntry, pixels: np.ndarray,
               via: list[CacheEntry] | None = None) -> MotionEstimate:
        """Decode where source pixels (N x 2, processing resolution) are at the target time.

        `via` lists cached frames strictly between source and target in time that the backend
        may chain through when the gap is large (oldest first).
        """
