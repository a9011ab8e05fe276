"""Decode ``sensor_msgs/msg/Image`` / ``CompressedImage`` payloads to numpy (no ROS needed).

Works with any object that has the message fields (rosbags messages, rclpy messages).
Depth follows REP 118: ``16UC1`` / ``mono16`` in millimetres, ``32FC1`` in metres.

Compressed images are those of image_transport's plugins: ``compressed`` (a JPEG or PNG of the
colour image, format e.g. ``"rgb8; jpeg compressed bgr8"``) and ``compressedDepth``
(compressed_depth_image_transport: a 12-byte header (int32 format, float32 depthQuantA,
depthQuantB, little-endian) then a PNG of the 16-bit depth in mm for ``16UC1``, or of the
quantised inverse depth ``q = A / z + B`` for ``32FC1``, 0 = no depth; format e.g.
``"32FC1; compressedDepth png"``).
"""

from __future__ import annotations

from typing import Any

import struct

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


# compressed_depth_image_transport's ConfigHeader: int32 format, float32 depthParam[2]
_DEPTH_HEADER = struct.Struct('<iff')


def compressed_depth_msg_to_depth(msg: Any) -> np.ndarray:
    """H x W float32 depth in metres (NaN or 0 = none) from a ``compressedDepth`` message.

    Raises:
        ValueError: an unsupported format (RVL, not 16UC1 / 32FC1) or data that do not decode.
    """
    fmt = str(msg.format)
    encoding, _, compression = fmt.partition(';')
    encoding = encoding.strip().lower()
    if 'compresseddepth' not in compression.lower() and compression.strip():
        raise ValueError(f'not a compressedDepth image (format {fmt!r})')
    if 'rvl' in compression.lower():
        raise ValueError(f'compressedDepth RVL is not supported (format {fmt!r}); publish '
                         "png (the plugin's default format)")
    if encoding not in ('16uc1', 'mono16', '32fc1'):
        raise ValueError(f'compressedDepth of encoding {encoding!r} (supported: 16UC1, 32FC1)')
    buf = _as_bytes(msg.data)
    if buf.size <= _DEPTH_HEADER.size:
        raise ValueError(f'compressedDepth message of {buf.size} bytes has no image')
    _, quant_a, quant_b = _DEPTH_HEADER.unpack(buf[:_DEPTH_HEADER.size].tobytes())
    raw = cv2.imdecode(buf[_DEPTH_HEADER.size:], cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f'cannot decode compressedDepth image (format {fmt!r})')
    if encoding == '32fc1':
        q = raw.astype(np.float32)
        with np.errstate(divide='ignore'):
            return np.where(raw > 0, np.float32(quant_a) / (q - np.float32(quant_b)),
                            np.float32(np.nan)).astype(np.float32)
    return raw.astype(np.float32) / np.float32(1000.0)


def encode_compressed_depth(depth: np.ndarray, depth_max: float = 10.0,
                            depth_quantization: float = 100.0) -> tuple[str, bytes]:
    """(format, data) of a ``32FC1; compressedDepth png`` message of an H x W float32 depth
    in metres, as compressed_depth_image_transport makes it (its defaults: depth_max 10 m,
    depth_quantization 100): for simulated cameras and tests."""
    quant_a = np.float32(depth_quantization * (depth_quantization + 1.0))
    quant_b = np.float32(1.0 - quant_a / np.float32(depth_max))
    z = depth.astype(np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
        q = np.where(np.isfinite(z) & (z > 0) & (z < depth_max), quant_a / z + quant_b, 0.0)
    ok, png = cv2.imencode('.png', q.astype(np.uint16))
    if not ok:
        raise ValueError('PNG encoding of the depth failed')
    return ('32FC1; compressedDepth png',
            _DEPTH_HEADER.pack(0, float(quant_a), float(quant_b)) + png.tobytes())
