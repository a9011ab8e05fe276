"""The rgbd backend's dynamic mask (`MotionSegmenter`) on exact synthetic geometry."""

from __future__ import annotations

import numpy as np

from fourd_ros.core.backends.rgbd import RgbdConfig
from fourd_ros.core.backends.rgbd.segmentation import MotionSegmenter

H, W, F = 60, 80, 150.0   # image size (px), focal length (px)
WALL_Z, OBJECT_Z = 3.0, 1.5   # metres
STEP_PX = 2   # the object's motion per frame: 2 cm at 1.5 m, under the 3 %-of-depth threshold


def _frame(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A static camera (the world frame) sees a wall and a 40 px wide object entering from
    the left border: (world points H x W x 3, depth H x W, grey image, object mask) of frame
    ``t``."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    right = STEP_PX * t   # the object's columns are [right - 40, right)
    obj = (u < right) & (u >= right - 40) & (v >= 20) & (v < 40)
    z = np.where(obj, OBJECT_Z, WALL_Z)
    points = np.stack([(u - W / 2) * z / F, (v - H / 2) * z / F, z], axis=-1)
    texture_u = np.where(obj, u - right, u)   # the object's texture moves with it
    gray = (127 + 60 * np.sin(texture_u / 2.0) * np.cos(v / 3.0)).astype(np.uint8)
    return points.astype(np.float32), z.astype(np.float32), gray, obj


def _flow(t: int) -> np.ndarray:
    """Exact optical flow from frame ``t - 1`` to ``t`` (the object's pixels move right)."""
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0][_frame(t - 1)[3]] = STEP_PX
    return flow


def test_an_object_entering_the_view_is_flagged_while_it_enters() -> None:
    """One frame's motion is under the threshold, and the frame 6 back saw only a sliver of
    the object: the comparison with the frame 3 back finds the part that entered since."""
    cfg = RgbdConfig()
    K = np.array([[F, 0.0, W / 2], [0.0, F, H / 2], [0.0, 0.0, 1.0]])
    covered = {}
    for gaps in (cfg.segmentation_gaps, (1, 6)):
        segmenter = MotionSegmenter(gaps, cfg.dynamic_rel, cfg.dynamic_abs,
                                    cfg.still_photo_max, cfg.still_min_unexplained)
        points, _, gray, _ = _frame(0)
        segmenter.push(points, gray)
        for t in range(1, 11):
            points, depth, gray, obj = _frame(t)
            dynamic, _ = segmenter.dynamic_mask(points, _flow(t), gray, depth, np.eye(4), K)
            segmenter.push(points, gray)
        assert not dynamic[:, 30:].any()   # the wall beyond the object stays still
        covered[gaps] = dynamic[obj].mean()
    # frame 10: 20 px of the object in view, 14 of them seen 3 frames back, 8 six back
    assert covered[cfg.segmentation_gaps] > 0.6
    assert covered[(1, 6)] < 0.5
