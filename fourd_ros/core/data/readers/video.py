"""``VideoReader``: a video file read with ``cv2.VideoCapture``, no depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from fourd_ros.core.data.readers.base import _selection, DatasetError, SequenceReader
from fourd_ros.core.types import Frame

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.mov', '.webm')


class VideoReader(SequenceReader):
    """A video file read with ``cv2.VideoCapture`` (no depth).

    Stamps: the container timestamp (``CAP_PROP_POS_MSEC`` after reading the frame) when it
    increases, else ``source index / fps``, with fps from the ``fps`` option, the container, or 30.
    The length comes from the container's frame count and may be approximate for some codecs.
    K only from the ``K`` option.
    """

    layout = 'video'

    def __init__(self, path: str | Path, fps: float | None = None, **common: Any) -> None:
        super().__init__(path, **common)
        if not self.path.is_file():
            raise DatasetError(f'missing video file {self.path}')
        cap = self._open()
        try:
            ok, first = cap.read()
            if not ok or first is None:
                raise DatasetError(f'cannot decode any frame of video file {self.path}')
            container_fps = cap.get(cv2.CAP_PROP_FPS)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        if fps is not None and fps <= 0:
            raise ValueError(f'fps must be > 0, got {fps}')
        self.fps = float(fps or (container_fps if container_fps and container_fps > 0 else 30.0))
        self._count = count if count > 0 else None

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise DatasetError(f'cannot open video file {self.path} (corrupt or unsupported)')
        return cap

    @property
    def length(self) -> int | None:
        if self._count is None:
            return None
        return len(_selection(self._count, self.start, self.stride, self.max_frames))

    def __iter__(self) -> Iterator[Frame]:
        cap = self._open()
        try:
            src = -1
            out = 0
            last_stamp = -np.inf
            while not self.max_frames or out < self.max_frames:
                target = self.start + out * self.stride
                while src < target - 1:
                    if not cap.grab():
                        return
                    src += 1
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                src += 1
                msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                stamp = msec / 1000.0 if msec / 1000.0 > last_stamp else src / self.fps
                if src > 0 and stamp <= last_stamp:
                    stamp = last_stamp + self.stride / self.fps
                last_stamp = stamp
                yield Frame(stamp=stamp, rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                            K=None if self.K_override is None else self.K_override.copy(),
                            name=f'{src:06d}', index=out)
                out += 1
        finally:
            cap.release()
