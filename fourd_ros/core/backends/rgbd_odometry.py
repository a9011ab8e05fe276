"""Camera tracking for RGB-D streams: coarse-to-fine projective point-to-plane ICP.

Frame-to-model tracking against a fused keyframe depth model, with an optional (weak) photometric
term that only matters where the geometry alone is degenerate. See ``RgbdOdometry``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fourd_ros.core.geometry import invert_pose, scale_intrinsics


@dataclass
class OdometryConfig:
    """Tuned parameters of ``RgbdOdometry``.

    Attributes:
        levels: pyramid levels (level 0 = input resolution, each next one half the size).
        iterations: Gauss-Newton iterations per level, finest level first.
        sample_step: pixel stride of the current-frame points used at each level, finest first.
        min_depth, max_depth: valid depth range in metres.
        bilateral_sigma_m: range sigma of the bilateral filter of the current depth (0 = none).
        dist_gate_m: max point distance of an association at each level, finest first.
        normal_gate_deg: max angle between associated normals.
        robust: robust weight function, 'huber' or 'cauchy'.
        robust_k: robust threshold in units of the robust residual scale (MAD).
        noise_normalize: apply the robust function to residuals divided by the depth noise.
        noise_power: extra weight ``(sigma(1 m) / sigma(z)) ** noise_power`` of a point, with the
            Kinect axial noise model ``sigma(z) = 1.2 mm + 1.9 mm * (z - 0.4) ** 2``.
        min_sigma_m: lower bound of the robust scale of the point-to-plane residuals.
        photo_weight: weight of the photometric term relative to the geometric one (0 = depth
            only).
        photo_sigma: intensity residual (0..255) equivalent to ``geo_sigma_m``.
        geo_sigma_m: point-to-plane residual equivalent to ``photo_sigma``.
        min_points: minimum valid depth points (sampled, level 0) to attempt tracking.
        min_inlier_ratio: minimum inlier fraction of the sampled points at the finest level.
        max_rmse_m: tracking fails above this point-to-plane RMSE.
        max_step_m, max_step_deg: tracking fails when one frame moves more than this.
        fuse: fuse tracked frames into the keyframe depth model (frame-to-model tracking).
        fuse_gate_m: max depth difference (at 1 m, grows with z^2) of a fused measurement.
        max_weight: cap of the per-pixel model weight (frames).
        carry_weight: cap of the weight of the model carried over to a new keyframe (0 = none).
        kf_trans_m, kf_rot_deg: a new keyframe starts beyond this motion from the current one.
        kf_min_overlap: a new keyframe starts when fewer associations than this fraction remain.
        convergence_eps: stop iterating a level when the update is below this (rad / m).
    """

    levels: int = 3
    iterations: tuple[int, ...] = (4, 5, 8)
    sample_step: tuple[int, ...] = (2, 1, 1)
    min_depth: float = 0.2
    max_depth: float = 6.0
    bilateral_sigma_m: float = 0.03
    dist_gate_m: tuple[float, ...] = (0.05, 0.08, 0.12)
    normal_gate_deg: float = 30.0
    robust: str = 'huber'
    robust_k: float = 1.5
    noise_normalize: bool = False
    noise_power: tuple[float, ...] = (4.0, 4.0, 4.0)
    reject_k: float = 0.0
    min_sigma_m: float = 0.002
    photo_weight: float = 0.0
    photo_stride: int = 4
    photo_sigma: float = 8.0
    geo_sigma_m: float = 0.0025
    min_points: int = 300
    min_inlier_ratio: float = 0.15
    max_rmse_m: float = 0.05
    max_step_m: float = 0.3
    max_step_deg: float = 30.0
    fuse: bool = True
    fuse_gate_m: float = 0.02
    max_weight: float = 30.0
    carry_weight: float = 10.0
    kf_trans_m: float = 0.1
    kf_rot_deg: float = 10.0
    kf_min_overlap: float = 0.6
    convergence_eps: float = 1e-5


@dataclass
class OdometryResult:
    """Result of ``RgbdOdometry.track`` for one frame.

    Attributes:
        T_wc: 4x4 float64 camera-to-world pose (world = first tracked frame).
        ok: tracking succeeded (False: ``T_wc`` is a constant-velocity prediction).
        num_inliers: point-to-plane inliers at the finest level.
        rmse_m: RMSE of the inlier point-to-plane residuals at the finest level (metres).
        is_keyframe: this frame became the new reference keyframe.
    """

    T_wc: np.ndarray
    ok: bool
    num_inliers: int
    rmse_m: float
    is_keyframe: bool


@dataclass
class _Level:
    """One pyramid level of a frame (maps are float32, zeros = invalid).

    ``depth``/``normals`` (3 x H x W) describe the geometry. As the tracked frame it carries
    ``pts``/``nrm`` (3 x M sampled points and normals) and ``inten`` (M intensities); as the
    reference it carries ``ref`` ((H*W + 1) x 6 vertices + normals, last row a dummy invalid
    entry) and ``photo`` ((H*W + W + 2) x 3 intensity and its x/y gradients, padded).
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
    ref: np.ndarray | None = None
    photo: np.ndarray | None = None


