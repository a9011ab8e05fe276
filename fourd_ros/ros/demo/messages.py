"""Decoding helpers for the demo: header stamps from CDR bytes, stamps."""

from __future__ import annotations

import struct
from typing import Any


def cdr_header_stamp_ns(data: bytes) -> int | None:
    """Stamp (ns) of a message whose first field is std_msgs/Header, read from its CDR bytes."""
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack_from('<iI' if data[1] == 1 else '>iI', data, 4)
    return sec * 1_000_000_000 + nanosec


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
