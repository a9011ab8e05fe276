"""Shared parts of the sequence readers.

``DatasetError``, the ``SequenceReader`` / ``IndexedReader`` base classes, the file loaders
(intrinsics, poses, RGB, depth PNG), frame selection helpers, ``LAYOUTS`` and ``timed``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
import re
import time
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import cv2
import numpy as np

from fourd_ros.core.types import Frame

LAYOUTS = ('synthetic', 'rosbag2', '7scenes', 'tum', 'images', 'video')

T = TypeVar('T')


def timed(items: Iterable[T]) -> Iterator[tuple[T, float]]:
    """Yield (item, seconds spent producing it): reading/decoding time of each frame."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        yield item, time.perf_counter() - t0


class DatasetError(ValueError):
    """Bad input data (missing/corrupt files, missing intrinsics, size mismatch, no frames).

    The message is always one line (multi-line causes are joined with spaces).
    """

    def __init__(self, message: str) -> None:
        super().__init__(' '.join(part.strip() for part in str(message).splitlines()
                                  if part.strip()))


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def as_intrinsics(K: Any) -> np.ndarray:
    """3x3 float64 intrinsics from a 3x3 array-like or ``(fx, fy, cx, cy)``."""
    arr = np.asarray(K, dtype=np.float64)
    if arr.shape == (4,):
        fx, fy, cx, cy = arr
        arr = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if arr.shape != (3, 3) or not np.all(np.isfinite(arr)) or arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise DatasetError(f'invalid intrinsics K={K!r}: expected 3x3 or (fx, fy, cx, cy)')
    return arr


def read_intrinsics_file(path: Path) -> np.ndarray:
    """Read a 3x3 matrix (9 numbers) or ``fx fy cx cy`` from a text file.

    Numbers may be separated by whitespace or commas; ``#`` starts a comment.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f'cannot read intrinsics file {path}: {err}') from None
    text = '\n'.join(line.split('#', 1)[0] for line in text.splitlines())
    try:
        values = [float(v) for v in text.replace(',', ' ').split()]
    except ValueError:
        raise DatasetError(f'non-numeric intrinsics in {path}') from None
    if len(values) == 9:
        K = np.asarray(values, dtype=np.float64).reshape(3, 3)
    elif len(values) == 4:
        fx, fy, cx, cy = values
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    else:
        raise DatasetError(f'expected a 3x3 matrix or fx fy cx cy in {path}, got {len(values)} '
                           'numbers')
    if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0):
        raise DatasetError(f'invalid intrinsics in {path} (non-finite or non-positive focal)')
    return K


def read_pose_file(path: Path) -> np.ndarray | None:
    """Read a 4x4 camera-to-world matrix (16 numbers); None if it has non-finite entries."""
    try:
        values = np.asarray(Path(path).read_text().split(), dtype=np.float64)
    except FileNotFoundError:
        raise DatasetError(f'missing pose file {path}') from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DatasetError(f'cannot read pose file {path}: {err}') from None
    if values.size != 16:
        raise DatasetError(f'expected a 4x4 matrix in {path}, got {values.size} numbers')
    T = values.reshape(4, 4)
    return T if np.all(np.isfinite(T)) else None


def _imread(path: Path, flags: int, kind: str) -> np.ndarray:
    """cv2.imread with a clear ``DatasetError`` for a missing or unreadable ``kind`` file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'missing {kind} file {path}')
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DatasetError(f'cannot read {kind} file {path} (corrupt or unsupported)')
    return image


def load_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB image from a file (any format cv2 reads)."""
    return cv2.cvtColor(_imread(path, cv2.IMREAD_COLOR, 'image'), cv2.COLOR_BGR2RGB)


def load_depth_png(path: Path, units_per_metre: float,
                   invalid_values: Sequence[int] = (0,)) -> np.ndarray:
    """H x W float32 depth in metres from a uint16 PNG; ``invalid_values`` become 0."""
    raw = _imread(path, cv2.IMREAD_UNCHANGED, 'depth')
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(f'depth file {path} is {raw.dtype} with shape {raw.shape}, '
                           'expected single-channel uint16')
    depth = raw.astype(np.float32) / np.float32(units_per_metre)
    for v in invalid_values:
        depth[raw == v] = 0.0
    return depth


def _check_depth_size(depth: np.ndarray, rgb: np.ndarray, where: Any) -> None:
    if depth.shape != rgb.shape[:2]:
        raise DatasetError(f'depth {where} is {depth.shape[1]}x{depth.shape[0]} but the image is '
                           f'{rgb.shape[1]}x{rgb.shape[0]}')


def _natural_key(name: str) -> list[Any]:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r'(\d+)', name)]


def _selection(n: int, start: int, stride: int, max_frames: int | None) -> range:
    sel = range(start, n, stride)
    return sel[:max_frames] if max_frames else sel


def _check_common(start: int, stride: int, max_frames: int | None) -> None:
    if start < 0 or stride < 1 or (max_frames is not None and max_frames < 0):
        raise ValueError(f'invalid selection start={start} stride={stride} '
                         f'max_frames={max_frames}')


# ----------------------------------------------------------------------------------------------
# Base classes
# ----------------------------------------------------------------------------------------------

class SequenceReader(ABC):
    """Iterable over the ``Frame``s of one sequence (re-iterable: each ``iter`` starts over).

    Attributes:
        name: sequence name (the folder or file stem).
        has_depth: frames carry metric depth.
        has_gt_pose: frames carry a ground-truth pose (some may still be None).
        layout: one of ``LAYOUTS``.
    """

    layout = ''

    def __init__(self, path: str | Path, start: int = 0, stride: int = 1,
                 max_frames: int | None = None, K: Any = None) -> None:
        _check_common(start, stride, max_frames)
        self.path = Path(path)
        self.name = self.path.stem if self.path.is_file() else self.path.name
        self.start = start
        self.stride = stride
        self.max_frames = max_frames
        self.K_override = as_intrinsics(K) if K is not None else None
        self.has_depth = False
        self.has_gt_pose = False

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield the selected frames in order."""

    @property
    def length(self) -> int | None:
        """Number of frames the iterator yields, None when unknown."""
        return None

    def __len__(self) -> int:
        n = self.length
        if n is None:
            raise TypeError(f'{type(self).__name__}: length unknown')
        return n

    def __repr__(self) -> str:
        return f'{type(self).__name__}({str(self.path)!r}, frames={self.length})'


class IndexedReader(SequenceReader):
    """A reader with random access to source frames by index."""

    def __init__(self, path: str | Path, num_source: int, **common: Any) -> None:
        super().__init__(path, **common)
        self._sel = _selection(num_source, self.start, self.stride, self.max_frames)

    @abstractmethod
    def _load(self, src: int) -> Frame:
        """Load source frame ``src`` (``index`` is set by the caller)."""

    @property
    def length(self) -> int:
        return len(self._sel)

    def __getitem__(self, i: int) -> Frame:
        """The i-th selected frame."""
        src = self._sel[i]
        frame = self._load(src)
        frame.index = i if i >= 0 else len(self._sel) + i
        if self.K_override is not None:
            frame.K = self.K_override.copy()
        return frame

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self._sel)):
            yield self[i]
