"""``ImageFolderReader``: a folder of png/jpg images, no depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fourd_ros.core.data.readers.base import (
    _natural_key,
    DatasetError,
    IndexedReader,
    load_rgb,
    read_intrinsics_file,
)
from fourd_ros.core.types import Frame

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


class ImageFolderReader(IndexedReader):
    """A folder of images (png/jpg, natural sort order: ``img2`` before ``img10``), no depth.

    Stamps are ``source index / fps`` (default 30). K: the ``K`` option, else
    ``camera-intrinsics.txt`` in the folder if present, else None (uncalibrated).
    """

    layout = 'images'

    def __init__(self, path: str | Path, fps: float = 30.0, **common: Any) -> None:
        folder = Path(path)
        if not folder.is_dir():
            raise DatasetError(f'not a folder: {folder}')
        self._files = _image_files(folder)
        super().__init__(folder, len(self._files), **common)
        if not self._files:
            raise DatasetError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
        if fps <= 0:
            raise ValueError(f'fps must be > 0, got {fps}')
        self.fps = float(fps)
        intr = folder / 'camera-intrinsics.txt'
        self._K = (self.K_override if self.K_override is not None
                   else read_intrinsics_file(intr) if intr.is_file() else None)

    def _load(self, src: int) -> Frame:
        path = self._files[src]
        return Frame(stamp=src / self.fps, rgb=load_rgb(path),
                     K=None if self._K is None else self._K.copy(), name=path.stem)
