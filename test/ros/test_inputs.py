"""The node's input side (`fourd_ros.ros.inputs`): decoding, depth sync, calibration and input
loss, on messages built in the test (no DDS needed: these are the node's algorithms)."""

from __future__ import annotations

import struct
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg')

from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from fourd_ros.core.data.ros_image import encode_compressed_depth, SignificantBits  # noqa: E402
from fourd_ros.core.engine.engine import InputError  # noqa: E402
from fourd_ros.ros.conversions import sec_to_stamp  # noqa: E402
from fourd_ros.ros.inputs import (Calibration, DepthSync, InputLossMonitor,  # noqa: E402
                                  StampGaps, decode_depth, decode_image)


def image(array: np.ndarray, encoding: str, stamp: float = 0.0) -> Image:
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                step=array.strides[0])
    msg.header.stamp = sec_to_stamp(stamp)
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def test_decode_image_and_its_errors() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(image(rgb, 'rgb8')), rgb)
    assert np.array_equal(decode_image(image(rgb[..., ::-1].copy(), 'bgr8')), rgb)
    assert decode_image(image(rgb[..., 0].copy(), 'mono8')).shape == (4, 5, 3)
    with pytest.raises(InputError, match='unsupported image encoding'):
        decode_image(image(rgb[..., 0].astype(np.float32), '32FC1'))
    bad = image(rgb, 'rgb8')
    bad.step = 3
    with pytest.raises(InputError, match='inconsistent image'):
        decode_image(bad)
    with pytest.raises(InputError, match='empty image'):
        decode_image(image(np.zeros((0, 0, 3), np.uint8), 'rgb8'))


def test_decode_camera_encodings() -> None:
    """Bayer mosaics (each pattern as sensor_msgs names it), packed YUV 4:2:2 (UYVY and
    YUYV) and 16-bit images decode to the RGB they were made from."""
    rng = np.random.default_rng(1)
    rgb = cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3)).astype(np.uint8), (0, 0), 3)
    rgb = cv2.normalize(rgb, None, 0, 255, cv2.NORM_MINMAX)
    channel = {'r': 0, 'g': 1, 'b': 2}
    for pattern in ('rggb', 'bggr', 'gbrg', 'grbg'):
        mosaic = np.zeros(rgb.shape[:2], np.uint8)
        for colour, (dy, dx) in zip(pattern, ((0, 0), (0, 1), (1, 0), (1, 1))):
            mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[colour]]
        for bits, data in ((8, mosaic), (16, mosaic.astype(np.uint16) << 8)):
            got = decode_image(image(data, f'bayer_{pattern}{bits}'))
            # demosaicing interpolates: a few grey levels off on a smooth image, against
            # 30-40 for a wrong pattern
            assert np.abs(got.astype(int) - rgb).mean() < 4, (pattern, bits)
    for encoding, code in (('yuv422', cv2.COLOR_RGB2YUV_UYVY), ('uyvy', cv2.COLOR_RGB2YUV_UYVY),
                           ('yuv422_yuy2', cv2.COLOR_RGB2YUV_YUY2),
                           ('yuyv', cv2.COLOR_RGB2YUV_YUY2)):
        got = decode_image(image(cv2.cvtColor(rgb, code), encoding))
        assert np.abs(got.astype(int) - rgb).mean() < 4, encoding  # 4:2:2 halves the chroma
    with pytest.raises(InputError, match='even width'):
        decode_image(image(np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)[:, :63]),
                           'yuv422'))
    wide = rgb.astype(np.uint16) * 257  # 16 bits: the high byte is the 8-bit value
    assert np.array_equal(decode_image(image(wide, 'rgb16')), rgb)
    assert np.array_equal(decode_image(image(wide[..., ::-1].copy(), 'bgr16')), rgb)
    assert np.array_equal(decode_image(image(wide[..., 0].copy(), 'mono16'))[..., 1],
                          rgb[..., 0])


