"""fourd_synthetic_camera: publishes a procedural dynamic scene as a live RGB-D camera.

Topics (absolute by default, under `~camera_ns`, default /camera):
  image_raw (rgb8; rgb16 with `image_bits` > 8), camera_info, depth (32FC1 metres,
  registered), ground_truth/pose
  (geometry_msgs/PoseStamped of the camera optical frame in `world_frame`, which coincides with
  fourd_node's map frame when its base_frame -> camera transform is the standard optical
  rotation).
The clip is rendered once at start-up and played forwards and backwards (ping-pong), so the
camera and the objects move continuously for as long as the node runs; stamps are the clock's.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
from rclpy.node import Node

from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from fourd_ros.core.data.camera_model import Distortion, Undistorter, distort_image
from fourd_ros.core.data.ros_image import encode_compressed_depth
from fourd_ros.core.data.synthetic import CAMERA_MOTIONS, SceneConfig, generate_clip
from fourd_ros.ros import conversions as conv
from fourd_ros.ros.params import Param, params_usage
from fourd_ros.ros.spin import run_node


CAMERA_PARAMS: tuple[Param, ...] = (
    Param('seed', 2, 'scene seed'),
    Param('frames', 60, 'rendered frames (ping-pong loop)'),
    Param('width', 320, 'image width, px'),
    Param('height', 240, 'image height, px'),
    Param('rate', 10.0, 'publishing rate, Hz', read_only=False),
    Param('scene_fps', 30.0, 'frame rate the scene motion is rendered for, Hz'),
    Param('camera_motion', 'smooth', "the camera's path: smooth (hand-held), static, rotation, "
          "or ground (a ground robot's camera: planar path at a fixed height, pitched down)",
          choices=CAMERA_MOTIONS),
    Param('camera_ns', '/camera', 'topic namespace'),
    Param('frame_id', 'camera_optical_frame', 'optical frame of the images'),
    Param('world_frame', 'map', 'frame of the GT pose', read_only=False),
    Param('max_frames', 0, 'stop after n frames (0 = never)', read_only=False),
    Param('publish_depth', True, 'publish the depth image (false = a monocular camera)'),
    Param('image_transport', 'raw', 'compressed: publish image_raw/compressed (JPEG, quality 95) '
          'and depth/compressedDepth (PNG) instead of the raw images, named and encoded as '
          'image_transport plugins do (a camera behind a narrow link)',
          choices=('raw', 'compressed')),
    Param('image_bits', 8, 'significant bits of the colour image: 8 = rgb8; 9-16 = rgb16 '
          '(raw; compressed: a 16-bit PNG) with the data in the low bits, as machine-vision '
          'cameras send it', int_range=(8, 16)),
    Param('distortion_k1', 0.0, 'radial lens distortion k1 of the images (plumb_bob; < 0: '
          'barrel); camera_info carries it, with P of the undistorted image',
          float_range=(-0.5, 0.5)),
)


def usage() -> str:
    """`fourd_synthetic_camera --help`."""
    return '\n'.join([
        'usage: fourd_synthetic_camera [-h] [--ros-args [-p NAME:=VALUE]...]', '',
        'Publishes a procedural dynamic scene with exact ground truth as a live RGB-D camera:',
        '<camera_ns>/image_raw (rgb8, or rgb16 by image_bits), camera_info, depth (32FC1 m,',
        'registered) and ground_truth/pose (PoseStamped of the optical frame in world_frame).',
        '',
        'parameters (default in brackets):', *params_usage(CAMERA_PARAMS)])


class SyntheticCamera(Node):
    """Publishes a synthetic RGB-D clip at a fixed rate (see module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__('synthetic_camera', **kwargs)
        for p in CAMERA_PARAMS:
            self.declare_parameter(p.name, p.default, p.descriptor())
        g = self.get_parameter
        cfg = SceneConfig(frames=g('frames').value, width=g('width').value,
                          height=g('height').value, seed=g('seed').value,
                          fps=g('scene_fps').value, camera_motion=g('camera_motion').value)
        self.get_logger().info(f'rendering {cfg.frames} frames of scene {cfg.seed} '
                               f'at {cfg.width}x{cfg.height}...')
        self.clip = generate_clip(cfg)
        self.lens = Distortion('plumb_bob', (g('distortion_k1').value, 0.0, 0.0, 0.0, 0.0))
        # what a camera with this lens sees (the ground truth stays the pinhole clip's)
        self.rgb, self.depth = self.clip.rgb, self.clip.depth
        self.P = self.clip.K
        if not self.lens.is_pinhole:
            self.rgb = np.stack([distort_image(im, self.clip.K, self.lens) for im in self.rgb])
            self.depth = np.stack([distort_image(d.astype(np.float32), self.clip.K, self.lens,
                                                 depth=True) for d in self.depth])
            self.P = Undistorter(self.clip.K, self.lens, (cfg.width, cfg.height)).K
        n = len(self.clip)
        self.order = list(range(n)) + list(range(n - 2, 0, -1)) if n > 1 else [0]
        ns = g('camera_ns').value.rstrip('/')
        self.frame_id = g('frame_id').value
        self.compressed = g('image_transport').value == 'compressed'
        if self.compressed:
            self.pub_image = self.create_publisher(CompressedImage,
                                                   f'{ns}/image_raw/compressed', 10)
        else:
            self.pub_image = self.create_publisher(Image, f'{ns}/image_raw', 10)
        self.pub_info = self.create_publisher(CameraInfo, f'{ns}/camera_info', 10)
        self.pub_depth = None
        if g('publish_depth').value:
            self.pub_depth = self.create_publisher(
                *((CompressedImage, f'{ns}/depth/compressedDepth') if self.compressed
                  else (Image, f'{ns}/depth')), 10)
        self.pub_pose = self.create_publisher(PoseStamped, f'{ns}/ground_truth/pose', 10)
        self.image_bits = g('image_bits').value  # read-only
        self.count = 0
        self.timer = self.create_timer(1.0 / g('rate').value, self._tick)
        self.get_logger().info(f'publishing on {ns}/{{image_raw,camera_info,depth}} at '
                               f"{g('rate').value} Hz")

    def _tick(self) -> None:
        max_frames = self.get_parameter('max_frames').value
        if max_frames and self.count >= max_frames:
            return
        i = self.order[self.count % len(self.order)]
        self.count += 1
        stamp = self.get_clock().now().to_msg()
        header = Header(stamp=stamp, frame_id=self.frame_id)
        clip = self.clip
        h, w = clip.depth.shape[1:]
        bits = self.image_bits
        rgb = (self.rgb[i] if bits == 8
               else self.rgb[i].astype(np.uint16) << np.uint16(bits - 8))
        if self.compressed and bits == 8:
            _, jpeg = cv2.imencode('.jpg', rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            self.pub_image.publish(CompressedImage(
                header=header, format='rgb8; jpeg compressed bgr8', data=jpeg.tobytes()))
        elif self.compressed:
            _, png = cv2.imencode('.png', np.ascontiguousarray(rgb[..., ::-1]))
            self.pub_image.publish(CompressedImage(
                header=header, format='rgb16; png compressed bgr16', data=png.tobytes()))
        else:
            self.pub_image.publish(_image(header, rgb, 'rgb8' if bits == 8 else 'rgb16',
                                          w * 3 * rgb.itemsize))
        if self.pub_depth is not None and self.compressed:
            fmt, data = encode_compressed_depth(self.depth[i])
            self.pub_depth.publish(CompressedImage(header=header, format=fmt, data=data))
        elif self.pub_depth is not None:
            self.pub_depth.publish(_image(header, self.depth[i].astype(np.float32), '32FC1',
                                          w * 4))
        info = CameraInfo(header=header, width=w, height=h,
                          distortion_model=self.lens.model)
        info.k = [float(x) for x in clip.K.ravel()]
        info.d = [float(x) for x in self.lens.coeffs]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        P = self.P
        info.p = [P[0, 0], 0.0, P[0, 2], 0.0, 0.0, P[1, 1], P[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0]
        self.pub_info.publish(info)
        T_map_cam = conv.T_LINK_FROM_OPTICAL @ clip.T_wc[i]
        self.pub_pose.publish(conv.make_pose_stamped(
            T_map_cam, self.get_parameter('world_frame').value, stamp))


def _image(header: Header, array: np.ndarray, encoding: str, step: int) -> Image:
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=0, step=step)
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def main(args: list[str] | None = None) -> int:
    return run_node('fourd_synthetic_camera', SyntheticCamera, usage, args)


if __name__ == '__main__':
    sys.exit(main())
