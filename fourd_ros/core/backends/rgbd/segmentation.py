"""Which pixels move, and which moving segment a pixel belongs to.

`MotionSegmenter` gives each frame's dynamic mask (DPM-style: a point moves when its world
displacement exceeds a share of its depth), `attach_to_segments` assigns query pixels to
segments, and `main_parts` drops a segment's stray pieces. World points in metres, pixels at the
processing resolution.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from scipy import ndimage

from fourd_ros.core.backends.rgbd.flow import splat_mask_at
from fourd_ros.core.backends.rgbd.mask_kernels import moved_points, still_explained, with_channel
from fourd_ros.core.flow import advance, flow_targets
from fourd_ros.core.geometry import invert_pose


class MotionSegmenter:
    """Dynamic masks frame after frame: each new frame's world points are compared with those
    of a few earlier frames (flows composed), all but one comparison on a worker thread
    (`close` stops it).

    Args:
        gaps: frames back that the mask compares with (1 = the previous frame); fewer at the
            start of a stream.
        dynamic_rel, dynamic_abs: a point moves when its world displacement exceeds
            max(dynamic_rel * depth, dynamic_abs) (metres).
        still_photo_max, still_min_unexplained: a moving part is dropped when staying still
            explains all but less than ``still_min_unexplained`` of its pixels (depth agrees,
            grey level within ``still_photo_max``); 0 keeps every part.
    """

    def __init__(self, gaps: tuple[int, ...], dynamic_rel: float, dynamic_abs: float,
                 still_photo_max: float = 10.0, still_min_unexplained: float = 0.0) -> None:
        self.dynamic_rel = dynamic_rel
        self.dynamic_abs = dynamic_abs
        self.still_photo_max = still_photo_max
        self.still_min_unexplained = still_min_unexplained
        # recent frames' world points, grey images and where their pixels are now
        self.gaps = tuple(gaps)
        self._history: deque[dict[str, np.ndarray | None]] = deque(maxlen=max(self.gaps))
        self._worker = ThreadPoolExecutor(1, thread_name_prefix='rgbd-dynamic-mask')

    def close(self) -> None:
        """Stop the worker thread."""
        self._worker.shutdown()

    def clear(self) -> None:
        """Forget the history (tracking was lost: world motion since then is unknown)."""
        self._history.clear()

    def push(self, points_world: np.ndarray, gray: np.ndarray) -> None:
        """Add a processed frame's H x W x 3 world points and H x W uint8 grey image (after
        `dynamic_mask` of that frame)."""
        self._history.append({'points_world': points_world, 'gray': gray, 'reach': None})

    def _follow(self, flow: np.ndarray) -> None:
        """Carry every history frame's pixels into the current frame along ``flow`` (from the
        last pushed frame to it): each keeps where its pixels are now (``reach``: x and y maps,
        H x W float32), so a frame k back costs one remap per frame, not k."""
        flow = np.ascontiguousarray(flow, np.float32)
        for entry in self._history:
            if entry['reach'] is None:  # the last pushed frame
                entry['reach'] = flow_targets(flow)
                continue
            x, y = entry['reach']
            advance(x, y, cv2.remap(flow, x, y, cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE))

    def dynamic_mask(self, cur_world: np.ndarray, flow: np.ndarray, cur_gray: np.ndarray,
                     cur_depth: np.ndarray, T_wc: np.ndarray, K: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """H x W bool dynamic mask of the current frame, from its world points ``cur_world``
        (H x W x 3), the optical flow ``flow`` from the last pushed frame to it, its grey image,
        depth (metres, NaN = none), camera-to-world pose and intrinsics; and the mask with the
        parts that staying still explains kept (what the camera tracking stays off).

        Displacements are measured against the frames ``gaps`` back (flows composed): slow
        objects move too little in one frame to stand out of the depth noise, and the parts of
        an object that entered the view were not seen by the oldest frame. A moving part that
        staying still explains almost wholly is dropped (`_drop_still_parts`): the flow slid
        on a textureless static surface (7-Scenes: most of the falsely moving pixels), while a
        moving object, even a textureless one, shows its motion at least at its edges. Needs
        a pushed frame.
        """
        self._follow(flow)
        frames = list(self._history)
        # the current frame as the staying-still check samples it, built once for every
        # comparison
        cur_seen = (with_channel(cur_depth), with_channel(cur_gray), invert_pose(T_wc),
                    np.asarray(K, np.float64))

        def compare(old: dict[str, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
            """This frame's pixels that moved since the earlier frame ``old``, and those of
            them that staying still does not explain."""
            x, y = old['reach']
            moved = self._moved_prev_pixels(old['points_world'], cur_world, x, y)
            kept = moved
            if self.still_min_unexplained > 0:
                kept = self._drop_still_parts(
                    moved, self._still_explains(old, moved, *cur_seen))
            # isolated "moving" pixels are depth noise or mixed pixels at depth edges
            moved_here = splat_mask_at(_opened(moved), x, y)
            # most frames drop no part: the same mask, opened and moved once
            return moved_here, (moved_here if kept is moved
                                else splat_mask_at(_opened(kept), x, y))

        olds = [frames[k] for k in sorted({max(0, len(frames) - gap) for gap in self.gaps})]
        # the comparisons are independent and mostly compiled loops and OpenCV calls that
        # release the GIL: all but the last on the worker thread
        jobs = [self._worker.submit(compare, old) for old in olds[:-1]]
        results = [compare(olds[-1])] + [job.result() for job in jobs]
        dynamic = np.zeros(cur_world.shape[:2], bool)
        flagged = np.zeros(cur_world.shape[:2], bool)
        for moved_here, kept_here in results:
            flagged |= moved_here
            dynamic |= kept_here
        return dynamic, flagged

    def _drop_still_parts(self, moved: np.ndarray, still: np.ndarray) -> np.ndarray:
        """``moved`` without its connected parts that staying still explains almost wholly
        (``still``): less than ``still_min_unexplained`` of their pixels show motion."""
        if not still.any():  # nothing explained: every part stays
            return moved
        count, parts = cv2.connectedComponents(moved.astype(np.uint8), connectivity=8)
        if count <= 1:
            return moved
        size = np.bincount(parts.ravel(), minlength=count)
        explained = np.bincount(parts[still], minlength=count)
        keep = (size - explained) >= self.still_min_unexplained * size
        if keep[1:].all():
            return moved
        keep[0] = False
        return keep[parts]

    def _still_explains(self, old: dict[str, np.ndarray | None], candidates: np.ndarray,
                        cur_depth: np.ndarray, cur_gray: np.ndarray, T_cw: np.ndarray,
                        K: np.ndarray) -> np.ndarray:
        """H x W bool, on the earlier frame ``old``'s grid: the ``candidates`` pixels that
        staying still explains. Kept in place, such a point projects into the current camera
        (world to camera ``T_cw``, intrinsics ``K``) onto depth that agrees with it (within
        the moving threshold) and a grey level within ``still_photo_max`` of its own; the
        current depth and grey image as `mask_kernels.with_channel` gives them."""
        if not candidates.any():
            return np.zeros(candidates.shape, bool)
        return still_explained(candidates, old['points_world'], old['gray'], T_cw, K,
                               cur_depth, cur_gray, self.dynamic_rel, self.dynamic_abs,
                               self.still_photo_max)

    def _moved_prev_pixels(self, prev_world: np.ndarray, cur_world: np.ndarray,
                           x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which earlier-frame pixels moved in the world (mask in that frame's coordinates);
        ``x``, ``y``: where its pixels are in the current frame (H x W float32)."""
        # distance from the camera, not world z, sets the noise level; prev_world z is close
        # enough at the scale of this threshold for the first camera's neighbourhood
        return moved_points(prev_world, cur_world, x, y, np.float32(self.dynamic_rel),
                            np.float32(self.dynamic_abs))