def test_16_bit_images_with_fewer_significant_bits_keep_their_brightness() -> None:
    """A 12-bit camera's data in the low bits of mono16 / rgb16: cv_bridge's high byte leaves
    it nearly black (image_bits 16); found from the data (image_bits 0) or set to 12, it comes
    back as the 8-bit image; the found depth only grows."""
    rgb = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    twelve = (rgb.astype(np.uint16) << 4) | 0xF  # 12 significant bits (and noise below)
    assert decode_image(image(twelve, 'rgb16')).max() <= 15  # the high byte: dark
    for bits in (SignificantBits(0), SignificantBits(12)):
        assert np.array_equal(decode_image(image(twelve, 'rgb16'), bits), rgb)
        assert np.array_equal(decode_image(image(twelve[..., 0].copy(), 'mono16'), bits)[..., 0],
                              rgb[..., 0])
    found = SignificantBits(0)
    dim = np.full((4, 4), 200, np.uint16)
    assert decode_image(image(dim, 'mono16'), found)[0, 0, 0] == 200 and found.bits == 8
    assert decode_image(image(dim * 10, 'mono16'), found)[0, 0, 0] == 2000 >> 4
    assert decode_image(image(dim, 'mono16'), found)[0, 0, 0] == 200 >> 4  # stays at 12
    assert found.bits == 12
    assert decode_image(image(np.full((4, 4), 65535, np.uint16), 'mono16'), found)[0, 0, 0] \
        == 255 and found.bits == 16
    fixed = SignificantBits(10)  # values above a fixed depth saturate
    assert decode_image(image(np.full((4, 4), 4095, np.uint16), 'mono16'), fixed)[0, 0, 0] \
        == 255
    for wrong in (1, 7, 17):
        with pytest.raises(ValueError, match='0 .from the data. or 8-16'):
            SignificantBits(wrong)
    # the same through image_transport's compressed: a 16-bit PNG (mono16, rgb16)
    for sent, fmt in ((twelve[..., ::-1], 'rgb16; png compressed bgr16'),
                      (twelve[..., 0], 'mono16; png compressed mono16')):
        _, png = cv2.imencode('.png', np.ascontiguousarray(sent))
        msg = CompressedImage(format=fmt, data=png.tobytes())
        want = rgb if sent.ndim == 3 else np.repeat(rgb[..., :1], 3, axis=2)
        assert np.array_equal(decode_image(msg, SignificantBits(0)), want), fmt
        assert decode_image(msg).max() <= 15, fmt  # the high byte: dark


def test_decode_depth_units_and_size() -> None:
    mm = np.array([[1000, 0], [2500, 65535]], np.uint16)
    depth = decode_depth(image(mm, '16UC1'), (2, 2))
    assert depth.dtype == np.float32 and np.allclose(depth, [[1.0, 0.0], [2.5, 65.535]])
    m = np.array([[1.5, np.nan], [np.inf, 2.0]], np.float32)
    assert np.array_equal(decode_depth(image(m, '32FC1'), (2, 2)), [[1.5, 0.0], [0.0, 2.0]])
    with pytest.raises(InputError, match='does not match image'):
        decode_depth(image(m, '32FC1'), (3, 2))
    with pytest.raises(InputError, match='unsupported depth encoding'):
        decode_depth(image(mm.astype(np.uint8), 'mono8'), (2, 2))