def _exp_se3(xi: np.ndarray) -> np.ndarray:
    """4x4 transform of a twist (rotation vector, translation) applied on the left."""
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(xi[:3], np.float64).reshape(3, 1))[0]
    T[:3, 3] = xi[3:]
    return T


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


def _kinect_sigma(z: np.ndarray) -> np.ndarray:
    """Axial depth noise of a structured-light sensor (Nguyen et al. 2012), metres."""
    return np.float32(0.0012) + np.float32(0.0019) * (z - np.float32(0.4)) ** 2


_SIGMA_1M = float(_kinect_sigma(np.float32(1.0)))


def _robust_weights(a: np.ndarray, good: np.ndarray, kind: str, k: float,
                    floor: float) -> tuple[np.ndarray, float]:
    """IRLS weights of absolute residuals ``a`` (0 where not ``good``) and the robust scale."""
    ag = a[good]
    scale = max(1.4826 * float(np.median(ag)), floor) if ag.size else floor
    c = np.float32(k * scale)
    if kind == 'cauchy':
        t = a / c
        w = 1.0 / (1.0 + t * t)
    else:
        w = np.minimum(np.float32(1.0), c / np.maximum(a, np.float32(1e-12)))
    return np.where(good, w, np.float32(0.0)).astype(np.float32), scale


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


