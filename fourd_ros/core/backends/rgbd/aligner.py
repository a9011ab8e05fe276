"""Stateless RGB-D alignment: coarse-to-fine projective point-to-plane ICP with a weak photometric
term, between two frames' pyramids.

``RgbdAligner`` holds only what the image size, intrinsics and settings fix (per-level pixel-ray
tables), never a frame, so one instance serves the camera tracker (``odometry.py``, against its
fused keyframe model), the per-object motion of moving segments (``segment_motion.py``) and
queries from any thread at once. Conventions of ``fourd_ros.core.types``: OpenCV optical axes,
metres.

Per alignment (``align``): Gauss-Newton from the coarsest level to the finest with projective
data association against the reference's dense vertex/normal table, distance and normal-angle
gates, and Cauchy weights on residuals normalised by a structured-light depth-noise model
``sigma(z)``. At the finest level, points that are outliers of the coarse solution (e.g. on
moving objects) are frozen out, and each point is weighted by ``(sigma(1 m) / sigma(z)) ** p``
(near Kinect-type depth is far more accurate than its noise alone says). A constant-velocity
motion prior and a weak photometric term (reference intensity and gradient, bilinear) are
added to the normal equations; both only matter where the geometry leaves a motion
unconstrained (a plane, a corridor). The per-point passes (association, residuals, normal
equations, a level's normals and samples) are compiled loops in ``align_kernels.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from fourd_ros.core.backends.rgbd.config import OdometryConfig
from fourd_ros.core.backends.rgbd.align_kernels import (depth_normals, gauss_newton_level,
                                                        halve_depth, reference_table,
                                                        sample_level)
from fourd_ros.core.geometry import invert_pose, scale_intrinsics


@dataclass
class PyramidLevel:
    """One pyramid level of a frame (float32 maps, zeros = invalid).

    ``depth`` and ``normals`` (3 x H x W) describe the geometry. As the tracked frame a level
    carries ``pts``/``nrm`` (3 x M sampled points and normals) and ``inten`` (M intensities); as
    the reference it carries ``ref`` ((H*W + 1) x 6 vertices and normals, the last row a dummy
    invalid entry) and ``photo`` ((H*W + W + 2) x 3 intensity and x/y gradients, zero padded):
    point-major, so that one point's entries share a cache line.
    """

    K: np.ndarray
    width: int
    height: int
    depth: np.ndarray
    normals: np.ndarray
    gray: np.ndarray | None = None
    pts: np.ndarray | None = None
    nrm: np.ndarray | None = None
    inten: np.ndarray | None = None
    pix: np.ndarray | None = None
    ref: np.ndarray | None = None
    photo: np.ndarray | None = None


def orthonormalize(T: np.ndarray) -> np.ndarray:
    """Project the rotation block of a 4x4 pose back onto SO(3) (stops round-off growth)."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    out = T.copy()
    out[:3, :3] = U @ Vt
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


def _kinect_sigma(z: np.ndarray) -> np.ndarray:
    """Axial depth noise of a structured-light sensor (Nguyen et al. 2012), metres."""
    return np.float32(0.0012) + np.float32(0.0019) * (z - np.float32(0.4)) ** 2


_NO_IMAGE = np.zeros((0, 0), np.float32)  # `sample_level` without intensities
# `align_kernels.gauss_newton_level` without a photometric term / motion prior
_NO_TABLE = np.zeros((0, 3), np.float32)
_NO_INTENSITY = np.zeros(0, np.float32)
_NO_PRIOR = np.zeros((0, 0))
_SIGMA_1M = float(_kinect_sigma(np.float32(1.0)))