def test_decode_compressed_transports() -> None:
    """image_transport's compressed (JPEG/PNG) and compressedDepth (PNG, RVL) payloads."""
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0], rgb[:, :32, 1] = 200, 90
    _, png = cv2.imencode('.png', rgb[..., ::-1])
    msg = CompressedImage(format='rgb8; png compressed bgr8', data=png.tobytes())
    np.testing.assert_array_equal(decode_image(msg), rgb)
    depth = np.linspace(0.5, 4.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    depth[0, :5] = np.nan
    fmt, data = encode_compressed_depth(depth)
    out = decode_depth(CompressedImage(format=fmt, data=data), (48, 64))
    assert np.all(out[0, :5] == 0)  # no depth
    np.testing.assert_allclose(out[1:], depth[1:], rtol=1e-3)
    # 16UC1: the header, then a PNG of millimetres
    mm = (np.nan_to_num(depth) * 1000).astype(np.uint16)
    _, png16 = cv2.imencode('.png', mm)
    msg = CompressedImage(format='16UC1; compressedDepth png',
                          data=struct.pack('<iff', 0, 0.0, 0.0) + png16.tobytes())
    np.testing.assert_allclose(decode_depth(msg, (48, 64)), mm / 1000.0, rtol=1e-6)
    # what cannot be decoded gets a clear error (the node goes on with the next frame)
    with pytest.raises(InputError, match='cannot decode compressed image'):
        decode_image(CompressedImage(format='jpeg', data=b'not a jpeg'))
    # RVL-coded (its words as compressed_depth_image_transport packs them: zeros 2, nonzeros
    # 1, delta 5 -> nibbles 2, 1, 0xA, 1 from the top of one little-endian word)
    word = struct.pack('<iffII', 0, 0.0, 0.0, 3, 1) + struct.pack('<I', 0x21A10000)
    out = decode_depth(CompressedImage(format='16UC1; compressedDepth rvl', data=word), (1, 3))
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.005]])
    fmt_rvl, data_rvl = encode_compressed_depth(depth, 'rvl')
    out = decode_depth(CompressedImage(format=fmt_rvl, data=data_rvl), (48, 64))
    np.testing.assert_allclose(out[1:], depth[1:], rtol=1e-3)
    with pytest.raises(InputError, match='RVL data end before 64x48 pixels'):
        decode_depth(CompressedImage(format=fmt_rvl, data=data_rvl[:2000]), (48, 64))
    with pytest.raises(InputError, match='does not match image 32x24'):
        decode_depth(CompressedImage(format=fmt, data=data), (24, 32))
    with pytest.raises(InputError, match='has no image'):
        decode_depth(CompressedImage(format=fmt, data=data[:12]), (48, 64))


def test_depth_sync_takes_the_nearest_stamp_within_the_slop() -> None:
    sync = DepthSync(slop_s=0.02)
    d = np.ones((2, 2), np.float32)
    for t in (1.0, 1.1, 1.2):
        sync.add(image(d, '32FC1', t))
    assert sync.match(1.105).header.stamp == sec_to_stamp(1.1)
    t0 = time.monotonic()
    assert sync.match(1.15, wait_s=0.1) is None  # nothing within 20 ms: waited, then gave up
    assert time.monotonic() - t0 >= 0.09
    # depth arriving just after its image is waited for
    threading.Timer(0.05, lambda: sync.add(image(d, '32FC1', 1.3))).start()
    assert sync.match(1.3, wait_s=1.0).header.stamp == sec_to_stamp(1.3)
    sync.clear()
    assert sync.match(1.3, wait_s=0.0) is None


def test_calibration_scales_to_the_received_image() -> None:
    cal = Calibration(wait_s=0.0, patience_s=0.0)
    image = np.zeros((240, 320, 3), np.uint8)
    assert cal.describe() == 'no camera_info yet'
    cal.wait_first()  # no CameraInfo within the patience: images run without it
    assert cal.pinhole(image)[2] is None
    assert cal.describe() == 'no camera_info: intrinsics guessed'
    info = CameraInfo(width=640, height=480, distortion_model='plumb_bob')
    info.k = [500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0]
    cal.update(info)
    out, _, K = cal.pinhole(image)
    assert out is image
    assert np.isclose(K[0, 0], 250.0) and np.isclose(K[1, 1], 250.0)
    assert np.isclose(K[0, 2], 159.5) and np.isclose(K[1, 2], 119.5)
    info.k = [0.0] * 9  # uncalibrated camera (REP 104: K[0] == 0)
    cal.update(info)
    assert cal.pinhole(image)[2] is None and cal.describe() == 'uncalibrated'


