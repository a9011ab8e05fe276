"""Sequence readers: one iterator interface over datasets, image folders, videos and bags.

``open_sequence(path, **opts)`` detects the layout and returns a ``SequenceReader`` that yields
``fourd_ros.core.types.Frame`` objects (RGB uint8, depth float32 metres, K 3x3 float64 pixels,
``T_wc_gt`` 4x4 camera-to-world in the dataset's own world frame, stamps in seconds).

Supported layouts (first match wins, or force one with ``layout=``):

- ``synthetic``: a folder with ``meta.json`` whose ``"format"`` is ``"fourd_synthetic_clip"``
  (or ``"fourd-synthetic"``), read with ``fourd_ros.core.data.clip_format.read_clip``.
- ``rosbag2``: a folder with ``metadata.yaml`` (``.db3`` or ``.mcap`` storage), or one of its
  storage files.
- ``7scenes``: ``frame-XXXXXX.color.{jpg,png}``, ``.depth.png`` (uint16 mm, 0 and 65535
  invalid), ``.pose.txt`` (4x4 camera-to-world) and ``camera-intrinsics.txt``.
- ``tum``: TUM RGB-D (``rgb.txt``, optional ``depth.txt`` and ``groundtruth.txt``).
- ``images``: a folder of ``*.png`` / ``*.jpg`` / ``*.jpeg`` (natural sort order), no depth.
- ``video``: a ``.mp4`` / ``.avi`` / ``.mkv`` / ``.mov`` / ``.webm`` file.

Options common to all readers: ``start`` (first source frame, default 0), ``stride`` (default
1), ``max_frames`` (None or 0 = no limit) and ``K`` (intrinsics override: a 3x3 matrix or
``(fx, fy, cx, cy)``). ``Frame.index`` counts the yielded frames from 0; ``Frame.name`` and
``Frame.stamp`` refer to the source frame.

Every problem with the input (missing, unreadable or corrupt files, missing intrinsics where
required, depth/image size mismatch, no frames) raises ``DatasetError`` with a one-line message
naming the file.

This package holds the layout detection and ``open_sequence``; the readers live in one module
each (``base``: error type, base classes and file loaders; ``seven_scenes``, ``tum_rgbd``,
``image_folder``, ``video``, ``rosbag``, ``synthetic_clip``) and are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fourd_ros.core.data.readers.base import (
    as_intrinsics,
    DatasetError,
    IndexedReader,
    LAYOUTS,
    load_depth_png,
    load_rgb,
    read_intrinsics_file,
    read_pose_file,
    SequenceReader,
    timed,
)
from fourd_ros.core.data.readers.image_folder import (
    _image_files,
    IMAGE_EXTENSIONS,
    ImageFolderReader,
)
from fourd_ros.core.data.readers.rosbag import RosbagReader
from fourd_ros.core.data.readers.seven_scenes import (
    _SEVEN_RE,
    SEVEN_SCENES_FPS,
    SevenScenesReader,
)
from fourd_ros.core.data.readers.synthetic_clip import (
    _is_synthetic,
    SYNTHETIC_FORMATS,
    SyntheticClipReader,
)
from fourd_ros.core.data.readers.tum_rgbd import TumReader
from fourd_ros.core.data.readers.video import VIDEO_EXTENSIONS, VideoReader

__all__ = [
    'as_intrinsics', 'DatasetError', 'detect_layout', 'IMAGE_EXTENSIONS', 'ImageFolderReader',
    'IndexedReader', 'LAYOUTS', 'load_depth_png', 'load_rgb', 'open_sequence',
    'read_intrinsics_file', 'read_pose_file', 'RosbagReader', 'SEVEN_SCENES_FPS',
    'SequenceReader', 'SevenScenesReader', 'SYNTHETIC_FORMATS', 'SyntheticClipReader', 'timed',
    'TumReader', 'VIDEO_EXTENSIONS', 'VideoReader',
]


def detect_layout(path: str | Path) -> str:
    """Name of the layout of ``path`` (one of ``LAYOUTS``); DatasetError if none matches."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f'no such file or folder: {p}')
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return 'video'
        if suffix in ('.db3', '.mcap') and (p.parent / 'metadata.yaml').is_file():
            return 'rosbag2'
        raise DatasetError(f'unsupported input file {p} (expected a video '
                           f'{"/".join(VIDEO_EXTENSIONS)} or a sequence folder)')
    if _is_synthetic(p):
        return 'synthetic'
    if (p / 'metadata.yaml').is_file():
        return 'rosbag2'
    if any(_SEVEN_RE.match(c.name) for c in p.iterdir()):
        return '7scenes'
    if (p / 'rgb.txt').is_file():
        return 'tum'
    if _image_files(p):
        return 'images'
    raise DatasetError(f'no frames found in {p} (not a 7-Scenes, TUM, image, rosbag2 or '
                       'synthetic-clip folder)')


_READERS: dict[str, type[SequenceReader]] = {
    'synthetic': SyntheticClipReader,
    'rosbag2': RosbagReader,
    '7scenes': SevenScenesReader,
    'tum': TumReader,
    'images': ImageFolderReader,
    'video': VideoReader,
}


def open_sequence(path: str | Path, layout: str | None = None, **opts: Any) -> SequenceReader:
    """Open a sequence, detecting its layout unless ``layout`` is given.

    Args:
        path: folder or file (see the module docstring for the layouts).
        layout: force one of ``LAYOUTS``.
        **opts: ``start``, ``stride``, ``max_frames``, ``K`` and the reader-specific options
            (``fps``; TUM ``max_dt``/``gt_max_gap``/``depth_factor``; rosbag2
            ``image_topic``/``depth_topic``/``camera_info_topic``/``max_dt``).

    Raises:
        DatasetError: no layout matches or the data is bad.
        TypeError: an option the reader does not accept.
    """
    if layout is None:
        layout = detect_layout(path)
    elif layout not in _READERS:
        raise ValueError(f'unknown layout {layout!r}; expected one of {", ".join(LAYOUTS)}')
    elif not Path(path).exists():
        raise DatasetError(f'no such file or folder: {path}')
    return _READERS[layout](path, **opts)
