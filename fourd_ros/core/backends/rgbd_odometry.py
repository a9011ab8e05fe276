"""Camera tracking for RGB-D streams: coarse-to-fine projective ICP against a fused keyframe.

``RgbdOdometry`` estimates camera-to-world poses from depth plus a weak photometric term at the
processing resolution, in the conventions of ``fourd_ros.core.types`` (OpenCV optical axes,
metres, world = first tracked camera). numpy/OpenCV only, vectorised, about 20-25 ms per
320x240 frame on one CPU core.

Method, per frame:

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
   so tracking is effectively frame-to-model, which keeps drift low.

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

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from fourd_ros.core.backends.relocalize import RelocalizeConfig, relocalize
from fourd_ros.core.flow import DisFlow
from fourd_ros.core.geometry import invert_pose, scale_intrinsics


@dataclass
class OdometryConfig:
    """Tuned parameters of ``RgbdOdometry`` (per-level tuples are finest level first).

    The defaults were tuned at 320x240 on the 7-Scenes sample (Kinect v1) and on synthetic clips
    with moving objects; the depth-noise model is that of structured-light sensors.

    Attributes:
        levels: pyramid levels (level 0 = input resolution, each next one half the size).
        iterations: Gauss-Newton iterations per level.
        sample_step: pixel stride of the tracked points at each level.
        min_depth, max_depth: valid depth range in metres.
        bilateral_sigma_m: range sigma of the bilateral filter of the input depth (0 = none).
        dist_gate_m: max 3D distance of an association at each level.
        normal_gate_deg: max angle between associated normals.
        robust_k: Cauchy scale in units of the robust (MAD) scale of the normalised residuals.
        min_sigma_m: lower bound of that robust scale, as a residual at 1 m depth.
        noise_power: exponent p of the per-point weight ``(sigma(1 m) / sigma(z)) ** p`` at each
            level (0 = uniform, 2 = inverse noise variance, more = trust near depth more).
        reject_k: before the finest level, points whose normalised residual exceeds this many
            robust scales are excluded from it (0 = off).
        prior_sigma_m, prior_sigma_deg: standard deviation of the constant-velocity motion
            prior per frame (0 = no prior).
        photo_weight: weight of the photometric term relative to the geometric one (0 = off).
        photo_sigma: intensity residual (0..255) worth ``geo_sigma_m`` of point-to-plane error.
        geo_sigma_m: point-to-plane residual worth ``photo_sigma`` of intensity error.
        photo_stride: use every n-th tracked point for the photometric term.
        min_points: minimum valid sampled points at level 0 to attempt tracking.
        min_inlier_ratio: minimum inlier fraction of the sampled points at the finest level.
        max_rmse_m: tracking fails above this inlier point-to-plane RMSE.
        max_step_m, max_step_deg: tracking fails when one frame moves more than this.
        fuse: fuse tracked frames into the keyframe depth model (frame-to-model tracking).
        fuse_step: pixel stride of the current-frame points fused into the model.
        fuse_gate_m: max depth disagreement (at 1 m, grows with z^2) of a fused measurement.
        max_weight: cap of the per-pixel model weight (in frames).
        carry_weight: cap of the weight of the old model carried into a new keyframe (0 = none).
        kf_trans_m, kf_rot_deg: a new keyframe starts beyond this motion from the current one.
        kf_min_overlap: a new keyframe starts when fewer than this fraction of the tracked
            points find a gated association in it.
        convergence_eps: stop iterating a level when the update is below this (rad / m).
        relocalize: correspondences and PnP used when the constant-velocity guess fails.
        relocalize_agree_m, relocalize_agree_deg: a relocalised pose is accepted when ICP from
            the PnP pose ends within this of it.
        relocalize_trigger_m, relocalize_trigger_deg: an alignment that ends farther than this
            from its constant-velocity guess is checked against a relocalised one.
    """

    levels: int = 3
    iterations: tuple[int, ...] = (4, 5, 8)
    sample_step: tuple[int, ...] = (2, 1, 1)
    min_depth: float = 0.2
    max_depth: float = 6.0
    bilateral_sigma_m: float = 0.03
    dist_gate_m: tuple[float, ...] = (0.05, 0.08, 0.12)
    normal_gate_deg: float = 30.0
    robust_k: float = 2.0
    min_sigma_m: float = 0.0003
    noise_power: tuple[float, ...] = (4.0, 0.0, 0.0)
    reject_k: float = 5.0
    prior_sigma_m: float = 0.02
    prior_sigma_deg: float = 2.0
    photo_weight: float = 0.2
    photo_sigma: float = 8.0
    geo_sigma_m: float = 0.0025
    photo_stride: int = 4
    min_points: int = 300
    min_inlier_ratio: float = 0.15
    max_rmse_m: float = 0.05
    max_step_m: float = 0.3
    max_step_deg: float = 30.0
    fuse: bool = True
    fuse_step: int = 1
    fuse_gate_m: float = 0.02
    max_weight: float = 30.0
    carry_weight: float = 10.0
    kf_trans_m: float = 0.1
    kf_rot_deg: float = 10.0
    kf_min_overlap: float = 0.6
    convergence_eps: float = 2e-4
    relocalize: RelocalizeConfig = dataclasses.field(default_factory=RelocalizeConfig)
    relocalize_agree_m: float = 0.15
    relocalize_agree_deg: float = 10.0
    relocalize_trigger_m: float = 0.05
    relocalize_trigger_deg: float = 5.0


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


@dataclass
class _Level:
    """One pyramid level of a frame (float32 maps, zeros = invalid).

    ``depth`` and ``normals`` (3 x H x W) describe the geometry. As the tracked frame a level
    carries ``pts``/``nrm`` (3 x M sampled points and normals) and ``inten`` (M intensities); as
    the reference it carries ``ref`` (6 x (H*W + 1) vertices and normals, the last column a dummy
    invalid entry) and ``photo`` (3 x (H*W + W + 2) intensity and x/y gradients, zero padded).
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


