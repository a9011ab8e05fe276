"""Sequence files written for tests: a rosbag2 of a camera (what `fourd run` and the readers
read from a robot's recording)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fourd_ros.core.data import ros_image


def write_bag(path: Path, images: list[np.ndarray], K: np.ndarray, storage: str = 'sqlite3',
              depths_mm: list[np.ndarray] | None = None, d: tuple[float, ...] = (0.0,) * 5,
              p: tuple[float, ...] = (0.0,) * 12, compressed: bool = False) -> None:
    """A bag of RGB `images` at 10 Hz from 5 s on: colour (Image bgr8, or image_transport's
    compressed PNG) on /camera/color/image_raw, CameraInfo (intrinsics `K`, distortion `d`,
    projection `p`) and, when given, registered depth 3 ms later (Image 16UC1 millimetres, or
    compressedDepth 32FC1) on /camera/depth/image_raw. Receive order: image, depth, info."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image = ts.types['sensor_msgs/msg/Image']
    CameraInfo = ts.types['sensor_msgs/msg/CameraInfo']
    Compressed = ts.types['sensor_msgs/msg/CompressedImage']
    Header = ts.types['std_msgs/msg/Header']
    Time = ts.types['builtin_interfaces/msg/Time']
    Roi = ts.types['sensor_msgs/msg/RegionOfInterest']

    def header(t_ns: int, frame_id: str) -> object:
        return Header(stamp=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id=frame_id)

    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        img_type = Compressed.__msgtype__ if compressed else Image.__msgtype__
        c_img = writer.add_connection('/camera/color/image_raw' + '/compressed' * compressed,
                                      img_type, typestore=ts)
        c_info = writer.add_connection('/camera/color/camera_info', CameraInfo.__msgtype__,
                                       typestore=ts)
        c_depth = None if depths_mm is None else writer.add_connection(
            '/camera/depth/image_raw' + '/compressedDepth' * compressed, img_type, typestore=ts)
        for i, rgb in enumerate(images):
            t = 5 * 10**9 + i * 100_000_000
            h, w = rgb.shape[:2]
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            img = Image(header=header(t, 'cam'), height=h, width=w, encoding='bgr8',
                        is_bigendian=0, step=w * 3, data=bgr.reshape(-1))
            if compressed:
                img = Compressed(header=header(t, 'cam'), format='bgr8; png compressed bgr8',
                                 data=cv2.imencode('.png', bgr)[1].reshape(-1))
            info = CameraInfo(header=header(t, 'cam'), height=h, width=w,
                              distortion_model='plumb_bob', d=np.array(d),
                              k=np.asarray(K, np.float64).reshape(-1),
                              r=np.eye(3).reshape(-1), p=np.array(p), binning_x=0,
                              binning_y=0,
                              roi=Roi(x_offset=0, y_offset=0, height=0, width=0,
                                      do_rectify=False))
            writer.write(c_img, t + 1000, ts.serialize_cdr(img, img_type))
            if c_depth is not None:
                dmm = np.asarray(depths_mm[i], np.uint16)
                dh, dw = dmm.shape
                depth = Image(header=header(t + 3_000_000, 'cam'), height=dh, width=dw,
                              encoding='16UC1', is_bigendian=0, step=dw * 2,
                              data=dmm.view(np.uint8).reshape(-1))
                if compressed:
                    fmt, data = ros_image.encode_compressed_depth(dmm / np.float32(1000.0))
                    depth = Compressed(header=header(t + 3_000_000, 'cam'), format=fmt,
                                       data=np.frombuffer(data, np.uint8))
                writer.write(c_depth, t + 5_000_000, ts.serialize_cdr(depth, img_type))
            writer.write(c_info, t + 6_000_000,
                         ts.serialize_cdr(info, CameraInfo.__msgtype__))
