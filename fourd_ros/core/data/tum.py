"""TUM RGB-D file lists: parsing, stamp association and ground-truth interpolation.

Format (https://cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats): ``rgb.txt`` and
``depth.txt`` hold ``timestamp filename`` lines, ``groundtruth.txt`` holds
``timestamp tx ty tz qx qy qz qw`` lines (camera optical centre in the mocap world frame, i.e. a
camera-to-world pose), ``#`` starts a comment. Depth PNGs are uint16 with 5000 units per metre.

The functions here raise ``ValueError`` with a message naming the file; the reader turns it into
a ``DatasetError``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

TUM_DEPTH_FACTOR = 5000.0
"""Depth PNG units per metre."""

FREIBURG_DEFAULT_K = np.array([[525.0, 0.0, 319.5],
                               [0.0, 525.0, 239.5],
                               [0.0, 0.0, 1.0]])
"""TUM's default intrinsics for the 640x480 Kinect images (used when no calibration is given)."""


def _data_lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f'cannot read {path}: {err}') from None
    rows = []
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            rows.append(line.replace(',', ' ').split())
    return rows


def read_file_list(path: Path) -> tuple[np.ndarray, list[str]]:
    """Read a ``timestamp filename`` list.

    Returns:
        (F float64 stamps in seconds, F file names relative to the list's folder), sorted by stamp.
    """
    stamps = []
    names = []
    for n, row in enumerate(_data_lines(path)):
        if len(row) < 2:
            raise ValueError(f'{path}: line {n + 1} is not "timestamp filename"')
        try:
            stamps.append(float(row[0]))
        except ValueError:
            raise ValueError(f'{path}: bad timestamp {row[0]!r}') from None
        names.append(row[1])
    order = np.argsort(np.asarray(stamps), kind='stable')
    return np.asarray(stamps, dtype=np.float64)[order], [names[i] for i in order]


def read_trajectory(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory (``timestamp tx ty tz qx qy qz qw`` per line).

    Returns:
        (F stamps in seconds, F x 4 x 4 camera-to-world poses), sorted by stamp.
    """
    rows = _data_lines(path)
    if not rows:
        return np.zeros(0), np.zeros((0, 4, 4))
    if any(len(r) < 8 for r in rows):
        raise ValueError(f'{path}: expected 8 values per line (t tx ty tz qx qy qz qw)')
    try:
        data = np.array([[float(v) for v in row[:8]] for row in rows], dtype=np.float64)
    except ValueError:
        raise ValueError(f'{path}: non-numeric trajectory entry') from None
    data = data[np.argsort(data[:, 0], kind='stable')]
    quat = data[:, 4:8]
    if not np.all(np.linalg.norm(quat, axis=1) > 0):
        raise ValueError(f'{path}: zero quaternion')
    T = np.tile(np.eye(4), (len(data), 1, 1))
    T[:, :3, :3] = Rotation.from_quat(quat).as_matrix()  # scalar-last (x, y, z, w)
    T[:, :3, 3] = data[:, 1:4]
    return data[:, 0], T


def associate_nearest(query: np.ndarray, stamps: np.ndarray, max_dt: float) -> np.ndarray:
    """Index of the nearest entry of sorted ``stamps`` for each query stamp, -1 if > max_dt."""
    out = np.full(len(query), -1, dtype=np.int64)
    n = len(stamps)
    if n == 0:
        return out
    hi = np.clip(np.searchsorted(stamps, query), 0, n - 1)
    lo = np.clip(hi - 1, 0, n - 1)
    use_lo = np.abs(query - stamps[lo]) <= np.abs(stamps[hi] - query)
    idx = np.where(use_lo, lo, hi)
    ok = np.abs(stamps[idx] - query) <= max_dt
    out[ok] = idx[ok]
    return out


def interpolate_poses(query: np.ndarray, stamps: np.ndarray, poses: np.ndarray,
                      max_dt: float = 0.02, max_gap: float = 0.1) -> list[np.ndarray | None]:
    """Ground-truth pose at each query stamp.

    Linear interpolation of the translation and slerp of the rotation between the two bracketing
    samples when they are at most ``max_gap`` seconds apart; otherwise the nearest sample if it
    is within ``max_dt`` seconds; otherwise None.

    Args:
        query: Q stamps (seconds).
        stamps: F sorted stamps of the trajectory.
        poses: F x 4 x 4 camera-to-world poses.
    """
    out: list[np.ndarray | None] = [None] * len(query)
    if len(stamps) == 0:
        return out
    nearest = associate_nearest(query, stamps, max_dt)
    hi = np.searchsorted(stamps, query, side='left')
    for q, t in enumerate(query):
        i1 = int(hi[q])
        if i1 < len(stamps) and stamps[i1] == t:
            out[q] = poses[i1].copy()
            continue
        if 0 < i1 < len(stamps) and stamps[i1] - stamps[i1 - 1] <= max_gap:
            i0 = i1 - 1
            a = (t - stamps[i0]) / (stamps[i1] - stamps[i0])
            r0 = Rotation.from_matrix(poses[i0, :3, :3])
            r1 = Rotation.from_matrix(poses[i1, :3, :3])
            rel = (r0.inv() * r1).as_rotvec()
            T = np.eye(4)
            T[:3, :3] = (r0 * Rotation.from_rotvec(a * rel)).as_matrix()
            T[:3, 3] = (1 - a) * poses[i0, :3, 3] + a * poses[i1, :3, 3]
            out[q] = T
        elif nearest[q] >= 0:
            out[q] = poses[nearest[q]].copy()
    return out