def _opened(mask: np.ndarray) -> np.ndarray:
    """``mask`` after a 3x3 morphological opening (isolated pixels removed)."""
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN,
                            np.ones((3, 3), np.uint8)).astype(bool)


def attach_to_segments(labels: np.ndarray, dynamic_mask: np.ndarray, depth: np.ndarray,
                       iu: np.ndarray, iv: np.ndarray, max_px: float, depth_abs: float,
                       depth_rel: float) -> np.ndarray:
    """Segment label (0 = none) of each query pixel (columns `iu`, rows `iv`) of a frame.

    `labels` are the frame's moving segments (H x W ints), `dynamic_mask` its moving pixels,
    `depth` its depth (metres). A moving pixel just outside every segment (segments keep only
    the pixels their motion explains well, and a fine texture may fail that on the object
    itself) takes the label of the nearest segment pixel within `max_px` pixels when their
    depths agree within max(depth_abs, depth_rel * depth): the same surface. Pixels not flagged
    as moving keep their own label.
    """
    query_seg = labels[iv, iu]
    loose = (query_seg == 0) & dynamic_mask[iv, iu]
    if not loose.any() or not labels.any():
        return query_seg
    dist, (near_v, near_u) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    lv, lu = iv[loose], iu[loose]
    nv, nu = near_v[lv, lu], near_u[lv, lu]
    z = depth[lv, lu]
    with np.errstate(invalid='ignore'):
        same = ((dist[lv, lu] <= max_px)
                & (np.abs(depth[nv, nu] - z) <= np.maximum(depth_abs, depth_rel * z)))
    query_seg = query_seg.copy()
    query_seg[np.flatnonzero(loose)[same]] = labels[nv[same], nu[same]]
    return query_seg


def main_parts(labels: np.ndarray, share: float = 0.25) -> np.ndarray:
    """Labels with each label's connected parts smaller than ``share`` of its largest part
    removed: a motion also explains stray pixels far from its object (by chance, on a smooth
    texture), which would stretch the object's box."""
    out = labels.copy()
    for k in np.unique(labels[labels > 0]):
        _, parts, stats, _ = cv2.connectedComponentsWithStats((labels == k).astype(np.uint8),
                                                              connectivity=8)
        area = stats[1:, cv2.CC_STAT_AREA]
        small = np.flatnonzero(area < share * area.max()) + 1
        out[np.isin(parts, small)] = 0
    return out
