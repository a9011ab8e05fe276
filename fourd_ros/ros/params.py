"""Declared parameters of the fourd node: one table with defaults, descriptions and ranges.

Defaults match config/fourd.yaml. Read-only parameters need a restart (model/cache/topic set-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

from fourd_ros.core import map_cloud
from fourd_ros.core.backends.factory import STREAM_CHOICES


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    read_only: bool = True
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def choices_text(self) -> str:
        """The allowed values as one comma-separated list ('' when any value of the type is)."""
        return ', '.join(map(str, self.choices)) if self.choices else ''

    def descriptor(self, read_only: bool | None = None) -> ParameterDescriptor:
        """ROS's descriptor; `read_only` overrides the table's (a managed node takes these
        parameters while unconfigured and refuses them itself once configured)."""
        kind = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE,
                str: ParameterType.PARAMETER_STRING}[type(self.default)]
        text = self.description
        if self.choices:
            text += f' (one of: {self.choices_text})'
        d = ParameterDescriptor(name=self.name, type=kind, description=text,
                                read_only=self.read_only if read_only is None else read_only)
        if self.int_range:
            d.integer_range = [IntegerRange(from_value=self.int_range[0],
                                            to_value=self.int_range[1], step=1)]
        if self.float_range:
            d.floating_point_range = [FloatingPointRange(from_value=self.float_range[0],
                                                         to_value=self.float_range[1])]
        return d

    def check(self, value: Any) -> str:
        """Why `value` is not allowed ('' when it is): the choices, which ROS's descriptors
        cannot state (ranges and types rclpy checks itself)."""
        if self.choices and value not in self.choices:
            return f'parameter {self.name}: {value!r} is not one of {self.choices_text}'
        return ''


def params_usage(params: tuple[Param, ...]) -> list[str]:
    """Lines of a node's --help describing its parameters."""
    lines = []
    for p in params:
        choices = f' ({p.choices_text})' if p.choices else ''
        lines.append(f'  {p.name:<24} [{p.default!r}] {p.description}{choices}')
    return lines


