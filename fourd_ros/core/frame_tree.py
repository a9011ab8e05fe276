"""A tree of named frames and the transforms between them, as ROS's TF carries them: fixed edges
(/tf_static: a robot's URDF from robot_state_publisher, a camera driver's internal frames) and
timed edges (/tf: odometry, a SLAM's map -> odom), and the transform between any two connected
frames through their chain at a time.

ROS-free: the ROS layer adds each received transform (tf2_ros, the usual buffer, is not on
PyPI). Each frame has one parent (TF's rule): a later fixed transform for a child replaces the
earlier one, timed ones are kept for `history_s` and interpolated (rotation by slerp,
translation linearly) as tf2 does; a time after the newest sample takes the newest within
`max_extrapolation_s`, none before the oldest.
"""

from __future__ import annotations

import bisect

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from fourd_ros.core.geometry import invert_pose, make_pose


def normalise_frame(frame_id: str) -> str:
    """tf2's frame name: without a leading slash (ROS 1 names such as '/camera_link')."""
    return frame_id.lstrip('/')


class FrameTree:
    """Fixed and timed transforms between named frames (see module docstring).

    Args:
        history_s: how long timed transforms are kept, seconds (tf2's buffer keeps 10 s).
        max_extrapolation_s: a time up to this much after a timed edge's newest sample takes
            that sample.
    """

    def __init__(self, history_s: float = 10.0, max_extrapolation_s: float = 0.5) -> None:
        self.history_s = history_s
        self.max_extrapolation_s = max_extrapolation_s
        # child -> (parent, 4x4 pose of the child in the parent: points child -> parent)
        self._fixed: dict[str, tuple[str, np.ndarray]] = {}
        # child -> (parent, stamps ascending, 4x4 poses at those stamps)
        self._timed: dict[str, tuple[str, list[float], list[np.ndarray]]] = {}

    def set(self, parent: str, child: str, T_parent_child: np.ndarray,
            stamp: float | None = None) -> None:
        """Add the edge parent -> child (4x4 pose of `child` in `parent`): fixed when `stamp`
        is None, else a sample at `stamp` (seconds) of a timed edge."""
        parent, child = normalise_frame(parent), normalise_frame(child)
        if parent == child:
            raise ValueError(f"frame tree: a transform from '{parent}' to itself")
        T = np.asarray(T_parent_child, dtype=np.float64)
        if stamp is None:
            self._fixed[child] = (parent, T)
            self._timed.pop(child, None)
            return
        self._fixed.pop(child, None)
        old = self._timed.get(child)
        if old is None or old[0] != parent:  # a new parent starts a new history
            old = (parent, [], [])
            self._timed[child] = old
        _, stamps, poses = old
        i = bisect.bisect_right(stamps, stamp)
        if i and stamps[i - 1] == stamp:
            poses[i - 1] = T
        else:
            stamps.insert(i, stamp)
            poses.insert(i, T)
        drop = bisect.bisect_left(stamps, stamps[-1] - self.history_s)
        del stamps[:drop], poses[:drop]

    def _edge(self, child: str, stamp: float | None, timed: bool
              ) -> tuple[str, np.ndarray] | None:
        """(parent, pose of `child` in it) at `stamp` (None = newest), or None."""
        if child in self._fixed:
            return self._fixed[child]
        if not timed or child not in self._timed:
            return None
        parent, stamps, poses = self._timed[child]
        if stamp is None or stamp >= stamps[-1]:
            if stamp is not None and stamp - stamps[-1] > self.max_extrapolation_s:
                return None
            return parent, poses[-1]
        i = bisect.bisect_right(stamps, stamp)
        if i == 0:
            return None  # older than the history
        t0, t1 = stamps[i - 1], stamps[i]
        a = (stamp - t0) / (t1 - t0)
        rot = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([poses[i - 1][:3, :3],
                                                              poses[i][:3, :3]])))([a])
        return parent, make_pose(rot.as_matrix()[0],
                                 (1 - a) * poses[i - 1][:3, 3] + a * poses[i][:3, 3])

    def parent(self, frame: str) -> str | None:
        """The parent of `frame` (fixed or timed edge), None for a root or unknown frame."""
        frame = normalise_frame(frame)
        if frame in self._fixed:
            return self._fixed[frame][0]
        timed = self._timed.get(frame)
        return timed[0] if timed else None

    def __contains__(self, frame: str) -> bool:
        return normalise_frame(frame) in self.frames

    @property
    def frames(self) -> list[str]:
        """Every frame named by an edge, sorted."""
        edges = [(c, p) for c, (p, _) in self._fixed.items()]
        edges += [(c, p) for c, (p, _, _) in self._timed.items()]
        return sorted({f for edge in edges for f in edge})

    def _ancestors(self, frame: str, stamp: float | None, timed: bool
                   ) -> list[tuple[str, np.ndarray]]:
        """(ancestor, pose of `frame` in it) from `frame` itself up to its root."""
        out = [(frame, np.eye(4))]
        T = np.eye(4)
        while (edge := self._edge(frame, stamp, timed)) is not None:
            frame, T_parent_frame = edge
            if any(f == frame for f, _ in out):  # a loop: the tree is cut there
                break
            T = T_parent_frame @ T
            out.append((frame, T))
        return out

    def lookup(self, target: str, source: str, stamp: float | None = None,
               timed: bool = True) -> np.ndarray | None:
        """4x4 pose of `source` in `target` (points in `source` -> `target`) at `stamp`
        (seconds; None = the newest of each timed edge), or None when the two frames are not
        connected then. `timed` False: through fixed edges only."""
        target, source = normalise_frame(target), normalise_frame(source)
        if target == source:
            return np.eye(4)
        source_in = dict(self._ancestors(source, stamp, timed))
        for frame, T_frame_target in self._ancestors(target, stamp, timed):
            if frame in source_in:  # the lowest common ancestor
                return invert_pose(T_frame_target) @ source_in[frame]
        return None
