"""RGB-D backend (cameras with registered metric depth): see ``backend.py`` for the method and a
map of the package's modules."""

from fourd_ros.core.backends.rgbd.backend import RgbdBackend
from fourd_ros.core.backends.rgbd.config import OdometryConfig, RgbdConfig, SegmentMotionConfig

__all__ = ['OdometryConfig', 'RgbdBackend', 'RgbdConfig', 'SegmentMotionConfig']
