"""``SevenScenesReader``: 7-Scenes sequence folders."""

from __future__ import annotations

from pathlib import Path
import re
from typing import Any

from fourd_ros.core.data.readers.base import (
    _check_depth_size,
    DatasetError,
    IndexedReader,
    load_depth_png,
    load_rgb,
    read_intrinsics_file,
    read_pose_file,
)
from fourd_ros.core.types import Frame

SEVEN_SCENES_FPS = 30.0
"""7-Scenes (Kinect v1) frame rate; stamps are ``frame number / 30`` seconds."""

_SEVEN_RE = re.compile(r'^frame-(\d+)\.color\.(png|jpg)$')


def _seven_scenes_frames(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.iterdir():
        m = _SEVEN_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


class SevenScenesReader(IndexedReader):
    """7-Scenes sequence folder (``frame-XXXXXX.{color.jpg|color.png,depth.png,pose.txt}``).

    Depth PNG: uint16 millimetres, 0 and 65535 invalid (-> 0). Intrinsics from
    ``camera-intrinsics.txt`` (required unless ``K`` is given; 7-Scenes: fx = fy = 585,
    cx = 320, cy = 240). Stamps are ``frame number / fps`` (default 30 Hz, the Kinect rate).
    Poses with non-finite entries give ``T_wc_gt = None``.
    """

    layout = '7scenes'

    def __init__(self, path: str | Path, fps: float = SEVEN_SCENES_FPS, **common: Any) -> None:
        folder = Path(path)
        if not folder.is_dir():
            raise DatasetError(f'not a folder: {folder}')
        self._frames = _seven_scenes_frames(folder)
        super().__init__(folder, len(self._frames), **common)
        if not self._frames:
            raise DatasetError(f'no frame-XXXXXX.color.(jpg|png) files in {folder}')
        self.fps = float(fps)
        intr = folder / 'camera-intrinsics.txt'
        if self.K_override is not None:
            self._K = self.K_override
        elif intr.is_file():
            self._K = read_intrinsics_file(intr)
        else:
            raise DatasetError(f'missing intrinsics file {intr} (or pass K=...)')
        first = self._stem(0)
        self.has_depth = first.with_name(first.name + '.depth.png').is_file()
        self.has_gt_pose = first.with_name(first.name + '.pose.txt').is_file()

    def _stem(self, src: int) -> Path:
        num, color = self._frames[src]
        return color.with_name(f'frame-{num:06d}')

    def _load(self, src: int) -> Frame:
        num, color_path = self._frames[src]
        stem = self._stem(src)
        rgb = load_rgb(color_path)
        depth = None
        if self.has_depth:
            depth_path = stem.with_name(stem.name + '.depth.png')
            depth = load_depth_png(depth_path, 1000.0, invalid_values=(0, 65535))
            _check_depth_size(depth, rgb, f'file {depth_path}')
        pose = None
        if self.has_gt_pose:
            pose = read_pose_file(stem.with_name(stem.name + '.pose.txt'))
        return Frame(stamp=num / self.fps, rgb=rgb, depth=depth, K=self._K.copy(),
                     T_wc_gt=pose, name=stem.name)
