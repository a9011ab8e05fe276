"""A tree of named frames with fixed transforms between them (what ROS's /tf_static carries: a
robot's URDF from robot_state_publisher, a camera driver's internal frames), and the transform
between any two connected frames through their chain.

ROS-free: the ROS layer adds each received transform. Each frame has at most one parent (TF's
rule); a later transform for the same child replaces the earlier one, as in tf2.
"""

from __future__ import annotations

import numpy as np

from fourd_ros.core.geometry import invert_pose


def normalise_frame(frame_id: str) -> str:
    """tf2's frame name: without a leading slash (ROS 1 names such as '/camera_link')."""
    return frame_id.lstrip('/')


class FrameTree:
    """Fixed transforms between named frames (see module docstring)."""

    def __init__(self) -> None:
        # child -> (parent, 4x4 pose of the child in the parent: points child -> parent)
        self._parent: dict[str, tuple[str, np.ndarray]] = {}

    def set(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        """Add or replace the edge parent -> child (4x4 pose of `child` in `parent`)."""
        parent, child = normalise_frame(parent), normalise_frame(child)
        if parent == child:
            raise ValueError(f"frame tree: a transform from '{parent}' to itself")
        self._parent[child] = (parent, np.asarray(T_parent_child, dtype=np.float64))

    def __contains__(self, frame: str) -> bool:
        frame = normalise_frame(frame)
        return frame in self._parent or any(p == frame for p, _ in self._parent.values())

    @property
    def frames(self) -> list[str]:
        """Every frame named by an edge, sorted."""
        return sorted(set(self._parent) | {p for p, _ in self._parent.values()})

    def _ancestors(self, frame: str) -> list[tuple[str, np.ndarray]]:
        """(ancestor, pose of `frame` in it) from `frame` itself up to its root."""
        out = [(frame, np.eye(4))]
        T = np.eye(4)
        while frame in self._parent:
            frame, T_parent_frame = self._parent[frame]
            if any(f == frame for f, _ in out):  # a loop: the tree is cut there
                break
            T = T_parent_frame @ T
            out.append((frame, T))
        return out

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """4x4 pose of `source` in `target` (points in `source` -> `target`), or None when the
        two frames are not connected."""
        target, source = normalise_frame(target), normalise_frame(source)
        if target == source:
            return np.eye(4)
        source_in = dict(self._ancestors(source))
        for frame, T_frame_target in self._ancestors(target):
            if frame in source_in:  # the lowest common ancestor
                return invert_pose(T_frame_target) @ source_in[frame]
        return None
