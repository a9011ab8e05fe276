"""Camera tracking for RGB-D streams: coarse-to-fine projective ICP against a fused keyframe.

``RgbdOdometry`` estimates camera-to-world poses from depth plus a weak photometric term at the
processing resolution, in the conventions of ``fourd_ros.core.types`` (OpenCV optical axes,
metres, world = first tracked camera). numpy/OpenCV with compiled (numba) inner loops, about
8-10 ms a 320x240 frame on the 2-core machine.

Method, per frame (steps 1-3 are the stateless ``aligner.RgbdAligner``, which segment motion
and queries share; this module keeps the stream's state: the keyframe model, its fusion and
relocalisation):

1. Depth pyramid (bilateral-filtered level 0, edge-aware 2x2 averaging), normals from the depth
   gradient, a regular sample of valid points per level.
2. Gauss-Newton point-to-plane ICP from coarse to fine with projective data association against
   the keyframe model, distance and normal-angle gates, and Cauchy weights on residuals
   normalised by a structured-light depth-noise model ``sigma(z)``. At the finest level, points
   that are outliers of the coarse solution (e.g. on moving objects) are frozen out, and each
   point is weighted by ``(sigma(1 m) / sigma(z)) ** 4``: near depth is far more accurate than
   its noise alone says (far Kinect-type depth has correlated, systematic errors). Coarse levels
   weight points uniformly, so that a large near moving object cannot dominate the coarse
   solution.
3. A constant-velocity motion prior (a few cm / degrees per frame) and a weak photometric term
   (keyframe intensity and gradient, bilinear) are added to the normal equations; both only
   matter where the geometry leaves a motion unconstrained (a plane, a corridor). Colour that is
   not registered to depth (7-Scenes) therefore costs little accuracy.
4. The tracked depth is fused into the keyframe's depth map (weighted running average along the
   keyframe's pixel rays), and a new keyframe inherits the old model re-projected into its view,
   so tracking is effectively frame-to-model, which keeps drift low. This model update runs on
   a worker thread while the caller goes on with the frame (segmentation, the next frame's
   flow); the next ``track`` waits for it after building its own pyramid, so the poses are the
   same as when it ran inline (about 9 ms a frame off the frame path at 320x240).

When the constant-velocity guess does not align (too few inliers, a large residual, an
implausible jump: frames lost in a stall, a sudden stop or turn), or ICP ends far from it (a
wrong minimum can pass those checks), the frame is aligned again on the whole frame (a static
mask built on the same guess can hide most of the scene): from the last pose, then from a PnP
pose against the keyframe image on dense-flow or ORB correspondences
(``relocalize.relocalize``), where ICP must end near that pose. When that fails too, or there is
too little depth, the result has ``ok=False``, the pose holds the last one (extrapolating a
wrong velocity runs away frame after frame), and the model restarts from that frame.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from fourd_ros.core.backends.rgbd.align_kernels import fuse_depth
from fourd_ros.core.backends.rgbd.aligner import PyramidLevel, RgbdAligner, orthonormalize
from fourd_ros.core.backends.rgbd.config import OdometryConfig
from fourd_ros.core.backends.rgbd.relocalize import relocalize
from fourd_ros.core.flow import DisFlow
from fourd_ros.core.geometry import invert_pose, rotation_angle_deg


@dataclass
class OdometryResult:
    """Result of ``RgbdOdometry.track`` for one frame.

    Attributes:
        T_wc: 4x4 float64 camera-to-world pose (world = first tracked frame).
        ok: tracking succeeded (False: ``T_wc`` holds the last pose).
        num_inliers: point-to-plane inliers at the finest level.
        rmse_m: RMSE of the inlier point-to-plane residuals at the finest level (metres; NaN
            when not tracked).
        is_keyframe: this frame became the new reference keyframe.
        relocalized: the constant-velocity guess failed and the pose was found again from the
            last pose or from image features.
    """

    T_wc: np.ndarray
    ok: bool
    num_inliers: int
    rmse_m: float
    is_keyframe: bool
    relocalized: bool = False


def _gray_u8(gray: np.ndarray) -> np.ndarray:
    """H x W uint8 intensity of a gray or RGB image (uint8 or float 0..255)."""
    g = np.asarray(gray)
    if g.ndim == 3:
        g = cv2.cvtColor(g.astype(np.float32) if g.dtype != np.uint8 else g, cv2.COLOR_RGB2GRAY)
    return np.clip(g, 0, 255).astype(np.uint8) if g.dtype != np.uint8 else g


def _is_large(T: np.ndarray, max_m: float, max_deg: float) -> bool:
    """A 4x4 rigid transform moves more than ``max_m`` metres or turns more than ``max_deg``."""
    return bool(np.linalg.norm(T[:3, 3]) > max_m or float(rotation_angle_deg(T[:3, :3])) > max_deg)


class RgbdOdometry:
    """Camera tracking for registered RGB-D frames (OpenCV optical axes, metres).

    Coarse-to-fine projective point-to-plane ICP (robust, depth-noise weighted, with a weak
    photometric term) against a keyframe depth model that fuses the tracked frames and is carried
    over to each new keyframe (see the module docstring). Moving objects are excluded through
    ``static_mask`` when given and otherwise rejected by the robust weights, the association
    gates, the outlier freeze before the finest level and the fusion gate. The world frame is the
    camera of the first frame tracked after construction or ``reset()``.

    Args:
        K: 3x3 intrinsics of the ``width`` x ``height`` images passed to ``track``.
        width, height: image size in pixels.
        config: parameters (defaults tuned on 7-Scenes at 320x240).
    """

    def __init__(self, K: np.ndarray, width: int, height: int,
                 config: OdometryConfig | None = None) -> None:
        self.config = config or OdometryConfig()
        self.aligner = RgbdAligner(K, width, height, self.config)
        self.width, self.height, self.K = self.aligner.width, self.aligner.height, self.aligner.K
        self._flow = DisFlow('medium')  # for relocalisation only
        # the keyframe model is updated (fused, or a new keyframe made) off the frame path:
        # the next frame waits for it only after its own pyramid is built
        self._worker = ThreadPoolExecutor(1, thread_name_prefix='rgbd-odometry-model')
        self._pending: Future | None = None
        self.reset()

    def _settle(self) -> None:
        """Wait for the model update of the last tracked frame (see `track`); re-raises what
        it raised."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _update_model(self, update: Callable[..., None], *args) -> None:
        """Run a keyframe-model update (`_fuse_current`, `_set_keyframe`) on the worker thread,
        or now when ``config.update_in_background`` is off."""
        if self.config.update_in_background:
            self._pending = self._worker.submit(update, *args)
        else:
            update(*args)

    def close(self) -> None:
        """Finish the pending model update and stop the worker thread."""
        self._settle()
        self._worker.shutdown()

    def reset(self) -> None:
        """Forget all state; the next tracked frame becomes the world origin."""
        self._settle()
        self._kf: list[PyramidLevel] | None = None
        self._kf_weight: np.ndarray | None = None
        self._T_wk = np.eye(4)
        self._T_wc = np.eye(4)
        self._T_wc_prev: np.ndarray | None = None
        self._kf_image: tuple[np.ndarray, np.ndarray] | None = None  # uint8 gray, depth (m)

    # ------------------------------------------------------------------------------------------
    # model fusion

    def _fuse(self, depth: np.ndarray, weight: np.ndarray, pts: np.ndarray, nrm: np.ndarray,
              wsrc: np.ndarray | float, fill: bool) -> tuple[np.ndarray, np.ndarray]:
        """Fuse 3 x M points (with normals, in this camera) into a level-0 depth map and its
        weights (`align_kernels.fuse_depth`): measurements that disagree with the map are
        dropped; empty pixels are filled when ``fill`` is set."""
        cfg = self.config
        K_l, rx, ry, _, _ = self.aligner.level_geometry(0)
        f32 = np.float32
        return fuse_depth(np.ascontiguousarray(depth, f32), np.ascontiguousarray(weight, f32),
                          np.ascontiguousarray(pts, f32), np.ascontiguousarray(nrm, f32),
                          np.atleast_1d(np.asarray(wsrc, f32)), fill, rx, ry,
                          f32(K_l[0, 0]), f32(K_l[1, 1]), f32(K_l[0, 2] + 0.5),
                          f32(K_l[1, 2] + 0.5), f32(cfg.fuse_gate_m), f32(cfg.max_weight))

    def _set_keyframe(self, levels: list[PyramidLevel], depth: np.ndarray, T_wc: np.ndarray,
                      gray: np.ndarray | None) -> None:
        """Make this frame the keyframe, carrying the old model over into its view."""
        cfg = self.config
        self._kf_image = None if gray is None else (_gray_u8(gray), depth)
        weight = np.where(depth > 0, np.float32(1.0), np.float32(0.0)).astype(np.float32)
        if cfg.fuse and cfg.carry_weight > 0 and self._kf is not None:
            old = self._kf[0]
            _, rx, ry, _, _ = self.aligner.level_geometry(0)
            sel = (old.normals[2] != 0) & (self._kf_weight > 0)
            z = old.depth[sel]
            p = np.stack([rx[sel] * z, ry[sel] * z, z])
            T_ck = invert_pose(T_wc) @ self._T_wk
            R = T_ck[:3, :3].astype(np.float32)
            p = R @ p + T_ck[:3, 3:4].astype(np.float32)
            n = R @ old.normals[:, sel]
            wo = np.minimum(self._kf_weight[sel], np.float32(cfg.carry_weight))
            depth, weight = self._fuse(depth, weight, p, n, wo, fill=True)
            fused = self.aligner.pyramid(depth, None, smooth=False)
            for lv, lf in zip(levels, fused):
                lf.gray = lv.gray
            levels = fused
        self.aligner.make_reference(levels)
        self._kf = levels
        self._kf_weight = weight
        self._T_wk = T_wc.copy()

    def _fuse_current(self, cur: list[PyramidLevel], T_kc: np.ndarray) -> None:
        """Fuse the tracked frame into the keyframe model and rebuild the model's pyramid."""
        s = self.config.fuse_step
        lv = cur[0]
        _, rx, ry, _, _ = self.aligner.level_geometry(0)
        n = lv.normals[:, ::s, ::s]
        sel = n[2] != 0
        z = lv.depth[::s, ::s][sel]
        p = np.stack([rx[::s, ::s][sel] * z, ry[::s, ::s][sel] * z, z])
        R = T_kc[:3, :3].astype(np.float32)
        p = R @ p + T_kc[:3, 3:4].astype(np.float32)
        depth, weight = self._fuse(self._kf[0].depth, self._kf_weight, p, R @ n[:, sel], 1.0,
                                   fill=False)
        for li, new in enumerate(self.aligner.pyramid(depth, None, smooth=False)):
            old = self._kf[li]
            new.gray, new.photo = old.gray, old.photo
            self.aligner.make_reference_geometry(new, li)
            self._kf[li] = new
        self._kf_weight = weight

    def _tracked_frame(self, depth: np.ndarray, gray: np.ndarray | None,
                       static_mask: np.ndarray | None) -> tuple[np.ndarray, list[PyramidLevel]]:
        """Cleaned depth and sampled pyramid of a frame to track."""
        d = self.aligner.clean_depth(depth, static_mask)
        cur = self.aligner.pyramid(d, gray, smooth=True)
        self.aligner.sample(cur)
        return d, cur

    def _fits(self, T: np.ndarray, n_inl: int, n_pts: int, rmse: float) -> bool:
        """An alignment ``T`` (4x4) has enough inliers and a small residual."""
        cfg = self.config
        return bool(n_inl >= max(cfg.min_inlier_ratio * n_pts, 6) and np.isfinite(rmse)
                    and rmse <= cfg.max_rmse_m and np.all(np.isfinite(T)))

    def _plausible(self, T_new: np.ndarray, n_inl: int, n_pts: int, rmse: float) -> bool:
        """An alignment fits and its step from the last pose is no larger than one frame can
        move."""
        cfg = self.config
        return (self._fits(T_new, n_inl, n_pts, rmse)
                and not _is_large(invert_pose(self._T_wc) @ T_new, cfg.max_step_m,
                                  cfg.max_step_deg))

    def _relocalize(self, gray: np.ndarray | None, cur: list[PyramidLevel]
                    ) -> tuple[np.ndarray, int, int, int, float] | None:
        """Align the frame to the keyframe when the constant-velocity guess failed: from the
        last pose (the camera stopped), then from a PnP pose against the keyframe image
        (any motion that keeps the views overlapping). Returns ``RgbdAligner.align``'s result
        or None."""
        cfg = self.config
        T_kc, n_inl, n_good, n_pts, rmse = self.aligner.align(
            self._kf, cur, invert_pose(self._T_wk) @ self._T_wc)
        if self._plausible(orthonormalize(self._T_wk @ T_kc), n_inl, n_pts, rmse):
            return T_kc, n_inl, n_good, n_pts, rmse
        if gray is None or self._kf_image is None:
            return None
        ref_gray, ref_depth = self._kf_image
        found = relocalize(ref_gray, ref_depth, _gray_u8(gray), self.K, self._flow,
                           cfg.relocalize)
        if found is None:
            return None
        T_kc, n_inl, n_good, n_pts, rmse = self.aligner.align(self._kf, cur, found.T_ref_cur)
        # no step limit (the motion over a gap is unknown); ICP must end near PnP instead
        agree = not _is_large(invert_pose(found.T_ref_cur) @ T_kc, cfg.relocalize_agree_m,
                              cfg.relocalize_agree_deg)
        if agree and self._fits(T_kc, n_inl, n_pts, rmse):
            return T_kc, n_inl, n_good, n_pts, rmse
        return None

    # ------------------------------------------------------------------------------------------
    # public API

    def track(self, gray: np.ndarray | None, depth: np.ndarray,
              static_mask: np.ndarray | None = None) -> OdometryResult:
        """Track one frame and return its camera-to-world pose.

        Args:
            gray: H x W uint8 intensity image for the photometric term (an RGB image is
                converted; None tracks on depth only).
            depth: H x W float32 depth in metres along the optical axis (0 or NaN = invalid).
            static_mask: optional H x W bool, False on moving objects (excluded from the pose
                and from the model; relocalisation uses the whole frame).

        Returns:
            An ``OdometryResult``; on failure ``ok`` is False and the pose holds the last one.

        Raises:
            ValueError: when an image does not have the size given at construction.
        """
        cfg = self.config
        shape = (self.height, self.width)
        for name, img in (('depth', depth), ('gray', gray), ('static_mask', static_mask)):
            if img is not None and np.shape(img)[:2] != shape:
                raise ValueError(f'{name} is {np.shape(img)[1]}x{np.shape(img)[0]}, expected '
                                 f'{self.width}x{self.height}')
        d, cur = self._tracked_frame(depth, gray, static_mask)
        self._settle()
        n_valid = cur[0].pts.shape[1]
        enough = n_valid >= cfg.min_points
        if self._kf is None:
            if not enough:
                return OdometryResult(self._T_wc.copy(), False, 0, float('nan'), False)
            self._update_model(self._set_keyframe, cur, d, self._T_wc.copy(), gray)
            self._T_wc_prev = self._T_wc.copy()
            return OdometryResult(self._T_wc.copy(), True, n_valid, 0.0, True)

        # constant-velocity prediction
        vel = np.eye(4) if self._T_wc_prev is None else invert_pose(self._T_wc_prev) @ self._T_wc
        T_pred = orthonormalize(self._T_wc @ vel)
        ok, relocalized = False, False
        n_inl, n_good, n_pts, rmse = 0, 0, 0, float('nan')
        T_new = T_pred
        doubtful = False
        if enough:
            T_kc_guess = invert_pose(self._T_wk) @ T_pred
            T_kc, n_inl, n_good, n_pts, rmse = self.aligner.align(self._kf, cur, T_kc_guess)
            T_new = orthonormalize(self._T_wk @ T_kc)
            ok = self._plausible(T_new, n_inl, n_pts, rmse)
            # ICP that ends far from its guess may have found a wrong minimum within the limits
            doubtful = _is_large(invert_pose(T_kc_guess) @ T_kc, cfg.relocalize_trigger_m,
                                 cfg.relocalize_trigger_deg)
        if not ok or doubtful:
            # the guess is far off: frames lost in a stall, a sudden stop or turn.
            # Extrapolating it would run away, frame after frame; relocalise instead, on the
            # whole frame: a static mask built on the same guess can hide most of the scene.
            d_all, cur_all = ((d, cur) if static_mask is None
                              else self._tracked_frame(depth, gray, None))
            found = (self._relocalize(gray, cur_all)
                     if cur_all[0].pts.shape[1] >= cfg.min_points else None)
            # a doubtful alignment stands unless the relocalised one explains more of its frame
            if found is not None and (not ok or found[1] * max(n_pts, 1) > n_inl * found[3]):
                d, cur, enough = d_all, cur_all, True
                T_kc, n_inl, n_good, n_pts, rmse = found
                T_new = orthonormalize(self._T_wk @ T_kc)
                ok = relocalized = True
        if not ok:
            T_new = self._T_wc.copy()  # lost: hold the last pose
            rmse = float('nan') if not np.isfinite(rmse) else rmse
        T_kc = invert_pose(self._T_wk) @ T_new
        # after a relocalisation or a loss the last step's motion is no velocity to go on with
        self._T_wc_prev = self._T_wc if ok and not relocalized else T_new
        self._T_wc = T_new
        is_kf = False
        if enough:
            if (not ok or np.linalg.norm(T_kc[:3, 3]) > cfg.kf_trans_m
                    or float(rotation_angle_deg(T_kc[:3, :3])) > cfg.kf_rot_deg
                    or n_good < cfg.kf_min_overlap * n_pts):
                if not ok:
                    self._kf = None  # lost: restart the model from this frame
                self._update_model(self._set_keyframe, cur, d, T_new, gray)
                is_kf = True
            elif cfg.fuse:
                self._update_model(self._fuse_current, cur, T_kc)
        return OdometryResult(T_new.copy(), ok, int(n_inl), float(rmse), is_kf, relocalized)
