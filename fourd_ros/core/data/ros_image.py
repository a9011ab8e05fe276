"""Decode ``sensor_msgs/msg/Image`` / ``CompressedImage`` payloads to numpy (no ROS needed).

Works with any object that has the message fields (rosbags messages, rclpy messages).
Depth follows REP 118: ``16UC1`` / ``mono16`` in millimetres, ``32FC1`` in metres.

Compressed images are those of image_transport's plugins: ``compressed`` (a JPEG or PNG of the
colour image, format e.g. ``"rgb8; jpeg compressed bgr8"``) and ``compressedDepth``
(compressed_depth_image_transport: a 12-byte header (int32 format, float32 depthQuantA,
depthQuantB, little-endian) then the 16-bit depth in mm for ``16UC1``, or the quantised inverse
depth ``q = A / z + B`` for ``32FC1`` (0 = no depth), as a PNG or RVL-coded (Wilson 2017:
uint32 width and height, then runs of zeros and zig-zag deltas of non-zeros in 3-bit
variable-length nibbles, packed 8 to a little-endian 32-bit word from its top); format e.g.
``"32FC1; compressedDepth png"``, ``"16UC1; compressedDepth rvl"``).
"""

from __future__ import annotations

from typing import Any

import struct

import cv2
import numba
import numpy as np

# Bayer mosaics as sensor_msgs names them (the 2 x 2 block's colours, row by row) -> OpenCV's
# demosaicing code (named after the second row's pattern; as cv_bridge maps them)
_BAYER = {'bayer_rggb': cv2.COLOR_BayerBG2RGB, 'bayer_bggr': cv2.COLOR_BayerRG2RGB,
          'bayer_gbrg': cv2.COLOR_BayerGR2RGB, 'bayer_grbg': cv2.COLOR_BayerGB2RGB}
# packed 4:2:2 YUV: sensor_msgs' yuv422 is UYVY (alias uyvy), yuv422_yuy2 is YUYV (alias yuyv)
_YUV422 = {'yuv422': cv2.COLOR_YUV2RGB_UYVY, 'uyvy': cv2.COLOR_YUV2RGB_UYVY,
           'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUY2, 'yuyv': cv2.COLOR_YUV2RGB_YUY2}

# encoding -> (numpy dtype, channels)
_ENCODINGS: dict[str, tuple[str, int]] = {
    'rgb8': ('u1', 3), 'bgr8': ('u1', 3), 'rgba8': ('u1', 4), 'bgra8': ('u1', 4),
    'mono8': ('u1', 1), '8uc1': ('u1', 1), '8uc3': ('u1', 3),
    'rgb16': ('u2', 3), 'bgr16': ('u2', 3), 'rgba16': ('u2', 4), 'bgra16': ('u2', 4),
    'mono16': ('u2', 1), '16uc1': ('u2', 1), '32fc1': ('f4', 1),
    **{f'{b}8': ('u1', 1) for b in _BAYER}, **{f'{b}16': ('u2', 1) for b in _BAYER},
    **{y: ('u1', 2) for y in _YUV422},
}
RGB_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8uc1', '8uc3', 'rgb16', 'bgr16',
                 'rgba16', 'bgra16', 'mono16', *(f'{b}{n}' for b in _BAYER for n in (8, 16)),
                 *_YUV422)
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


class SignificantBits:
    """How many low bits of a 16-bit image stream carry its data, for the 8-bit conversion.

    Machine-vision drivers publish 10-, 12- or 14-bit data in the low bits of mono16, rgb16 or
    bayer_*16; cv_bridge's 8-bit conversion keeps the high byte, which leaves such images
    nearly black. Fixed (``bits`` 8-16; 16 = cv_bridge's conversion) or, with ``bits`` 0,
    found from the stream: the smallest of 8, 10, 12, 14 and 16 bits that holds every value
    seen so far. It only grows (at most four times a stream), so the brightness stays put
    once the stream's brightest value has come. One per image stream, one thread.
    """

    def __init__(self, bits: int = 0) -> None:
        if bits != 0 and not 8 <= bits <= 16:
            raise ValueError(f'significant bits of 16-bit images: 0 (from the data) or 8-16, '
                             f'not {bits}')
        self.fixed = bits
        self.bits = bits or 8

    def of(self, arr: np.ndarray) -> int:
        """The bits of the stream with this 16-bit image in it."""
        if not self.fixed and self.bits < 16 and arr.size:  # at 16 no image can change it
            peak = int(arr.max())
            while peak >= 1 << self.bits and self.bits < 16:
                self.bits += 2
        return self.bits

    def to_8_bit(self, arr: np.ndarray) -> np.ndarray:
        """A 16-bit image (any shape) as uint8: shifted down by the stream's bits less 8,
        values above them saturated."""
        return np.minimum(arr >> (self.of(arr) - 8), 255).astype(np.uint8)


