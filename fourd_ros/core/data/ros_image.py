"""Decode ``sensor_msgs/msg/Image`` / ``CompressedImage`` payloads to numpy (no ROS needed).

Works with any object that has the message fields (rosbags messages, rclpy messages).
Depth follows REP 118: ``16UC1`` / ``mono16`` in millimetres, ``32FC1`` in metres.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# encoding -> (numpy dtype, channels)
_ENCODINGS: dict[str, tuple[str, int]] = {
    'rgb8': ('u1', 3), 'bgr8': ('u1', 3), 'rgba8': ('u1', 4), 'bgra8': ('u1', 4),
    'mono8': ('u1', 1), '8uc1': ('u1', 1), '8uc3': ('u1', 3),
    'mono16': ('u2', 1), '16uc1': ('u2', 1), '32fc1': ('f4', 1),
}
RGB_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8uc1', '8uc3')
DEPTH_ENCODINGS = ('16uc1', 'mono16', '32fc1')


def _as_bytes(data: Any) -> np.ndarray:
    """1-D uint8 view of a message byte field (numpy array, bytes, array.array or list)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_msg_to_array(msg: Any) -> np.ndarray:
    """Raw pixel array of an Image message: H x W x C in the message's dtype and channel order.

    Raises:
        ValueError: unsupported encoding or a data buffer too short for height x step.
    """
    enc = str(msg.encoding).lower()
    if enc not in _ENCODINGS:
        raise ValueError(f'unsupported image encoding {msg.encoding!r}')
    code, ch = _ENCODINGS[enc]
    dtype = np.dtype(code).newbyteorder('>' if msg.is_bigendian else '<')
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * ch * dtype.itemsize
    data = _as_bytes(msg.data)
    if step < row_bytes or data.size < step * h:
        raise ValueError(f'image buffer too short: {data.size} bytes for {h} rows of '
                         f'step {step} ({w}x{ch} {enc})')
    rows = data[:step * h].reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dtype).reshape(h, w, ch)
    return arr.astype(dtype.newbyteorder('='), copy=False)


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """H x W x 3 uint8 RGB from an 8-bit colour or mono Image message."""
    enc = str(msg.encoding).lower()
    if enc not in RGB_ENCODINGS:
        raise ValueError(f'not a colour image encoding: {msg.encoding!r}')
    arr = image_msg_to_array(msg)
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if enc in ('bgr8', '8uc3'):
        return np.ascontiguousarray(arr[..., ::-1])
    if enc == 'bgra8':
        return np.ascontiguousarray(arr[..., 2::-1])
    return np.ascontiguousarray(arr[..., :3])


def image_msg_to_depth(msg: Any) -> np.ndarray:
    """H x W float32 depth in metres from a 16UC1/mono16 (mm) or 32FC1 (m) Image message.

    Invalid pixels are 0 (16-bit) or kept as NaN/0 (float).
    """
    enc = str(msg.encoding).lower()
    if enc not in DEPTH_ENCODINGS:
        raise ValueError(f'not a depth image encoding: {msg.encoding!r}')
    arr = image_msg_to_array(msg)[..., 0]
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(1000.0)
    return arr.astype(np.float32)


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """H x W x 3 uint8 RGB from a CompressedImage message (jpeg/png)."""
    buf = _as_bytes(msg.data)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'cannot decode compressed image (format {msg.format!r})')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