class RgbdOdometry:
    """Camera tracking for registered RGB-D frames (OpenCV optical axes, metres).

    Projective point-to-plane ICP over an image pyramid (robust IRLS Gauss-Newton, distance and
    normal-angle gates on the associations, depth-noise weights, constant-velocity motion prior)
    against a keyframe depth model: tracked frames are fused into the keyframe's depth map, and
    when a new keyframe starts the old model is carried over into its view, which makes the
    tracking frame-to-model and keeps drift low. An optional weak photometric term (intensity of
    the keyframe image) constrains the motions that the geometry leaves free (planar scenes).
    Moving objects are excluded through ``static_mask`` when given and otherwise rejected by the
    robust weights, the gates and the fusion gate. The world frame is the camera of the first
    frame tracked after construction or ``reset()``.
    """

    def __init__(self, K: np.ndarray, width: int, height: int,
                 config: OdometryConfig | None = None) -> None:
        """Set up a tracker for images of ``width`` x ``height`` with intrinsics ``K``."""
        self.config = config or OdometryConfig()
        cfg = self.config
        if not (len(cfg.iterations) >= cfg.levels and len(cfg.sample_step) >= cfg.levels
                and len(cfg.dist_gate_m) >= cfg.levels):
            raise ValueError('OdometryConfig: iterations, sample_step and dist_gate_m need one '
                             'entry per pyramid level')
        self.width = int(width)
        self.height = int(height)
        self.K = np.asarray(K, dtype=np.float64)
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
        self.reset()

    def reset(self) -> None:
        """Forget all state; the next tracked frame is the world origin."""
        self._kf: list[_Level] | None = None
        self._kf_weight: np.ndarray | None = None
        self._T_wk = np.eye(4)
        self._T_wc = np.eye(4)
        self._T_wc_prev: np.ndarray | None = None

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
        ``(fx z_u, fy z_v, -(z + fx z_u rx + fy z_v ry))`` (oriented towards the camera).
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

    def _frame(self, depth: np.ndarray, gray: np.ndarray | None, *, smooth: bool
               ) -> list[_Level]:
        """Pyramid of a cleaned depth map (and of the image when the photometric term is on)."""
        cfg = self.config
        d = depth
        if smooth and cfg.bilateral_sigma_m > 0:
            f = cv2.bilateralFilter(d, 5, cfg.bilateral_sigma_m, 2.0)
            d = np.where(d > 0, f, np.float32(0.0)).astype(np.float32)
        g = None
        if gray is not None and cfg.photo_weight > 0:
            g = np.asarray(gray, dtype=np.float32)
        levels = []
        for li in range(cfg.levels):
            K_l, _, _, w, h = self._geo[li]
            if li > 0:
                d = _downsample_depth(d, 0.05)
                if g is not None:
                    g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
            levels.append(_Level(K_l, w, h, d, self._normals(d, li), gray=g))
        return levels

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
            if lv.gray is not None:
                lv.inten = lv.gray[::s, ::s][sel]

    def _make_ref(self, levels: list[_Level]) -> None:
        """Dense vertex + normal maps of each level, for tracking against this frame."""
        for li, lv in enumerate(levels):
            _, rx, ry, w, h = self._geo[li]
            ref = np.zeros((h * w + 1, 6), np.float32)
            z = np.where(lv.normals[2] != 0, lv.depth, np.float32(0.0))
            ref[:-1, 0] = (rx * z).ravel()
            ref[:-1, 1] = (ry * z).ravel()
            ref[:-1, 2] = z.ravel()
            ref[:-1, 3:] = lv.normals.reshape(3, -1).T
            lv.ref = ref

    @staticmethod
    def _make_photo(levels: list[_Level]) -> None:
        """Padded intensity + gradient tables of each level, for the photometric term."""
        for lv in levels:
            if lv.gray is None:
                continue
            h, w = lv.height, lv.width
            photo = np.zeros((h * w + w + 2, 3), np.float32)
            photo[:h * w, 0] = lv.gray.ravel()
            photo[:h * w, 1] = cv2.Sobel(lv.gray, cv2.CV_32F, 1, 0, ksize=3).ravel() / 8.0
            photo[:h * w, 2] = cv2.Sobel(lv.gray, cv2.CV_32F, 0, 1, ksize=3).ravel() / 8.0
            lv.photo = photo

    # ------------------------------------------------------------------------------------------
    # Gauss-Newton

    def _photo_system(self, lr: _Level, inten: np.ndarray, q: np.ndarray, good: np.ndarray,
                      stride: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Normal equations of the photometric residuals I_ref(pi(q)) - I_cur (normalized)."""
        cfg = self.config
        w_img, h_img = lr.width, lr.height
        fx, fy = np.float32(lr.K[0, 0]), np.float32(lr.K[1, 1])
        cx, cy = np.float32(lr.K[0, 2]), np.float32(lr.K[1, 2])
        with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
            iz = 1.0 / q[2]
            xs = fx * q[0] * iz + cx
            ys = fy * q[1] * iz + cy
            ok = good & (xs >= 0) & (xs < w_img - 1) & (ys >= 0) & (ys < h_img - 1)
        if np.count_nonzero(ok) < 6:
            return None
        x0 = np.where(ok, xs, 0).astype(np.int64)
        y0 = np.where(ok, ys, 0).astype(np.int64)
        ax = np.where(ok, xs - x0, 0).astype(np.float32)[:, None]
        ay = np.where(ok, ys - y0, 0).astype(np.float32)[:, None]
        i00 = np.where(ok, y0 * w_img + x0, h_img * w_img)
        tab = lr.photo
        top = tab[i00] * (1 - ax) + tab[i00 + 1] * ax
        bot = tab[i00 + w_img] * (1 - ax) + tab[i00 + w_img + 1] * ax
        s = top * (1 - ay) + bot * ay
        r = s[:, 0] - inten
        w, _ = _robust_weights(np.abs(r), ok, 'huber', 1.5, 1.0)
        gx = s[:, 1] * fx * iz
        gy = s[:, 2] * fy * iz
        gz = -(gx * q[0] + gy * q[1]) * iz
        gx = np.where(ok, gx, 0)
        gy = np.where(ok, gy, 0)
        gz = np.where(ok, gz, 0)
        J = np.empty((6, len(r)), np.float32)
        J[0] = q[1] * gz - q[2] * gy
        J[1] = q[2] * gx - q[0] * gz
        J[2] = q[0] * gy - q[1] * gx
        J[3] = gx
        J[4] = gy
        J[5] = gz
        r = np.where(ok, r, 0)
        scale = np.float32(stride * cfg.photo_weight / cfg.photo_sigma ** 2)
        Jw = J * (w * scale)
        return (Jw @ J.T).astype(np.float64), (Jw @ r).astype(np.float64)

    def _align(self, ref: list[_Level], cur: list[_Level], T: np.ndarray
               ) -> tuple[np.ndarray, int, int, int, float]:
        """Estimate T_ref_cur by coarse-to-fine ICP from the initial guess ``T``.

        Returns the pose, the numbers of inliers, of gated associations and of sampled points at
        the finest level, and the inlier RMSE.
        """
        cfg = self.config
        cos_gate = np.float32(np.cos(np.radians(cfg.normal_gate_deg)))
        geo_scale = np.float32(1.0 / cfg.geo_sigma_m ** 2)
        n_inl, n_good, n_pts, rmse = 0, 0, 0, float('inf')
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
            sig = _kinect_sigma(P[2])
            w_noise = (np.float32(_SIGMA_1M) / sig) ** np.float32(cfg.noise_power[li])
            w_noise /= np.float32(max(float(w_noise.mean()), 1e-12))
            keep = None
            inv_sig = np.float32(_SIGMA_1M) / sig
            for it in range(cfg.iterations[li]):
                R = T[:3, :3].astype(np.float32)
                q = R @ P + T[:3, 3:4].astype(np.float32)
                with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
                    iz = 1.0 / q[2]
                    uf = fx * q[0] * iz + cx
                    vf = fy * q[1] * iz + cy
                    inb = (q[2] > 0) & (uf >= 0) & (uf < w_img) & (vf >= 0) & (vf < h_img)
                    idx = np.where(inb, vf.astype(np.int64) * w_img + uf.astype(np.int64), dummy)
                g = lr.ref[idx]
                dx = q[0] - g[:, 0]
                dy = q[1] - g[:, 1]
                dz = q[2] - g[:, 2]
                nx, ny, nz = g[:, 3], g[:, 4], g[:, 5]
                r = dx * nx + dy * ny + dz * nz
                nc = R @ Pn
                good = ((g[:, 2] > 0) & (dx * dx + dy * dy + dz * dz < gate2)
                        & (nc[0] * nx + nc[1] * ny + nc[2] * nz > cos_gate))
                ar = np.abs(r)
                if li == 0 and it == 0 and cfg.reject_k > 0 and np.count_nonzero(good) > 6:
                    # freeze the outliers of the coarse solution (moving objects) before the
                    # finest level, whose weights may favour some points strongly
                    e = ar * inv_sig
                    sc = max(1.4826 * float(np.median(e[good])), cfg.min_sigma_m)
                    keep = e <= np.float32(cfg.reject_k * sc)
                if keep is not None:
                    good &= keep
                n_good_l = int(np.count_nonzero(good))
                if n_good_l < 6:
                    break
                if cfg.noise_normalize:
                    wr, scale = _robust_weights(ar * inv_sig, good, cfg.robust, cfg.robust_k,
                                                cfg.min_sigma_m)
                    sigma_m = scale  # residual scale at 1 m
                    thr = np.float32(3 * scale) / inv_sig
                else:
                    wr, sigma_m = _robust_weights(ar, good, cfg.robust, cfg.robust_k,
                                                  cfg.min_sigma_m)
                    thr = np.float32(3 * sigma_m)
                w = wr * w_noise * geo_scale
                A = np.empty((6, len(r)), np.float32)
                A[0] = q[1] * nz - q[2] * ny
                A[1] = q[2] * nx - q[0] * nz
                A[2] = q[0] * ny - q[1] * nx
                A[3] = nx
                A[4] = ny
                A[5] = nz
                Aw = A * w
                Hm = (Aw @ A.T).astype(np.float64)
                b = (Aw @ r).astype(np.float64)
                if li == 0:
                    dd = float(np.median(P[2]))
                    Sd = np.diag([1, 1, 1, dd, dd, dd])
                    ev = np.linalg.eigvalsh(Sd @ Hm @ Sd)
                    self._dbg_eig = ev[0] / ev[-1]
                if use_photo:
                    ps = cfg.photo_stride
                    ph = self._photo_system(lr, lc.inten[::ps], q[:, ::ps], good[::ps], ps)
                    if ph is not None:
                        Hm += ph[0]
                        b += ph[1]
                try:
                    xi = -np.linalg.solve(Hm + 1e-6 * np.eye(6), b)
                except np.linalg.LinAlgError:
                    break
                if not np.all(np.isfinite(xi)):
                    break
                T = _exp_se3(xi) @ T
                inl = good & (ar <= thr)
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
        idx = vf[inb].astype(np.int64) * w_img + uf[inb].astype(np.int64)
        p = pts[:, inb]
        n = nrm[:, inb]
        ray_x = rx.ravel()[idx]
        ray_y = ry.ravel()[idx]
        den = n[0] * ray_x + n[1] * ray_y + n[2]
        with np.errstate(divide='ignore', invalid='ignore'):
            zr = (n[0] * p[0] + n[1] * p[1] + n[2] * p[2]) / den
        zr = np.where(np.abs(den) > 0.3, zr, p[2])
        dflat = depth.ravel()
        dt = dflat[idx]
        gate = np.float32(cfg.fuse_gate_m) * np.maximum(dt, np.float32(1.0)) ** 2
        keep = np.abs(zr - dt) < gate
        if fill:
            keep |= dt == 0
        keep &= zr > 0
        idx = idx[keep]
        if isinstance(wsrc, np.ndarray):
            ws = wsrc[inb][keep]
        else:
            ws = np.full(idx.size, wsrc, np.float32)
        hw = w_img * h_img
        acc_w = np.bincount(idx, weights=ws, minlength=hw).astype(np.float32)
        acc_z = np.bincount(idx, weights=ws * zr[keep], minlength=hw).astype(np.float32)
        wflat = weight.ravel()
        tot = wflat + acc_w
        with np.errstate(divide='ignore', invalid='ignore'):
            new = np.where(acc_w > 0, (wflat * dflat + acc_z) / tot, dflat)
        return (new.reshape(h_img, w_img).astype(np.float32),
                np.minimum(tot, np.float32(cfg.max_weight)).reshape(h_img, w_img))

    def _set_keyframe(self, levels: list[_Level], depth: np.ndarray, T_wc: np.ndarray) -> None:
        """Make this frame the keyframe, carrying the old model over into its view."""
        cfg = self.config
        weight = np.where(depth > 0, np.float32(1.0), np.float32(0.0)).astype(np.float32)
        if cfg.fuse and cfg.carry_weight > 0 and self._kf is not None:
            old = self._kf[0]
            _, rx, ry, _, _ = self._geo[0]
            sel = (old.normals[2] != 0) & (self._kf_weight > 0)
            z = old.depth[sel]
            p = np.stack([rx[sel] * z, ry[sel] * z, z])
            n = old.normals[:, sel]
            T_ck = invert_pose(T_wc) @ self._T_wk
            R = T_ck[:3, :3].astype(np.float32)
            p = R @ p + T_ck[:3, 3:4].astype(np.float32)
            n = R @ n
            wo = np.minimum(self._kf_weight[sel], np.float32(cfg.carry_weight))
            depth, weight = self._fuse(depth, weight, p, n, wo, fill=True)
            fused = self._frame(depth, None, smooth=False)
            for lv, lf in zip(levels, fused):
                lf.gray = lv.gray
            levels = fused
        self._kf = levels
        self._kf_weight = weight
        self._make_ref(levels)
        self._make_photo(levels)
        self._T_wk = T_wc.copy()

    def _fuse_current(self, cur: list[_Level], T_kc: np.ndarray) -> None:
        """Fuse the tracked frame (level 0) into the keyframe model."""
        lv = cur[0]
        _, rx, ry, _, _ = self._geo[0]
        sel = lv.normals[2] != 0
        z = lv.depth[sel]
        p = np.stack([rx[sel] * z, ry[sel] * z, z])
        R = T_kc[:3, :3].astype(np.float32)
        p = R @ p + T_kc[:3, 3:4].astype(np.float32)
        nn = R @ lv.normals[:, sel]
        depth, weight = self._fuse(self._kf[0].depth, self._kf_weight, p, nn, 1.0, fill=False)
        levels = self._frame(depth, None, smooth=False)
        self._make_ref(levels)
        for lk, ln in zip(self._kf, levels):
            ln.gray, ln.photo = lk.gray, lk.photo
        self._kf = levels
        self._kf_weight = weight

    # ------------------------------------------------------------------------------------------
    # public API

    def track(self, gray: np.ndarray, depth: np.ndarray,
              static_mask: np.ndarray | None = None) -> OdometryResult:
        """Track one frame and return its camera-to-world pose.

        Args:
            gray: H x W uint8 image (used by the photometric term only).
            depth: H x W float32 depth in metres (0 or NaN = invalid).
            static_mask: optional H x W bool, False on moving objects (excluded).

        Returns:
            An ``OdometryResult``; on failure ``ok`` is False and the pose is predicted with
            constant velocity.
        """
        cfg = self.config
        if depth.shape != (self.height, self.width):
            raise ValueError(f'depth is {depth.shape[1]}x{depth.shape[0]}, expected '
                             f'{self.width}x{self.height}')
        d = self._clean_depth(depth, static_mask)
        cur = self._frame(d, gray, smooth=True)
        self._sample(cur)
        n_valid = cur[0].pts.shape[1]
        enough = n_valid >= cfg.min_points
        if self._kf is None:
            if not enough:
                return OdometryResult(self._T_wc.copy(), False, 0, float('nan'), False)
            self._set_keyframe(cur, d, self._T_wc)
            self._T_wc_prev = self._T_wc.copy()
            return OdometryResult(self._T_wc.copy(), True, n_valid, 0.0, True)

        # constant-velocity prediction
        vel = np.eye(4) if self._T_wc_prev is None else invert_pose(self._T_wc_prev) @ self._T_wc
        T_pred = _orthonormalize(self._T_wc @ vel)
        ok = enough
        n_inl, n_good, n_pts, rmse = 0, 0, 0, float('nan')
        T_new = T_pred
        T_kc = invert_pose(self._T_wk) @ T_pred
        if ok:
            T_kc, n_inl, n_good, n_pts, rmse = self._align(self._kf, cur, T_kc)
            T_new = _orthonormalize(self._T_wk @ T_kc)
            step = invert_pose(self._T_wc) @ T_new
            ok = bool(n_inl >= max(cfg.min_inlier_ratio * n_pts, 6)
                      and np.isfinite(rmse) and rmse <= cfg.max_rmse_m
                      and np.linalg.norm(step[:3, 3]) <= cfg.max_step_m
                      and _rotation_deg(step[:3, :3]) <= cfg.max_step_deg
                      and np.all(np.isfinite(T_new)))
            if not ok:
                T_new = T_pred
                T_kc = invert_pose(self._T_wk) @ T_pred
        self._T_wc_prev = self._T_wc
        self._T_wc = T_new
        is_kf = False
        if enough:
            if (not ok or np.linalg.norm(T_kc[:3, 3]) > cfg.kf_trans_m
                    or _rotation_deg(T_kc[:3, :3]) > cfg.kf_rot_deg
                    or n_good < cfg.kf_min_overlap * n_pts):
                if not ok:
                    self._kf = None  # lost: restart the model from this frame
                self._set_keyframe(cur, d, T_new)
                is_kf = True
            elif cfg.fuse:
                self._fuse_current(cur, T_kc)
        return OdometryResult(T_new.copy(), ok, int(n_inl), float(rmse), is_kf)
