"""Decoding helpers for the demo: header stamps from CDR bytes, PointCloud2 fields, stamps."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np


def cdr_header_stamp_ns(data: bytes) -> int | None:
    """Stamp (ns) of a message whose first field is std_msgs/Header, read from its CDR bytes."""
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack_from('<iI' if data[1] == 1 else '>iI', data, 4)
    return sec * 1_000_000_000 + nanosec


def cloud_fields(msg: Any, names: tuple[str, ...]) -> np.ndarray:
    """Structured array (height x width) of the FLOAT32 fields `names` of a PointCloud2."""
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in names if n not in fields or fields[n].datatype != 7]
    if missing:
        raise ValueError(f'cloud lacks float32 fields {missing}')
    dtype = np.dtype({'names': list(names), 'formats': ['>f4' if msg.is_bigendian else '<f4'] *
                      len(names), 'offsets': [fields[n].offset for n in names],
                      'itemsize': msg.point_step})
    n = msg.height * msg.width
    raw = np.frombuffer(msg.data, np.uint8)
    if msg.row_step == msg.width * msg.point_step:
        return np.frombuffer(raw[:n * msg.point_step].tobytes(), dtype).reshape(
            msg.height, msg.width)
    rows = [np.frombuffer(raw[r * msg.row_step:r * msg.row_step + msg.width * msg.point_step]
                          .tobytes(), dtype) for r in range(msg.height)]
    return np.stack(rows)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