class RgbdAligner:
    """Aligns RGB-D frames of one camera (``width`` x ``height`` images with intrinsics ``K``);
    stateless and thread-safe (see the module docstring).

    Args:
        K: 3x3 intrinsics of the images aligned.
        width, height: image size in pixels.
        config: alignment settings (``OdometryConfig``; the tracker's keyframe and fusion
            settings are not read here).
    """

    def __init__(self, K: np.ndarray, width: int, height: int,
                 config: OdometryConfig | None = None) -> None:
        self.config = config or OdometryConfig()
        cfg = self.config
        for name in ('iterations', 'sample_step', 'dist_gate_m', 'noise_power'):
            if len(getattr(cfg, name)) < cfg.levels:
                raise ValueError(f'OdometryConfig.{name} needs one entry per pyramid level '
                                 f'({cfg.levels})')
        self.width = int(width)
        self.height = int(height)
        self.K = np.asarray(K, dtype=np.float64)
        if self.K.shape != (3, 3):
            raise ValueError(f'K must be 3x3, got {self.K.shape}')
        self._geo: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]] = []
        K_l = self.K
        w, h = self.width, self.height
        for _ in range(cfg.levels):
            v, u = np.mgrid[0:h, 0:w].astype(np.float32)
            rx = (u - np.float32(K_l[0, 2])) / np.float32(K_l[0, 0])
            ry = (v - np.float32(K_l[1, 2])) / np.float32(K_l[1, 1])
            self._geo.append((K_l.copy(), rx, ry, w, h))
            K_l = scale_intrinsics(K_l, 0.5, 0.5)
            w, h = w // 2, h // 2

    def level_geometry(self, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """Intrinsics, per-pixel ray x / z and y / z tables (H x W float32), width and height of a
        pyramid level (0 = input resolution)."""
        return self._geo[level]

    # ------------------------------------------------------------------------------------------
    # preprocessing

    def clean_depth(self, depth: np.ndarray, static_mask: np.ndarray | None) -> np.ndarray:
        """float32 depth with 0 outside the valid range and off ``static_mask`` (when given)."""
        cfg = self.config
        d = np.asarray(depth, dtype=np.float32)
        with np.errstate(invalid='ignore'):
            ok = (d >= cfg.min_depth) & (d <= cfg.max_depth)
        if static_mask is not None:
            ok &= np.asarray(static_mask, dtype=bool)
        return np.where(ok, d, np.float32(0.0)).astype(np.float32)

    def _normals(self, z: np.ndarray, li: int) -> np.ndarray:
        """3 x H x W camera-facing unit normals of a depth map; zeros at holes and edges.

        From the depth gradient: for ``V = z * (rx, ry, 1)``, ``dV/du x dV/dv`` is parallel to
        ``(fx z_u, fy z_v, -(z + fx z_u rx + fy z_v ry))`` (sign chosen to face the camera).
        """
        K_l, rx, ry, _, _ = self._geo[li]
        return depth_normals(np.ascontiguousarray(z, np.float32), rx, ry,
                             np.float32(K_l[0, 0]), np.float32(K_l[1, 1]))

    def pyramid(self, depth: np.ndarray, gray: np.ndarray | None, *, smooth: bool,
                levels: int | None = None) -> list[PyramidLevel]:
        """Pyramid of a cleaned depth map (and of the image when the photometric term is on)."""
        cfg = self.config
        d = depth
        if smooth and cfg.bilateral_sigma_m > 0:
            f = cv2.bilateralFilter(d, 5, cfg.bilateral_sigma_m, 2.0)
            d = np.where(d > 0, f, np.float32(0.0)).astype(np.float32)
        g = None
        if gray is not None and cfg.photo_weight > 0:
            g = np.asarray(gray, dtype=np.float32)
            if g.ndim == 3:
                g = cv2.cvtColor(g, cv2.COLOR_RGB2GRAY)
        out = []
        for li in range(cfg.levels if levels is None else levels):
            K_l, _, _, w, h = self._geo[li]
            if li > 0:
                d = halve_depth(d, np.float32(0.05))
                if g is not None:
                    g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
            out.append(PyramidLevel(K_l, w, h, d, self._normals(d, li), gray=g))
        return out

    def sample(self, levels: list[PyramidLevel]) -> None:
        """Sampled points/normals (3 x M) of each level, for tracking this frame."""
        for li, lv in enumerate(levels):
            _, rx, ry, _, _ = self._geo[li]
            gray = _NO_IMAGE if lv.gray is None else np.ascontiguousarray(lv.gray, np.float32)
            lv.pts, lv.nrm, lv.pix, inten = sample_level(lv.depth, lv.normals, rx, ry, gray,
                                                         self.config.sample_step[li])
            lv.inten = None if lv.gray is None else inten

    def make_reference_geometry(self, lv: PyramidLevel, li: int) -> None:
        """Dense vertex + normal table of a level, for tracking against this frame."""
        _, rx, ry, _, _ = self._geo[li]
        lv.ref = reference_table(lv.depth, lv.normals, rx, ry)

    @staticmethod
    def _make_photo(lv: PyramidLevel) -> None:
        """Padded intensity + gradient table of a level, for the photometric term."""
        if lv.gray is None:
            return
        h, w = lv.height, lv.width
        photo = np.zeros((h * w + w + 2, 3), np.float32)
        photo[:h * w, 0] = lv.gray.ravel()
        photo[:h * w, 1] = cv2.Sobel(lv.gray, cv2.CV_32F, 1, 0, ksize=3).ravel() / 8.0
        photo[:h * w, 2] = cv2.Sobel(lv.gray, cv2.CV_32F, 0, 1, ksize=3).ravel() / 8.0
        lv.photo = photo

    # ------------------------------------------------------------------------------------------
    # Gauss-Newton

    def align(self, ref: list[PyramidLevel], cur: list[PyramidLevel], T: np.ndarray
              ) -> tuple[np.ndarray, int, int, int, float]:
        """Estimate T_ref_cur by coarse-to-fine ICP from the initial guess ``T``.

        Returns the pose, the numbers of inliers, of gated associations and of sampled points at
        the finest level, and the inlier RMSE (metres).
        """
        cfg = self.config
        cos_gate = np.float32(np.cos(np.radians(cfg.normal_gate_deg)))
        geo_scale = np.float32(1.0 / cfg.geo_sigma_m ** 2)
        min_scale = cfg.min_sigma_m  # e below is already a residual in metres at 1 m
        n_inl, n_good, n_pts, rmse = 0, 0, 0, float('inf')
        last = None
        T_prior_inv = invert_pose(T)
        prior = np.array([cfg.prior_sigma_deg] * 3 + [cfg.prior_sigma_m] * 3)
        use_prior = bool(np.all(prior > 0))
        Lam = _NO_PRIOR
        if use_prior:
            prior = np.radians(prior[:3]).tolist() + prior[3:].tolist()
            Lam = np.diag(1.0 / np.square(prior))
        for li in reversed(range(cfg.levels)):
            lr, lc = ref[li], cur[li]
            P, Pn = lc.pts, lc.nrm
            n_pts = P.shape[1]
            if n_pts < 6:
                continue
            use_photo = cfg.photo_weight > 0 and lr.photo is not None and lc.inten is not None
            fx, fy = np.float32(lr.K[0, 0]), np.float32(lr.K[1, 1])
            cx, cy = np.float32(lr.K[0, 2] + 0.5), np.float32(lr.K[1, 2] + 0.5)
            w_img, h_img = lr.width, lr.height
            gate2 = np.float32(cfg.dist_gate_m[li] ** 2)
            inv_sig = np.float32(_SIGMA_1M) / _kinect_sigma(P[2])
            w_noise = inv_sig ** np.float32(cfg.noise_power[li])
            w_noise *= np.float32(geo_scale / max(float(w_noise.mean()), 1e-12))
            photo = lr.photo if use_photo else _NO_TABLE
            T, r, e, good, scale, n_good_l = gauss_newton_level(
                T, P, Pn, lr.ref, fx, fy, cx, cy, w_img, h_img, gate2, cos_gate, inv_sig,
                w_noise, cfg.iterations[li], cfg.reject_k if li == 0 else 0.0, min_scale,
                cfg.robust_k, photo, lc.inten if use_photo else _NO_INTENSITY,
                cfg.photo_stride, np.float32(lr.K[0, 2]), np.float32(lr.K[1, 2]),
                np.float32(cfg.photo_stride * cfg.photo_weight / cfg.photo_sigma ** 2),
                Lam, T_prior_inv, cfg.convergence_eps)
            if n_good_l >= 0:
                # the inliers of the last step taken are the ones reported
                last = (r, e, good, scale)
                n_good = n_good_l
        if last is not None:
            r, e, good, scale = last
            inl = good & (e <= np.float32(3 * scale))
            n_inl = int(np.count_nonzero(inl))
            rmse = float(np.sqrt(np.mean(r[inl] ** 2))) if n_inl else float('inf')
        return T, n_inl, n_good, n_pts, rmse

    def make_reference(self, levels: list[PyramidLevel]) -> None:
        """Add the dense vertex / normal and intensity tables to a pyramid, to align against it."""
        for li, lv in enumerate(levels):
            self.make_reference_geometry(lv, li)
            self._make_photo(lv)

    # ------------------------------------------------------------------------------------------
    # frame-to-frame alignment of masked frames (e.g. one moving object)

    def prepare(self, gray: np.ndarray | None, depth: np.ndarray) -> list[PyramidLevel]:
        """Pyramid of a frame for ``align_masked``, usable as the reference and as the frame
        aligned (depth 0/NaN = no data)."""
        levels = self.pyramid(self.clean_depth(depth, None), gray, smooth=True)
        self.sample(levels)
        self.make_reference(levels)
        return levels

    def align_masked(self, reference: list[PyramidLevel], frame: list[PyramidLevel],
                     mask: np.ndarray, T_init: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Rigid transform taking ``frame``'s camera coordinates into the reference's, fitted on
        the pixels of ``mask`` (H x W bool, e.g. one moving object) only.

        Both pyramids come from ``prepare``; the configured motion prior pulls towards
        ``T_init``.

        Returns:
            (4x4 T_ref_cur, inlier share of the sampled points at the finest level, inlier
            point-to-plane RMSE in metres; inf when nothing could be aligned).
        """
        masked = []
        for li, lv in enumerate(frame):
            step = 2 ** li
            keep = mask[::step, ::step][:lv.height, :lv.width].ravel()[lv.pix]
            masked.append(dataclasses.replace(
                lv, pts=lv.pts[:, keep], nrm=lv.nrm[:, keep],
                inten=None if lv.inten is None else lv.inten[keep]))
        T, n_inl, _, n_pts, rmse = self.align(reference, masked, np.asarray(T_init, np.float64))
        return orthonormalize(T), n_inl / max(n_pts, 1), rmse