def _exp_se3(xi: np.ndarray) -> np.ndarray:
    """4x4 transform of a twist (rotation vector, translation), applied on the left."""
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(xi[:3], np.float64).reshape(3, 1))[0]
    T[:3, 3] = xi[3:]
    return T


def _log_se3(T: np.ndarray) -> np.ndarray:
    """(rotation vector, translation) of a small 4x4 transform (inverse of ``_exp_se3``)."""
    return np.concatenate([cv2.Rodrigues(T[:3, :3])[0].ravel(), T[:3, 3]])


def _orthonormalize(T: np.ndarray) -> np.ndarray:
    """Project the rotation block of a 4x4 pose back onto SO(3) (stops round-off growth)."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    out = T.copy()
    out[:3, :3] = U @ Vt
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


def _rotation_deg(R: np.ndarray) -> float:
    c = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def _gray_u8(gray: np.ndarray) -> np.ndarray:
    """H x W uint8 intensity of a gray or RGB image (uint8 or float 0..255)."""
    g = np.asarray(gray)
    if g.ndim == 3:
        g = cv2.cvtColor(g.astype(np.float32) if g.dtype != np.uint8 else g, cv2.COLOR_RGB2GRAY)
    return np.clip(g, 0, 255).astype(np.uint8) if g.dtype != np.uint8 else g


def _is_large(T: np.ndarray, max_m: float, max_deg: float) -> bool:
    """A 4x4 rigid transform moves more than ``max_m`` metres or turns more than ``max_deg``."""
    return bool(np.linalg.norm(T[:3, 3]) > max_m or _rotation_deg(T[:3, :3]) > max_deg)


def _kinect_sigma(z: np.ndarray) -> np.ndarray:
    """Axial depth noise of a structured-light sensor (Nguyen et al. 2012), metres."""
    return np.float32(0.0012) + np.float32(0.0019) * (z - np.float32(0.4)) ** 2


_SIGMA_1M = float(_kinect_sigma(np.float32(1.0)))
_MAX_MEDIAN_SAMPLES = 4096


def _robust_scale(a: np.ndarray, floor: float) -> float:
    """1.4826 * median of the absolute residuals ``a`` (subsampled for speed), at least floor."""
    if a.size == 0:
        return floor
    if a.size > _MAX_MEDIAN_SAMPLES:
        a = a[::a.size // _MAX_MEDIAN_SAMPLES + 1]
    k = a.size // 2
    return max(1.4826 * float(np.partition(a, k)[k]), floor)


def _downsample_depth(depth: np.ndarray, max_jump: float) -> np.ndarray:
    """Halve a depth map by averaging valid 2x2 blocks; blocks over an edge become invalid."""
    h, w = depth.shape[0] // 2 * 2, depth.shape[1] // 2 * 2
    b = depth[:h, :w].reshape(h // 2, 2, w // 2, 2)
    a, c, d, e = b[:, 0, :, 0], b[:, 0, :, 1], b[:, 1, :, 0], b[:, 1, :, 1]
    cnt = ((a > 0).astype(np.float32) + (c > 0) + (d > 0) + (e > 0))
    mean = (a + c + d + e) / np.maximum(cnt, 1.0)
    hi = np.maximum(np.maximum(a, c), np.maximum(d, e))
    big = np.float32(1e9)
    lo = np.minimum(np.minimum(np.where(a > 0, a, big), np.where(c > 0, c, big)),
                    np.minimum(np.where(d > 0, d, big), np.where(e > 0, e, big)))
    ok = (cnt > 0) & (hi - lo < max_jump * mean)
    return np.where(ok, mean, 0.0).astype(np.float32)


def _twist_jacobian(q: np.ndarray, gx: np.ndarray, gy: np.ndarray,
                    gz: np.ndarray) -> np.ndarray:
    """6 x N rows d(g . p)/d(rotation, translation) at points q (3 x N): [q x g; g]."""
    J = np.empty((6, gx.size), np.float32)
    J[0] = q[1] * gz - q[2] * gy
    J[1] = q[2] * gx - q[0] * gz
    J[2] = q[0] * gy - q[1] * gx
    J[3] = gx
    J[4] = gy
    J[5] = gz
    return J


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
        self._flow = DisFlow('medium')  # for relocalisation only
        K_l = self.K
        w, h = self.width, self.height
        for _ in range(cfg.levels):
            v, u = np.mgrid[0:h, 0:w].astype(np.float32)
            rx = (u - np.float32(K_l[0, 2])) / np.float32(K_l[0, 0])
            ry = (v - np.float32(K_l[1, 2])) / np.float32(K_l[1, 1])
            self._geo.append((K_l.copy(), rx, ry, w, h))
            K_l = scale_intrinsics(K_l, 0.5, 0.5)
            w, h = w // 2, h // 2
        self.reset()

    def reset(self) -> None:
        """Forget all state; the next tracked frame becomes the world origin."""
        self._kf: list[_Level] | None = None
        self._kf_weight: np.ndarray | None = None
        self._T_wk = np.eye(4)
        self._T_wc = np.eye(4)
        self._T_wc_prev: np.ndarray | None = None
        self._kf_image: tuple[np.ndarray, np.ndarray] | None = None  # uint8 gray, depth (m)

    # ------------------------------------------------------------------------------------------
    # preprocessing

    def _clean_depth(self, depth: np.ndarray, static_mask: np.ndarray | None) -> np.ndarray:
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
        fx, fy = np.float32(K_l[0, 0]), np.float32(K_l[1, 1])
        valid = z > 0
        zu = np.zeros_like(z)
        zv = np.zeros_like(z)
        zu[:, 1:-1] = (z[:, 2:] - z[:, :-2]) * np.float32(0.5)
        zv[1:-1] = (z[2:] - z[:-2]) * np.float32(0.5)
        ok = np.zeros_like(valid)
        ok[1:-1, 1:-1] = (valid[1:-1, 2:] & valid[1:-1, :-2] & valid[2:, 1:-1] & valid[:-2, 1:-1]
                          & valid[1:-1, 1:-1])
        # reject depth discontinuities
        ok &= (np.abs(zu) < np.float32(0.05) * z) & (np.abs(zv) < np.float32(0.05) * z)
        gx = fx * zu
        gy = fy * zv
        nz = -(z + gx * rx + gy * ry)
        inv = np.where(ok, 1.0 / np.sqrt(gx * gx + gy * gy + nz * nz + 1e-30), 0.0)
        return np.stack([gx * inv, gy * inv, nz * inv]).astype(np.float32)

    def _frame(self, depth: np.ndarray, gray: np.ndarray | None, *, smooth: bool,
               levels: int | None = None) -> list[_Level]:
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
                d = _downsample_depth(d, 0.05)
                if g is not None:
                    g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
            out.append(_Level(K_l, w, h, d, self._normals(d, li), gray=g))
        return out

    def _sample(self, levels: list[_Level]) -> None:
        """Sampled points/normals (3 x M) of each level, for tracking this frame."""
        for li, lv in enumerate(levels):
            s = self.config.sample_step[li]
            _, rx, ry, _, _ = self._geo[li]
            z = lv.depth[::s, ::s]
            n = lv.normals[:, ::s, ::s]
            sel = n[2] != 0
            zs = z[sel]
            lv.pts = np.stack([rx[::s, ::s][sel] * zs, ry[::s, ::s][sel] * zs, zs])
            lv.nrm = np.ascontiguousarray(n[:, sel])
            grid = (np.arange(0, lv.height, s)[:, None] * lv.width
                    + np.arange(0, lv.width, s)[None, :])
            lv.pix = grid[sel]
            if lv.gray is not None:
                lv.inten = lv.gray[::s, ::s][sel]

    def _make_ref(self, lv: _Level, li: int) -> None:
        """Dense vertex + normal table of a level, for tracking against this frame."""
        _, rx, ry, w, h = self._geo[li]
        ref = np.zeros((6, h * w + 1), np.float32)
        z = np.where(lv.normals[2] != 0, lv.depth, np.float32(0.0))
        ref[0, :-1] = (rx * z).ravel()
        ref[1, :-1] = (ry * z).ravel()
        ref[2, :-1] = z.ravel()
        ref[3:, :-1] = lv.normals.reshape(3, -1)
        lv.ref = ref

    @staticmethod
    def _make_photo(lv: _Level) -> None:
        """Padded intensity + gradient table of a level, for the photometric term."""
        if lv.gray is None:
            return
        h, w = lv.height, lv.width
        photo = np.zeros((3, h * w + w + 2), np.float32)
        photo[0, :h * w] = lv.gray.ravel()
        photo[1, :h * w] = cv2.Sobel(lv.gray, cv2.CV_32F, 1, 0, ksize=3).ravel() / 8.0
        photo[2, :h * w] = cv2.Sobel(lv.gray, cv2.CV_32F, 0, 1, ksize=3).ravel() / 8.0
        lv.photo = photo

    # ------------------------------------------------------------------------------------------
    # Gauss-Newton

    def _photo_system(self, lr: _Level, inten: np.ndarray, q: np.ndarray, good: np.ndarray,
                      stride: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Normal equations of the photometric residuals ``I_ref(pi(q)) - I_cur``."""
        cfg = self.config
        w_img, h_img = lr.width, lr.height
        fx, fy = np.float32(lr.K[0, 0]), np.float32(lr.K[1, 1])
        cx, cy = np.float32(lr.K[0, 2]), np.float32(lr.K[1, 2])
        sel = np.flatnonzero(good)
        q = q[:, sel]
        iz = 1.0 / q[2]
        xs = fx * q[0] * iz + cx
        ys = fy * q[1] * iz + cy
        ok = (xs >= 0) & (xs < w_img - 1) & (ys >= 0) & (ys < h_img - 1)
        if np.count_nonzero(ok) < 6:
            return None
        keep = np.flatnonzero(ok)
        q, iz, xs, ys = q[:, keep], iz[keep], xs[keep], ys[keep]
        x0 = xs.astype(np.int64)
        y0 = ys.astype(np.int64)
        ax = (xs - x0).astype(np.float32)
        ay = (ys - y0).astype(np.float32)
        i00 = y0 * w_img + x0
        tab = lr.photo
        top = np.take(tab, i00, axis=1) * (1 - ax) + np.take(tab, i00 + 1, axis=1) * ax
        bot = (np.take(tab, i00 + w_img, axis=1) * (1 - ax)
               + np.take(tab, i00 + w_img + 1, axis=1) * ax)
        s = top * (1 - ay) + bot * ay
        r = s[0] - inten[sel[keep]]
        ar = np.abs(r)
        c = np.float32(1.5 * _robust_scale(ar, 1.0))
        w = np.minimum(np.float32(1.0), c / np.maximum(ar, np.float32(1e-6)))
        gx = s[1] * fx * iz
        gy = s[2] * fy * iz
        gz = -(gx * q[0] + gy * q[1]) * iz
        J = _twist_jacobian(q, gx, gy, gz)
        Jw = J * (w * np.float32(stride * cfg.photo_weight / cfg.photo_sigma ** 2))
        return (Jw @ J.T).astype(np.float64), (Jw @ r).astype(np.float64)

    def _align(self, ref: list[_Level], cur: list[_Level], T: np.ndarray
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
        T_prior_inv = invert_pose(T)
        prior = np.array([cfg.prior_sigma_deg] * 3 + [cfg.prior_sigma_m] * 3)
        use_prior = bool(np.all(prior > 0))
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
            dummy = w_img * h_img
            gate2 = np.float32(cfg.dist_gate_m[li] ** 2)
            inv_sig = np.float32(_SIGMA_1M) / _kinect_sigma(P[2])
            w_noise = inv_sig ** np.float32(cfg.noise_power[li])
            w_noise *= np.float32(geo_scale / max(float(w_noise.mean()), 1e-12))
            keep = None
            for it in range(cfg.iterations[li]):
                R = T[:3, :3].astype(np.float32)
                q = R @ P + T[:3, 3:4].astype(np.float32)
                with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
                    iz = 1.0 / q[2]
                    uf = fx * q[0] * iz + cx
                    vf = fy * q[1] * iz + cy
                    inb = (q[2] > 0) & (uf >= 0) & (uf < w_img) & (vf >= 0) & (vf < h_img)
                    idx = np.where(inb, vf.astype(np.int64) * w_img + uf.astype(np.int64), dummy)
                g = np.take(lr.ref, idx, axis=1)
                dx = q[0] - g[0]
                dy = q[1] - g[1]
                dz = q[2] - g[2]
                nx, ny, nz = g[3], g[4], g[5]
                r = dx * nx + dy * ny + dz * nz
                nc = R @ Pn
                good = ((g[2] > 0) & (dx * dx + dy * dy + dz * dz < gate2)
                        & (nc[0] * nx + nc[1] * ny + nc[2] * nz > cos_gate))
                ar = np.abs(r)
                e = ar * inv_sig  # residual normalised to the noise at 1 m
                if li == 0 and it == 0 and cfg.reject_k > 0 and np.count_nonzero(good) > 6:
                    # freeze the outliers of the coarse solution (e.g. moving objects) before
                    # the finest level, whose weights may favour some points strongly
                    keep = e <= np.float32(cfg.reject_k * _robust_scale(e[good], min_scale))
                if keep is not None:
                    good &= keep
                n_good_l = int(np.count_nonzero(good))
                if n_good_l < 6:
                    break
                scale = _robust_scale(e[good], min_scale)
                t = e / np.float32(cfg.robust_k * scale)
                w = np.where(good, w_noise / (1.0 + t * t), np.float32(0.0))
                A = _twist_jacobian(q, nx, ny, nz)
                Aw = A * w
                H = (Aw @ A.T).astype(np.float64)
                b = (Aw @ r).astype(np.float64)
                if use_photo:
                    ps = cfg.photo_stride
                    ph = self._photo_system(lr, lc.inten[::ps], q[:, ::ps], good[::ps], ps)
                    if ph is not None:
                        H += ph[0]
                        b += ph[1]
                if use_prior:
                    # constant-velocity motion prior: r = log(T T_pred^-1) + xi
                    H += Lam
                    b += Lam @ _log_se3(T @ T_prior_inv)
                try:
                    xi = -np.linalg.solve(H + 1e-6 * np.eye(6), b)
                except np.linalg.LinAlgError:
                    break
                if not np.all(np.isfinite(xi)):
                    break
                T = _exp_se3(xi) @ T
                inl = good & (e <= np.float32(3 * scale))
                n_inl = int(np.count_nonzero(inl))
                n_good = n_good_l
                rmse = float(np.sqrt(np.mean(r[inl] ** 2))) if n_inl else float('inf')
                if np.abs(xi).max() < cfg.convergence_eps:
                    break
        return T, n_inl, n_good, n_pts, rmse

    # ------------------------------------------------------------------------------------------
    # model fusion

    def _fuse(self, depth: np.ndarray, weight: np.ndarray, pts: np.ndarray, nrm: np.ndarray,
              wsrc: np.ndarray | float, fill: bool) -> tuple[np.ndarray, np.ndarray]:
        """Fuse 3 x M points (with normals, in this camera) into a level-0 depth map.

        Each point is assigned to the pixel it projects to and its depth along that pixel's ray
        is taken from its tangent plane. Measurements that disagree with the map are dropped;
        empty pixels are filled when ``fill`` is set.
        """
        cfg = self.config
        K_l, rx, ry, w_img, h_img = self._geo[0]
        fx, fy = np.float32(K_l[0, 0]), np.float32(K_l[1, 1])
        cx, cy = np.float32(K_l[0, 2] + 0.5), np.float32(K_l[1, 2] + 0.5)
        with np.errstate(divide='ignore', invalid='ignore'):
            iz = 1.0 / pts[2]
            uf = fx * pts[0] * iz + cx
            vf = fy * pts[1] * iz + cy
            inb = (pts[2] > 0) & (uf >= 0) & (uf < w_img) & (vf >= 0) & (vf < h_img)
        sel = np.flatnonzero(inb)
        idx = vf[sel].astype(np.int64) * w_img + uf[sel].astype(np.int64)
        p = pts[:, sel]
        n = nrm[:, sel]
        den = n[0] * rx.ravel()[idx] + n[1] * ry.ravel()[idx] + n[2]
        with np.errstate(divide='ignore', invalid='ignore'):
            zr = (n[0] * p[0] + n[1] * p[1] + n[2] * p[2]) / den
        zr = np.where(np.abs(den) > 0.3, zr, p[2])
        dflat = depth.ravel()
        dt = dflat[idx]
        gate = np.float32(cfg.fuse_gate_m) * np.maximum(dt, np.float32(1.0)) ** 2
        ok = np.abs(zr - dt) < gate
        if fill:
            ok |= dt == 0
        ok &= zr > 0
        idx = idx[ok]
        if isinstance(wsrc, np.ndarray):
            ws = wsrc[sel][ok]
        else:
            ws = np.full(idx.size, wsrc, np.float32)
        hw = w_img * h_img
        acc_w = np.bincount(idx, weights=ws, minlength=hw).astype(np.float32)
        acc_z = np.bincount(idx, weights=ws * zr[ok], minlength=hw).astype(np.float32)
        wflat = weight.ravel()
        tot = wflat + acc_w
        with np.errstate(divide='ignore', invalid='ignore'):
            new = np.where(acc_w > 0, (wflat * dflat + acc_z) / tot, dflat)
        return (new.reshape(h_img, w_img).astype(np.float32),
                np.minimum(tot, np.float32(cfg.max_weight)).reshape(h_img, w_img))

    def _set_keyframe(self, levels: list[_Level], depth: np.ndarray, T_wc: np.ndarray,
                      gray: np.ndarray | None) -> None:
        """Make this frame the keyframe, carrying the old model over into its view."""
        cfg = self.config
        self._kf_image = None if gray is None else (_gray_u8(gray), depth)
        weight = np.where(depth > 0, np.float32(1.0), np.float32(0.0)).astype(np.float32)
        if cfg.fuse and cfg.carry_weight > 0 and self._kf is not None:
            old = self._kf[0]
            _, rx, ry, _, _ = self._geo[0]
            sel = (old.normals[2] != 0) & (self._kf_weight > 0)
            z = old.depth[sel]
            p = np.stack([rx[sel] * z, ry[sel] * z, z])
            T_ck = invert_pose(T_wc) @ self._T_wk
            R = T_ck[:3, :3].astype(np.float32)
            p = R @ p + T_ck[:3, 3:4].astype(np.float32)
            n = R @ old.normals[:, sel]
            wo = np.minimum(self._kf_weight[sel], np.float32(cfg.carry_weight))
            depth, weight = self._fuse(depth, weight, p, n, wo, fill=True)
            fused = self._frame(depth, None, smooth=False)
            for lv, lf in zip(levels, fused):
                lf.gray = lv.gray
            levels = fused
        for li, lv in enumerate(levels):
            self._make_ref(lv, li)
            self._make_photo(lv)
        self._kf = levels
        self._kf_weight = weight
        self._T_wk = T_wc.copy()

    def _fuse_current(self, cur: list[_Level], T_kc: np.ndarray) -> None:
        """Fuse the tracked frame into the keyframe model and rebuild the model's pyramid."""
        s = self.config.fuse_step
        lv = cur[0]
        _, rx, ry, _, _ = self._geo[0]
        n = lv.normals[:, ::s, ::s]
        sel = n[2] != 0
        z = lv.depth[::s, ::s][sel]
        p = np.stack([rx[::s, ::s][sel] * z, ry[::s, ::s][sel] * z, z])
        R = T_kc[:3, :3].astype(np.float32)
        p = R @ p + T_kc[:3, 3:4].astype(np.float32)
        depth, weight = self._fuse(self._kf[0].depth, self._kf_weight, p, R @ n[:, sel], 1.0,
                                   fill=False)
        for li, new in enumerate(self._frame(depth, None, smooth=False)):
            old = self._kf[li]
            new.gray, new.photo = old.gray, old.photo
            self._make_ref(new, li)
            self._kf[li] = new
        self._kf_weight = weight

    def _tracked_frame(self, depth: np.ndarray, gray: np.ndarray | None,
                       static_mask: np.ndarray | None) -> tuple[np.ndarray, list[_Level]]:
        """Cleaned depth and sampled pyramid of a frame to track."""
        d = self._clean_depth(depth, static_mask)
        cur = self._frame(d, gray, smooth=True)
        self._sample(cur)
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

    def _relocalize(self, gray: np.ndarray | None, cur: list[_Level]
                    ) -> tuple[np.ndarray, int, int, int, float] | None:
        """Align the frame to the keyframe when the constant-velocity guess failed: from the
        last pose (the camera stopped), then from a PnP pose against the keyframe image
        (any motion that keeps the views overlapping). Returns ``_align``'s result or None."""
        cfg = self.config
        T_kc, n_inl, n_good, n_pts, rmse = self._align(
            self._kf, cur, invert_pose(self._T_wk) @ self._T_wc)
        if self._plausible(_orthonormalize(self._T_wk @ T_kc), n_inl, n_pts, rmse):
            return T_kc, n_inl, n_good, n_pts, rmse
        if gray is None or self._kf_image is None:
            return None
        ref_gray, ref_depth = self._kf_image
        found = relocalize(ref_gray, ref_depth, _gray_u8(gray), self.K, self._flow,
                           cfg.relocalize)
        if found is None:
            return None
        T_kc, n_inl, n_good, n_pts, rmse = self._align(self._kf, cur, found.T_ref_cur)
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
        n_valid = cur[0].pts.shape[1]
        enough = n_valid >= cfg.min_points
        if self._kf is None:
            if not enough:
                return OdometryResult(self._T_wc.copy(), False, 0, float('nan'), False)
            self._set_keyframe(cur, d, self._T_wc, gray)
            self._T_wc_prev = self._T_wc.copy()
            return OdometryResult(self._T_wc.copy(), True, n_valid, 0.0, True)

        # constant-velocity prediction
        vel = np.eye(4) if self._T_wc_prev is None else invert_pose(self._T_wc_prev) @ self._T_wc
        T_pred = _orthonormalize(self._T_wc @ vel)
        ok, relocalized = False, False
        n_inl, n_good, n_pts, rmse = 0, 0, 0, float('nan')
        T_new = T_pred
        doubtful = False
        if enough:
            T_kc_guess = invert_pose(self._T_wk) @ T_pred
            T_kc, n_inl, n_good, n_pts, rmse = self._align(self._kf, cur, T_kc_guess)
            T_new = _orthonormalize(self._T_wk @ T_kc)
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
                T_new = _orthonormalize(self._T_wk @ T_kc)
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
                    or _rotation_deg(T_kc[:3, :3]) > cfg.kf_rot_deg
                    or n_good < cfg.kf_min_overlap * n_pts):
                if not ok:
                    self._kf = None  # lost: restart the model from this frame
                self._set_keyframe(cur, d, T_new, gray)
                is_kf = True
            elif cfg.fuse:
                self._fuse_current(cur, T_kc)
        return OdometryResult(T_new.copy(), ok, int(n_inl), float(rmse), is_kf, relocalized)

    # ------------------------------------------------------------------------------------------
    # frame-to-frame alignment of masked frames (e.g. one moving object), state untouched

    def prepare(self, gray: np.ndarray | None, depth: np.ndarray) -> list[_Level]:
        """Pyramid of a frame for ``align_to``, usable as the reference and as the frame aligned
        (depth 0/NaN = no data)."""
        levels = self._frame(self._clean_depth(depth, None), gray, smooth=True)
        self._sample(levels)
        for li, lv in enumerate(levels):
            self._make_ref(lv, li)
            self._make_photo(lv)
        return levels

    def align_to(self, reference: list[_Level], frame: list[_Level], mask: np.ndarray,
                 T_init: np.ndarray) -> tuple[np.ndarray, float, float]:
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
        T, n_inl, _, n_pts, rmse = self._align(reference, masked, np.asarray(T_init, np.float64))
        return _orthonormalize(T), n_inl / max(n_pts, 1), rmse
