"""Soak of a running fourd_node: many frames through it, its memory and per-frame time recorded.

`NodeSoak` is added to a test's or a script's own rclpy node. It plays a synthetic RGB-D clip
forward and back (with increasing stamps) on /camera/{image_raw,depth,camera_info} over
reliable QoS, one frame at a time: the next frame goes out when the node has published the
cloud of the last one (or after a timeout), so every frame is processed, faster than real time.
Every `sample_every` frames it reads the node process's resident memory (/proc, Linux) and the
node's own processing time and cache size from /diagnostics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.eval.soak import resident_mb
from fourd_ros.ros import conversions as conv

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class SoakTrace:
    """What a soak recorded, one row per sample.

    Attributes:
        frame: frames sent before the sample.
        rss_mb: node resident memory, MiB.
        processing_ms: the node's median processing time over its last 100 frames, ms.
        cache_mb: the node's latent cache size, MiB.
        timeouts: frames whose cloud did not come within the timeout.
    """

    frame: list[int] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    processing_ms: list[float] = field(default_factory=list)
    cache_mb: list[float] = field(default_factory=list)
    timeouts: int = 0


class NodeSoak:
    """Drives fourd_node frame by frame (see module docstring).

    Args:
        node: the driver's rclpy node.
        spin_once: spins the driver's node once, waiting at most the given seconds.
        pid: process id of the fourd_node under test.
        size: (width, height) of the frames, pixels.
        clip_frames: frames rendered for the forward-and-back loop. The default 51 makes the
            loop's period 100 frames, the window of the node's median processing time, so
            every sample of that median covers the same content (a window that covers 1.3
            periods, as with 40 frames, swung 17-31 ms with the phase).
        node_name: the node's fully qualified name (its topics are under it).
    """

    def __init__(self, node, spin_once, pid: int, size: tuple[int, int] = (96, 72),
                 clip_frames: int = 51, node_name: str = '/fourd') -> None:
        self.node, self.spin_once, self.pid = node, spin_once, pid
        self.clip = generate_clip(SceneConfig(frames=clip_frames, width=size[0],
                                              height=size[1], seed=0, fps=30.0,
                                              camera_motion='smooth'))
        n = len(self.clip)
        self.order = list(range(n)) + list(range(n - 2, 0, -1))
        self.pub_image = node.create_publisher(Image, '/camera/image_raw', RELIABLE)
        self.pub_depth = node.create_publisher(Image, '/camera/depth', RELIABLE)
        self.pub_info = node.create_publisher(CameraInfo, '/camera/camera_info', RELIABLE)
        self._last_cloud = None
        self._diag: dict[str, str] = {}
        self._clouds = node.create_subscription(PointCloud2, f'{node_name}/points',
                                                self._on_cloud, RELIABLE)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)

    def _on_cloud(self, msg: PointCloud2) -> None:
        self._last_cloud = msg.header.stamp

    def _on_diag(self, msg: DiagnosticArray) -> None:
        found = conv.fourd_status(msg)
        if found is not None:
            self._diag = found[0]

    def _spin_until(self, done, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if done():
                return True
            self.spin_once(0.005)
        return done()

    def _send(self, k: int, stamp: float) -> None:
        """Frame k of the loop with capture time `stamp` (s): camera_info, depth, image."""
        i = self.order[k % len(self.order)]
        clip = self.clip
        header = Header(stamp=conv.sec_to_stamp(stamp), frame_id='camera_optical_frame')
        rgb, depth = clip.rgb[i], clip.depth[i].astype(np.float32)
        h, w = depth.shape
        self.pub_info.publish(conv.pinhole_camera_info(clip.K, w, h, header))
        for pub, array, encoding in ((self.pub_depth, depth, '32FC1'),
                                     (self.pub_image, rgb, 'rgb8')):
            msg = Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                        step=array.strides[0])
            msg.data = np.ascontiguousarray(array).tobytes()
            pub.publish(msg)

    def run(self, frames: int, sample_every: int = 50, timeout: float = 5.0,
            progress=None) -> SoakTrace:
        """Send `frames` frames, one after the other's cloud; returns the samples."""
        trace = SoakTrace()
        # every topic matched both ways: a frame sent before would be lost on one of them
        pubs = (self.pub_image, self.pub_depth, self.pub_info)
        assert self._spin_until(lambda: all(p.get_subscription_count() > 0 for p in pubs)
                                and self._clouds.get_publisher_count() > 0, 60.0), \
            "the node never matched the camera's topics and its cloud topic"
        t0 = 1000.0
        for k in range(frames):
            stamp = t0 + k / 30.0
            self._send(k, stamp)
            sent = conv.sec_to_stamp(stamp)
            if not self._spin_until(lambda: self._last_cloud == sent, timeout):
                trace.timeouts += 1
            if (k + 1) % sample_every == 0:
                self._spin_until(lambda: False, 0.05)  # a fresh diagnostics message
                trace.frame.append(k + 1)
                rss = resident_mb(self.pid)
                if not np.isfinite(rss):
                    raise RuntimeError(f'no resident memory for process {self.pid} in /proc')
                trace.rss_mb.append(rss)
                trace.processing_ms.append(float(self._diag.get('processing_ms_p50', 'nan')))
                trace.cache_mb.append(float(self._diag.get('cache_mb', 'nan')))
            if progress is not None:
                progress(1)
        return trace


def soak_figures(trace: SoakTrace, cache_budget_mb: float) -> dict[str, float]:
    """The soak's verdict figures (the names `fourd bench` uses), both after warm-up (from a
    quarter of the run on): RSS growth, and the node's processing time over the last quarter
    of the run / over the second quarter (medians of the samples, each itself a median over
    the node's last 100 frames: one slow stretch of a shared machine does not decide the
    verdict). The first 100 frames are no baseline: tracks and segments start there."""
    n = len(trace.frame)
    quarter = max(1, n // 4)
    proc = np.asarray(trace.processing_ms)
    last = float(np.median(proc[n - max(1, n // 4):]))
    first = float(np.median(proc[quarter:max(quarter + 1, n // 2)]))
    return {'soak_rss_growth_mb': trace.rss_mb[-1] - trace.rss_mb[quarter],
            'soak_latency_ratio': last / first,
            'cache_budget_mb': cache_budget_mb, 'rss_last_mb': trace.rss_mb[-1],
            'cache_mb': trace.cache_mb[-1], 'timeouts': trace.timeouts,
            'frames': trace.frame[-1]}