def test_calibration_undistorts_raw_images_or_takes_rectified_ones_as_they_are() -> None:
    info = CameraInfo(width=320, height=240, distortion_model='plumb_bob')
    info.k = [250.0, 0.0, 159.5, 0.0, 250.0, 119.5, 0.0, 0.0, 1.0]
    info.d = [-0.3, 0.1, 0.0, 0.0, 0.0]
    info.p = [200.0, 0.0, 159.5, 0.0, 0.0, 200.0, 119.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    image = np.tile(np.arange(320, dtype=np.uint8)[None, :, None], (240, 1, 3))
    depth = np.full((240, 320), 2.0, np.float32)
    raw = Calibration(wait_s=0.0)
    raw.update(info)
    out, out_depth, K = raw.pinhole(image, depth)
    assert not np.array_equal(out, image) and K[0, 0] < 250.0  # undistorted, wider view
    assert np.nanmedian(out_depth) == 2.0
    # a raw pixel near the corner moves outwards in the undistorted image
    assert raw.describe() == 'plumb_bob, undistorted'
    corner = raw.pinhole_pixels(np.array([[10.0, 10.0]]), 320, 240)
    assert corner[0, 0] < 10.0 and corner[0, 1] < 10.0
    rect = Calibration(wait_s=0.0, rectified=True)
    rect.update(info)
    out, _, K = rect.pinhole(image)
    assert out is image and np.isclose(K[0, 0], 200.0)  # P's intrinsics
    assert np.array_equal(rect.pinhole_pixels(np.array([[10.0, 10.0]]), 320, 240), [[10, 10]])
    # a distortion model that cannot be undistorted: every frame says why (the node goes on)
    info.distortion_model = 'double_sphere'
    info.d = [0.1, 0.2, 0.0, 0.0, 0.0, 0.0]
    raw.update(info)
    with pytest.raises(InputError, match="camera_info: distortion model 'double_sphere'"):
        raw.pinhole(image)
    assert raw.describe().startswith("camera_info: distortion model 'double_sphere'")


def test_stamp_gaps_count_missing_frames() -> None:
    gaps = StampGaps()
    stamps = [0.1 * i for i in range(10)] + [1.2, 1.3, 1.7, 1.8]  # 1.0, 1.1, 1.4-1.6 missing
    lost = [gaps.add(t) for t in stamps]
    assert lost[10] == 2 and lost[12] == 3 and gaps.missing == 5 and gaps.received == 14
    # jitter of +-30 % is not loss
    jitter = StampGaps()
    t = 0.0
    for k in range(50):
        t += 0.1 * (1.3 if k % 2 else 0.7)
        jitter.add(t)
    assert jitter.missing == 0
    # a camera restart (stamps go back) is not loss either
    assert gaps.add(0.0) == 0 and gaps.add(0.1) == 0


def test_input_loss_monitor_warns_with_the_fix() -> None:
    mon = InputLossMonitor(slop_s=0.01)
    for i in range(40):
        t = 10.0 + 0.1 * i
        mon.add_depth(t)
        if i % 5 != 2:
            mon.add_image(t)
    report = mon.report('/opt/fastdds.xml')
    # the first gap (frame 2) comes before the period is known: 7 of the 8 are seen
    assert report.images_missing == 7 and report.depth_missing == 0
    assert report.depth_unmatched >= 6  # those older than a second are settled
    assert 'input loss' in report.warning and '/opt/fastdds.xml' in report.warning
    clean = InputLossMonitor(slop_s=0.01)
    for i in range(40):
        clean.add_depth(0.1 * i)
        clean.add_image(0.1 * i)
    assert clean.report('x').warning == '' and clean.report('x').depth_unmatched == 0


def test_the_floors_up_vector_comes_from_the_mounting() -> None:
    """camera_height's floor: base_frame's z axis in the optical frame, through a URDF-style
    chain (base_link -> camera_link pitched 15 deg down -> the optical rotation); the same as
    `GroundPlane.pitched`, which `fourd run --camera-pitch` uses."""
    from scipy.spatial.transform import Rotation

    from fourd_ros.core.geometry import make_pose
    from fourd_ros.core.types import GroundPlane
    from fourd_ros.ros.conversions import FrameTransforms, T_LINK_FROM_OPTICAL
    level = FrameTransforms(T_LINK_FROM_OPTICAL)
    assert np.allclose(level.up_in_camera(), [0.0, -1.0, 0.0])
    pitched = make_pose(Rotation.from_euler('y', 15, degrees=True).as_matrix(),
                        np.array([0.1, 0.0, 0.4]))
    up = FrameTransforms(pitched @ T_LINK_FROM_OPTICAL).up_in_camera()
    s, c = np.sin(np.radians(15)), np.cos(np.radians(15))
    assert np.allclose(up, [0.0, -c, -s])
    assert np.allclose(GroundPlane.pitched(0.4, 15.0).up, up)