HIGH_BYTE = SignificantBits(16)  # cv_bridge's 8-bit conversion of 16-bit images


def image_msg_to_rgb(msg: Any, bits: SignificantBits | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB from a colour, mono, Bayer or packed YUV 4:2:2 Image message
    (`RGB_ENCODINGS`); 16-bit ones are shifted down by their significant bits less 8 (`bits`;
    None: 16, the high byte, as cv_bridge's 8-bit conversion does).

    Raises:
        ValueError: another encoding, or a buffer that does not hold the image.
    """
    enc = str(msg.encoding).lower()
    if enc not in RGB_ENCODINGS:
        raise ValueError(f'not a colour image encoding: {msg.encoding!r}')
    arr = image_msg_to_array(msg)
    if arr.dtype == np.uint16:
        arr = (bits or HIGH_BYTE).to_8_bit(arr)
    if enc in _YUV422:
        if arr.shape[1] % 2:
            raise ValueError(f'{enc} needs an even width, got {arr.shape[1]}')
        return cv2.cvtColor(arr, _YUV422[enc])
    if enc.startswith('bayer_'):
        return cv2.cvtColor(np.ascontiguousarray(arr[..., 0]), _BAYER[enc.rstrip('0123456789')])
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if enc in ('bgr8', '8uc3', 'bgr16'):
        return np.ascontiguousarray(arr[..., ::-1])
    if enc in ('bgra8', 'bgra16'):
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


def compressed_msg_to_rgb(msg: Any, bits: SignificantBits | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB from a CompressedImage message (jpeg/png); a 16-bit PNG (mono16 or
    rgb16 sent by image_transport's ``compressed``) shifted down as `image_msg_to_rgb` does."""
    buf = _as_bytes(msg.data)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'cannot decode compressed image (format {msg.format!r})')
    if img.dtype == np.uint16:
        img = (bits or HIGH_BYTE).to_8_bit(img)
    elif img.dtype != np.uint8:
        raise ValueError(f'compressed image of {img.dtype} samples (format {msg.format!r})')
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# compressed_depth_image_transport's ConfigHeader: int32 format, float32 depthParam[2]
_DEPTH_HEADER = struct.Struct('<iff')


def compressed_depth_msg_to_depth(msg: Any) -> np.ndarray:
    """H x W float32 depth in metres (NaN or 0 = none) from a ``compressedDepth`` message.

    Raises:
        ValueError: an unsupported format (not 16UC1 / 32FC1) or data that do not decode.
    """
    fmt = str(msg.format)
    encoding, _, compression = fmt.partition(';')
    encoding, compression = encoding.strip().lower(), compression.strip().lower()
    if compression and 'compresseddepth' not in compression:
        raise ValueError(f'not a compressedDepth image (format {fmt!r})')
    if encoding not in ('16uc1', 'mono16', '32fc1'):
        raise ValueError(f'compressedDepth of encoding {encoding!r} (supported: 16UC1, 32FC1)')
    buf = _as_bytes(msg.data)
    if buf.size <= _DEPTH_HEADER.size:
        raise ValueError(f'compressedDepth message of {buf.size} bytes has no image')
    _, quant_a, quant_b = _DEPTH_HEADER.unpack(buf[:_DEPTH_HEADER.size].tobytes())
    payload = buf[_DEPTH_HEADER.size:]
    raw = _rvl_decode(payload, fmt) if compression.endswith('rvl') else \
        cv2.imdecode(payload, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f'cannot decode compressedDepth image (format {fmt!r})')
    if encoding == '32fc1':
        q = raw.astype(np.float32)
        with np.errstate(divide='ignore'):
            return np.where(raw > 0, np.float32(quant_a) / (q - np.float32(quant_b)),
                            np.float32(np.nan)).astype(np.float32)
    return raw.astype(np.float32) / np.float32(1000.0)


def encode_compressed_depth(depth: np.ndarray, compression: str = 'png',
                            depth_max: float = 10.0, depth_quantization: float = 100.0
                            ) -> tuple[str, bytes]:
    """(format, data) of a ``32FC1; compressedDepth png|rvl`` message of an H x W float32 depth
    in metres, as compressed_depth_image_transport makes it (its defaults: depth_max 10 m,
    depth_quantization 100): for simulated cameras and tests."""
    quant_a = np.float32(depth_quantization * (depth_quantization + 1.0))
    quant_b = np.float32(1.0 - quant_a / np.float32(depth_max))
    z = depth.astype(np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
        q = np.where(np.isfinite(z) & (z > 0) & (z < depth_max), quant_a / z + quant_b, 0.0)
    q = q.astype(np.uint16)
    if compression == 'rvl':
        h, w = q.shape
        payload = struct.pack('<II', w, h) + _rvl_words(q.ravel()).astype('<u4').tobytes()
    else:
        ok, png = cv2.imencode('.png', q)
        if not ok:
            raise ValueError('PNG encoding of the depth failed')
        payload = png.tobytes()
    return (f'32FC1; compressedDepth {compression}',
            _DEPTH_HEADER.pack(0, float(quant_a), float(quant_b)) + payload)


def _rvl_decode(payload: np.ndarray, fmt: str) -> np.ndarray:
    """H x W uint16 of an RVL payload (uint32 width, height, then the coded words)."""
    if payload.size < 8:
        raise ValueError(f'compressedDepth RVL payload of {payload.size} bytes (format {fmt!r})')
    w, h = struct.unpack('<II', payload[:8].tobytes())
    words = np.frombuffer(payload[8:8 + (payload.size - 8) // 4 * 4].tobytes(), '<u4')
    # the best case codes 4 pixels a byte: more pixels than that is a corrupt header
    if w == 0 or h == 0 or w * h > 8 * max(words.size * 4, 1):
        raise ValueError(f'compressedDepth RVL image of {w}x{h} in {payload.size} bytes '
                         f'(format {fmt!r})')
    out = _rvl_decode_words(words.astype(np.uint32), w * h)
    if out is None:
        raise ValueError(f'compressedDepth RVL data end before {w}x{h} pixels (format {fmt!r})')
    return out.reshape(h, w)


@numba.njit(cache=True, nogil=True)
def _rvl_decode_words(words: np.ndarray, n: int):  # -> np.ndarray | None
    """n uint16 values of RVL words, or None when the words run out first."""
    out = np.zeros(n, np.uint16)
    state = np.zeros(3, np.int64)  # next word, nibbles left in the current one, the word
    i, previous = 0, 0
    while i < n:
        zeros = _vle(words, state)
        nonzeros = _vle(words, state)
        if zeros < 0 or nonzeros < 0 or i + zeros + nonzeros > n:
            return None
        i += zeros
        for _ in range(nonzeros):
            positive = _vle(words, state)
            if positive < 0:
                return None
            previous = (previous + ((positive >> 1) ^ -(positive & 1))) & 0xFFFF
            out[i] = previous
            i += 1
    return out


@numba.njit(cache=True, nogil=True)
def _vle(words: np.ndarray, state: np.ndarray) -> int:
    """The next variable-length value (3-bit groups, lowest first; -1 past the end)."""
    value, shift = 0, 0
    while True:
        if state[1] == 0:
            if state[0] >= len(words) or shift > 30:
                return -1
            state[2] = words[state[0]]
            state[0] += 1
            state[1] = 8
        nibble = (state[2] >> 28) & 0xF
        state[2] = (state[2] << 4) & 0xFFFFFFFF
        state[1] -= 1
        value |= (nibble & 0x7) << shift
        shift += 3
        if not nibble & 0x8:
            return value


@numba.njit(cache=True, nogil=True)
def _rvl_words(values: np.ndarray) -> np.ndarray:
    """RVL words of uint16 values (the encoder, for simulated cameras and tests)."""
    out = np.zeros(len(values) * 2 + 4, np.uint32)
    state = np.zeros(3, np.int64)  # words written, nibbles in the current one, the word
    previous, i, n = 0, 0, len(values)
    while i < n:
        zeros = 0
        while i < n and values[i] == 0:
            zeros += 1
            i += 1
        _put_vle(out, state, zeros)
        nonzeros = 0
        while i + nonzeros < n and values[i + nonzeros] != 0:
            nonzeros += 1
        _put_vle(out, state, nonzeros)
        for _ in range(nonzeros):
            delta = int(values[i]) - previous
            _put_vle(out, state, (delta << 1) ^ (delta >> 31))
            previous = int(values[i])
            i += 1
    if state[1]:
        out[state[0]] = (state[2] << (4 * (8 - state[1]))) & 0xFFFFFFFF
        state[0] += 1
    return out[:state[0]]


@numba.njit(cache=True, nogil=True)
def _put_vle(out: np.ndarray, state: np.ndarray, value: int) -> None:
    while True:
        nibble = value & 0x7
        value >>= 3
        if value:
            nibble |= 0x8
        state[2] = ((state[2] << 4) | nibble) & 0xFFFFFFFF
        state[1] += 1
        if state[1] == 8:
            out[state[0]] = state[2]
            state[0] += 1
            state[1] = 0
            state[2] = 0
        if not value:
            return
