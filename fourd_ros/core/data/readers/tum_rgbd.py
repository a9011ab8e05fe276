"""``TumReader``: TUM RGB-D sequence folders (file formats in ``fourd_ros.core.data.tum``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fourd_ros.core.data import tum
from fourd_ros.core.data.readers.base import (
    _check_depth_size,
    DatasetError,
    IndexedReader,
    load_depth_png,
    load_rgb,
    read_intrinsics_file,
)
from fourd_ros.core.types import Frame


class TumReader(IndexedReader):
    """TUM RGB-D sequence folder.

    Depth (``depth.txt``) is associated to each RGB frame by nearest stamp within ``max_dt``
    seconds (default 0.02, as TUM's ``associate.py``); RGB frames without a depth match are
    dropped. Depth PNGs are uint16 with ``depth_factor`` (5000) units per metre, 0 invalid.
    Ground truth (``groundtruth.txt``) is interpolated at the RGB stamp (slerp between samples at
    most ``gt_max_gap`` s apart, else nearest within ``max_dt``, else None); it is
    camera-to-world in the motion-capture world frame. Intrinsics: the ``K`` option, else
    ``camera-intrinsics.txt`` or ``calib.txt`` (3x3 or ``fx fy cx cy``), else TUM's default
    fx = fy = 525, cx = 319.5, cy = 239.5 (``tum.FREIBURG_DEFAULT_K``).
    """

    layout = 'tum'

    def __init__(self, path: str | Path, max_dt: float = 0.02, gt_max_gap: float = 0.1,
                 depth_factor: float = tum.TUM_DEPTH_FACTOR, **common: Any) -> None:
        folder = Path(path)
        self.folder = folder
        self.depth_factor = float(depth_factor)
        rgb_list = folder / 'rgb.txt'
        if not rgb_list.is_file():
            raise DatasetError(f'missing file list {rgb_list}')
        stamps, names = self._list(rgb_list)
        depth_list = folder / 'depth.txt'
        self._depth: list[str | None] = [None] * len(stamps)
        has_depth = depth_list.is_file()
        if has_depth:
            d_stamps, d_names = self._list(depth_list)
            match = tum.associate_nearest(stamps, d_stamps, max_dt)
            keep = np.flatnonzero(match >= 0)
            stamps = stamps[keep]
            names = [names[i] for i in keep]
            self._depth = [d_names[match[i]] for i in keep]
        self._stamps = stamps
        self._names = names
        gt_file = folder / 'groundtruth.txt'
        self._poses: list[np.ndarray | None] = [None] * len(stamps)
        has_gt = gt_file.is_file()
        if has_gt:
            try:
                g_stamps, g_poses = tum.read_trajectory(gt_file)
            except ValueError as err:
                raise DatasetError(str(err)) from None
            self._poses = tum.interpolate_poses(stamps, g_stamps, g_poses, max_dt, gt_max_gap)
        super().__init__(folder, len(stamps), **common)
        if not len(stamps):
            raise DatasetError(f'no frames in {rgb_list}'
                               + (f' with a depth match in {depth_list}' if has_depth else ''))
        self.has_depth = has_depth
        self.has_gt_pose = has_gt
        if self.K_override is not None:
            self._K = self.K_override
        else:
            self._K = tum.FREIBURG_DEFAULT_K.copy()
            for fname in ('camera-intrinsics.txt', 'calib.txt'):
                if (folder / fname).is_file():
                    self._K = read_intrinsics_file(folder / fname)
                    break

    @staticmethod
    def _list(path: Path) -> tuple[np.ndarray, list[str]]:
        try:
            return tum.read_file_list(path)
        except ValueError as err:
            raise DatasetError(str(err)) from None

    def _load(self, src: int) -> Frame:
        rgb_path = self.folder / self._names[src]
        rgb = load_rgb(rgb_path)
        depth = None
        depth_name = self._depth[src]
        if depth_name is not None:
            depth_path = self.folder / depth_name
            depth = load_depth_png(depth_path, self.depth_factor)
            _check_depth_size(depth, rgb, f'file {depth_path}')
        pose = self._poses[src]
        return Frame(stamp=float(self._stamps[src]), rgb=rgb, depth=depth, K=self._K.copy(),
                     T_wc_gt=None if pose is None else pose.copy(),
                     name=Path(self._names[src]).stem)