PARAMS: tuple[Param, ...] = (
    # backend and resources
    Param('backend', 'auto', 'geometry/motion backend; auto = rgbd when the depth input is '
          'remapped (-r depth:=...), else learned', choices=STREAM_CHOICES),
    Param('device', 'auto', 'inference device of the learned backend: auto (cuda when '
          'available, else cpu), cpu, cuda or cuda:N'),
    Param('checkpoint', '', 'learned backend checkpoint path ("" = the one shipped)'),
    Param('processing_width', 320, 'processing width of the rgbd backend in pixels (height '
          'keeps the aspect ratio); 0 = input resolution; the learned backend works at its '
          "model's width (256), or the input's when smaller", int_range=(0, 4096)),
    Param('cache_budget_mb', 256.0, 'memory budget of the latent cache in host memory, MiB',
          float_range=(8.0, 65536.0)),
    Param('cache_device_budget_mb', 0.0, 'memory budget of the latent cache on the inference '
          "GPU (the learned model's keys/values), MiB; 0 = cache_budget_mb",
          float_range=(0.0, 65536.0)),
    Param('cache_recent_frames', 30, 'most recent frames always kept in the cache',
          int_range=(2, 10000)),
    Param('cache_max_keyframes', 32, 'keyframes kept in the cache besides the recent frames',
          int_range=(0, 10000)),
    Param('max_tracks', 256, 'cap on persistent tracked points', int_range=(0, 100000)),
    Param('max_query_points', 100000, 'largest number of points one query_motion call serves',
          int_range=(1, 10000000)),
    # inputs and QoS (the inputs are the relative names image, camera_info and depth: remapped,
    # not set by parameters)
    Param('image_qos', 'sensor_data', 'QoS of the image/depth/camera_info subscriptions '
          '(sensor_data: best effort, keep last 5; reliable: keep last 30, a second of a 30 Hz '
          'camera when the node stalls)',
          choices=('sensor_data', 'reliable')),
    Param('queue_size', 1, 'frames waiting for processing; the oldest is dropped when full '
          '(1 = latest first: a new frame replaces the waiting one, so the next frame processed '
          'is always the newest; larger queues process every frame of a burst, later)',
          int_range=(1, 100)),
    Param('image_transport', 'raw', "how the image comes (image_transport's names): raw = "
          "sensor_msgs/Image on 'image'; compressed = CompressedImage (JPEG/PNG) on "
          "'<image>/compressed'", choices=('raw', 'compressed')),
    Param('depth_image_transport', 'raw', "how the depth comes: raw = Image on 'depth'; "
          "compressedDepth = CompressedImage on '<depth>/compressedDepth' (PNG or RVL, 16UC1 or "
          '32FC1)',
          choices=('raw', 'compressedDepth')),
    Param('image_rectified', False, 'false: the image is raw (image_raw): when camera_info has '
          'distortion coefficients (plumb_bob, rational_polynomial, equidistant) the image and '
          'depth are undistorted before processing, and query pixels are given in the raw '
          'image; true: the image is already rectified (image_rect of image_proc): intrinsics '
          "from camera_info's P, distortion ignored"),
    Param('image_bits', 0, 'significant bits of 16-bit images (mono16, rgb16, bayer_*16): '
          'shifted down by image_bits - 8 to 8 bits; 16 = the high byte (cv_bridge); 0 = from '
          'the data: the smallest of 8, 10, 12, 14, 16 bits holding the largest value so far '
          '(10-14-bit machine-vision cameras in the low bits come out dark at 16)',
          int_range=(0, 16), choices=(0, *range(8, 17))),
    Param('use_camera_info', True, "false: no 'camera_info' subscription, for a camera "
          "without calibration: the intrinsics are guessed (the learned backend's focal "
          'length, else a 60 deg field of view) from the first image on, without the wait '
          'for a first CameraInfo'),
    Param('depth_sync_slop', 0.02, 'largest image/depth stamp difference, seconds',
          float_range=(0.0, 1.0)),
    # frames and TF (REP-105)
    Param('map_frame', 'map', 'fixed frame of map clouds, tracks, objects and query answers '
          'while this node publishes map -> odom; with publish_map_to_odom_tf false (or '
          'invert_odom_to_base_tf true) they are in odom_frame (map -> odom is then another '
          "node's, e.g. a SLAM's)"),
    Param('odom_frame', 'odom', "odometry frame (= base_frame at the node's first image; "
          'continuous across stream resets)'),
    Param('base_frame', 'camera_link', 'robot/body frame whose pose is published (base_link on '
          'a robot; camera_link on a handheld camera)'),
    Param('camera_frame', '', 'camera optical frame ("" = the image header frame_id)'),
    Param('publish_tf', True, 'publish odom -> base_frame on /tf', read_only=False),
    Param('invert_odom_to_base_tf', False, 'publish base_frame -> odom (the inverse) instead, '
          'for the one-parent rule when another odometry source owns odom -> base_frame',
          read_only=False),
    Param('publish_map_to_odom_tf', True, 'publish an identity map -> odom (turn off when '
          'another node owns map -> odom; not with invert_odom_to_base_tf, where odom is '
          "base_frame's child: a frame has one parent)", read_only=False),
    Param('publish_camera_tf', True, 'publish base_frame -> camera optical frame as the '
          'REP-103 optical rotation on /tf_static, unless the camera frame already has a '
          "parent on TF (a camera driver's chain, waited for up to 3 s after the first "
          'image: then that chain is used); false = look it up on /tf_static (a URDF, a '
          'camera driver: '
          'chains such as base_link -> camera_link -> camera_color_optical_frame)'),
    Param('camera_height', 0.0, "the camera's height above a flat floor it moves on, metres "
          "(a ground robot; the floor's normal is base_frame's z axis): the learned backend "
          'takes metres from the floor, /diagnostics metric turns true; 0 = unknown, '
          'monocular outputs up to scale', float_range=(0.0, 100.0)),
    Param('odom_position_variance', 1e-4, 'variance of the published position, m^2 (the '
          "Odometry pose covariance; the twist's is it over the frame interval squared); "
          'lost tracking publishes 1e6', float_range=(0.0, 1e6), read_only=False),
    Param('odom_orientation_variance', 1e-4, 'variance of the published orientation, rad^2 '
          '(as odom_position_variance)', float_range=(0.0, 1e6), read_only=False),
    # outputs
    Param('publish_points', True, 'publish the organized per-frame cloud ~/points',
          read_only=False),
    Param('publish_map_points', True, 'publish the accumulated cloud ~/map_points',
          read_only=False),
    Param('publish_tracks', True, 'publish ~/tracks and ~/track_markers', read_only=False),
    Param('publish_objects', True, 'publish ~/motion_mask, ~/objects and ~/object_markers',
          read_only=False),
    Param('map_voxel_size', map_cloud.VOXEL_SIZE,
          'voxel size of ~/map_points, metres (or scene units)', float_range=(0.001, 10.0)),
    Param('map_every_n_frames', map_cloud.UPDATE_EVERY,
          'publish ~/map_points every n processed frames', int_range=(1, 1000),
          read_only=False),
    Param('map_max_points', map_cloud.MAX_POINTS,
          'cap on ~/map_points size (a random subset of the voxels kept beyond it)',
          int_range=(1000, 10000000)),
    Param('path_max_size', 1024, 'poses kept in ~/path', int_range=(1, 1000000)),
    Param('trail_length', 10, 'positions per track trail in ~/track_markers',
          int_range=(2, 1000)),
    Param('markers_every_n_frames', 3, 'publish ~/track_markers every n processed frames',
          int_range=(1, 1000), read_only=False),
    Param('diagnostics_period', 1.0, 'seconds between /diagnostics messages',
          float_range=(0.1, 60.0)),
)

PARAMS_BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
