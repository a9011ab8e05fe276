"""What the rgbd backend's moving-segment labelling of the current frame costs per frame.

Runs the engine (rgbd, 320x240, seed 2: the node latency bench's scene, with large moving
objects) twice over the same 60 frames: as shipped, and with `current_segments` replaced by
one that reports no segment; prints the median frame time of each (frames 5-59).

Usage: .venv/bin/python scripts/measure_object_cost.py
"""

import time

import numpy as np

from fourd_ros.core.backends.rgbd import RgbdBackend, segment_motion
from fourd_ros.core.backends.rgbd.latent import SegmentMotions
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine


def median_frame_ms(clip) -> float:
    engine = StreamingEngine(RgbdBackend(), EngineConfig(width=320))
    times = []
    for i in range(len(clip)):
        t0 = time.perf_counter()
        engine.process(clip.frame(i))
        times.append(time.perf_counter() - t0)
    return float(np.median(times[5:]) * 1e3)


def no_segments(self, prev, cur, segments, dynamic, flow):
    return SegmentMotions(np.zeros(dynamic.shape, np.uint16), np.zeros((1, 4, 4), np.float32))


if __name__ == '__main__':
    clip = generate_clip(SceneConfig(frames=60, width=320, height=240, seed=2, fps=10.0))
    shipped = median_frame_ms(clip)
    segment_motion.SegmentMotionTracker.current_segments = no_segments
    without = median_frame_ms(clip)
    print(f'median frame time: {shipped:.1f} ms with moving segments, {without:.1f} ms '
          f'without ({shipped - without:+.1f} ms)')
