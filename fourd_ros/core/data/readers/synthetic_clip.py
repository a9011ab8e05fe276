"""``SyntheticClipReader``: fourd-synthetic clip folders (``meta.json`` + frames)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fourd_ros.core.data.readers.base import DatasetError, IndexedReader
from fourd_ros.core.types import Frame

SYNTHETIC_FORMATS = ('fourd_synthetic_clip', 'fourd-synthetic')
"""``meta.json`` ``"format"`` values of synthetic clips (``clip_format.FORMAT_NAME`` first)."""


def _is_synthetic(folder: Path) -> bool:
    meta = folder / 'meta.json'
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get('format') in SYNTHETIC_FORMATS
    except (OSError, ValueError, AttributeError) as err:
        raise DatasetError(f'cannot read {meta}: {err}') from None


class SyntheticClipReader(IndexedReader):
    """A fourd-synthetic clip folder, read with ``fourd_ros.core.data.clip_format.read_clip``."""

    layout = 'synthetic'

    def __init__(self, path: str | Path, **common: Any) -> None:
        from fourd_ros.core.data.clip_format import read_clip

        try:
            self.clip = read_clip(path)
        except DatasetError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise DatasetError(f'cannot read synthetic clip {path}: {err}') from None
        super().__init__(path, len(self.clip), **common)
        if not len(self.clip):
            raise DatasetError(f'synthetic clip {path} has no frames')
        first = self.clip.frame(0)
        self.has_depth = bool(getattr(self.clip, 'has_depth', first.depth is not None))
        self.has_gt_pose = bool(getattr(self.clip, 'has_gt_pose', first.T_wc_gt is not None))

    def _load(self, src: int) -> Frame:
        try:
            return self.clip.frame(src)
        except DatasetError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise DatasetError(f'cannot read frame {src} of synthetic clip {self.path}: '
                               f'{err}') from None
