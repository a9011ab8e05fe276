"""Camera tracking for RGB-D streams: coarse-to-fine projective point-to-plane ICP.

Frame-to-keyframe tracking on depth only (colour is not needed, which makes the tracker immune to
colour/depth misregistration such as in 7-Scenes). See ``RgbdOdometry``.
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
        bilateral_sigma_m: range sigma of the bilateral depth filter (0 = no filtering).
        dist_gate_m: max point distance of an association at each level, finest first.
        normal_gate_deg: max angle between associated normals.
        huber_k: Huber threshold in units of the robust residual scale (MAD).
        min_sigma_m: lower bound of the robust residual scale.
        min_points: minimum valid depth points (at level 0, after sampling) to attempt tracking.
        min_inlier_ratio: minimum inlier fraction of the sampled points at the finest level.
        max_rmse_m: tracking fails above this point-to-plane RMSE.
        max_step_m, max_step_deg: tracking fails when one frame moves more than this.
        kf_trans_m, kf_rot_deg: a new keyframe starts beyond this motion from the current one.
        kf_min_overlap: a new keyframe starts when fewer inliers than this fraction remain.
        convergence_eps: stop iterating a level when the update is below this (rad / m).
    """

    levels: int = 3
    iterations: tuple[int, ...] = (4, 5, 8)
    sample_step: tuple[int, ...] = (2, 1, 1)
    min_depth: float = 0.2
    max_depth: float = 5.0
    bilateral_sigma_m: float = 0.03
    dist_gate_m: tuple[float, ...] = (0.05, 0.08, 0.12)
    normal_gate_deg: float = 30.0
    huber_k: float = 1.5
    min_sigma_m: float = 0.002
    min_points: int = 300
    min_inlier_ratio: float = 0.15
    max_rmse_m: float = 0.05
    max_step_m: float = 0.3
    max_step_deg: float = 30.0
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
    """Vertex and normal maps of one pyramid level (camera frame, NaN = invalid)."""

    K: np.ndarray
    width: int
    height: int
    vertices: np.ndarray   # (H*W) x 3 float32
    normals: np.ndarray    # (H*W) x 3 float32


def _exp_se3(xi: np.ndarray) -> np.ndarray:
    """4x4 transform of a twist (rotation vector, translation) applied on the left."""
    w = xi[:3]
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(w.reshape(3, 1))[0]
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


def _downsample_depth(depth: np.ndarray, max_jump: float) -> np.ndarray:
    """Halve a depth map by averaging valid 2x2 blocks; blocks over an edge become invalid."""
    h, w = depth.shape[0] // 2 * 2, depth.shape[1] // 2 * 2
    blocks = depth[:h, :w].reshape(h // 2, 2, w // 2, 2).transpose(0, 2, 1, 3).reshape(
        h // 2, w // 2, 4)
    valid = blocks > 0
    cnt = valid.sum(-1)
    mean = blocks.sum(-1) / np.maximum(cnt, 1)
    lo = np.where(valid, blocks, np.inf).min(-1)
    hi = blocks.max(-1)
    ok = (cnt > 0) & (hi - lo < max_jump * np.maximum(mean, 1e-3))
    return np.where(ok, mean, 0.0).astype(np.float32)


class RgbdOdometry:
    """Camera tracking for registered RGB-D frames (OpenCV optical axes, metres).

    Depth-only, frame-to-keyframe projective point-to-plane ICP over an image pyramid, with
    Huber-weighted Gauss-Newton, distance and normal-angle gates on the associations and a
    constant-velocity motion prior. Moving objects are excluded through ``static_mask`` when
    given and otherwise down-weighted by the robust weights and gates. The world frame is the
    camera of the first frame tracked after construction or ``reset()``.
    """

    def __init__(self, K: np.ndarray, width: int, height: int,
                 config: OdometryConfig | None = None) -> None:
        """Set up a tracker for images of ``width`` x ``height`` with intrinsics ``K``."""
        self.config = config or OdometryConfig()
        self.width = int(width)
        self.height = int(height)
        self.K = np.asarray(K, dtype=np.float64)
        cfg = self.config
        self._rays: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]] = []
        K_l = self.K
        w, h = self.width, self.height
        for _ in range(cfg.levels):
            v, u = np.mgrid[0:h, 0:w].astype(np.float32)
            rx = (u - K_l[0, 2]) / K_l[0, 0]
            ry = (v - K_l[1, 2]) / K_l[1, 1]
            self._rays.append((K_l.copy(), rx, ry, w, h))
            K_l = scale_intrinsics(K_l, 0.5, 0.5)
            w, h = w // 2, h // 2
        self.reset()

    def reset(self) -> None:
        """Forget all state; the next tracked frame is the world origin."""
        self._kf: list[_Level] | None = None
        self._T_wk = np.eye(4)
        self._T_wc = np.eye(4)
        self._T_wc_prev: np.ndarray | None = None
        self._frames = 0

    # ------------------------------------------------------------------------------------------
    # preprocessing

    def _pyramid(self, depth: np.ndarray, static_mask: np.ndarray | None) -> list[_Level]:
        cfg = self.config
        d = np.asarray(depth, dtype=np.float32)
        d = np.where(np.isfinite(d) & (d >= cfg.min_depth) & (d <= cfg.max_depth), d, 0.0)
        d = d.astype(np.float32)
        if static_mask is not None:
            d[~np.asarray(static_mask, dtype=bool)] = 0.0
        if cfg.bilateral_sigma_m > 0:
            valid = d > 0
            f = cv2.bilateralFilter(d, 5, cfg.bilateral_sigma_m, 2.0)
            d = np.where(valid, f, 0.0).astype(np.float32)
        levels = []
        for li in range(cfg.levels):
            K_l, rx, ry, w, h = self._rays[li]
            if li > 0:
                d = _downsample_depth(d, 0.05)
            z = np.where(d > 0, d, np.nan).astype(np.float32)
            V = np.stack([rx * z, ry * z, z], axis=-1)
            levels.append(_Level(K_l, w, h, V.reshape(-1, 3), self._normals(V).reshape(-1, 3)))
        return levels

    @staticmethod
    def _normals(V: np.ndarray) -> np.ndarray:
        """Normals from central differences, oriented to the camera; NaN at edges/holes."""
        N = np.full_like(V, np.nan)
        dx = V[1:-1, 2:] - V[1:-1, :-2]
        dy = V[2:, 1:-1] - V[:-2, 1:-1]
        n = np.cross(dx, dy)
        norm = np.linalg.norm(n, axis=-1, keepdims=True)
        z = V[1:-1, 1:-1, 2:3]
        # reject differences across depth discontinuities
        jump = (np.abs(dx[..., 2:3]) > 0.1 * z) | (np.abs(dy[..., 2:3]) > 0.1 * z)
        n = np.where(jump, np.nan, n / norm)
        N[1:-1, 1:-1] = n
        return N

    # ------------------------------------------------------------------------------------------
    # ICP

    def _align(self, ref: list[_Level], cur: list[_Level], T: np.ndarray
               ) -> tuple[np.ndarray, int, int, float]:
        """Estimate T_ref_cur by coarse-to-fine ICP from the initial guess ``T``.

        Returns the pose, the number of inliers and of sampled points at the finest level and the
        inlier RMSE.
        """
        cfg = self.config
        cos_gate = np.float32(np.cos(np.radians(cfg.normal_gate_deg)))
        n_inl, n_pts, rmse = 0, 0, np.inf
        for li in reversed(range(cfg.levels)):
            lr, lc = ref[li], cur[li]
            step = cfg.sample_step[li]
            Vc = lc.vertices.reshape(lc.height, lc.width, 3)[::step, ::step].reshape(-1, 3)
            Nc = lc.normals.reshape(lc.height, lc.width, 3)[::step, ::step].reshape(-1, 3)
            sel = np.isfinite(Nc[:, 0])
            P = Vc[sel]
            Pn = Nc[sel]
            n_pts = len(P)
            if n_pts < 6:
                continue
            fx, fy, cx, cy = lr.K[0, 0], lr.K[1, 1], lr.K[0, 2], lr.K[1, 2]
            gate = cfg.dist_gate_m[li]
            for _ in range(cfg.iterations[li]):
                R = T[:3, :3].astype(np.float32)
                q = P @ R.T + T[:3, 3].astype(np.float32)
                z = q[:, 2]
                with np.errstate(divide='ignore', invalid='ignore'):
                    u = np.rint(fx * q[:, 0] / z + cx)
                    v = np.rint(fy * q[:, 1] / z + cy)
                inb = (z > 0) & (u >= 0) & (u < lr.width) & (v >= 0) & (v < lr.height)
                idx = (v[inb] * lr.width + u[inb]).astype(np.int64)
                qi = q[inb]
                vr = lr.vertices[idx]
                nr = lr.normals[idx]
                diff = qi - vr
                r = np.einsum('ij,ij->i', diff, nr)
                ncur = Pn[inb] @ R.T
                good = (np.isfinite(r) & (np.einsum('ij,ij->i', diff, diff) < gate * gate)
                        & (np.einsum('ij,ij->i', ncur, nr) > cos_gate))
                qi, nr, r = qi[good], nr[good], r[good]
                if len(r) < 6:
                    break
                sigma = max(1.4826 * float(np.median(np.abs(r))), cfg.min_sigma_m)
                k = cfg.huber_k * sigma
                ar = np.abs(r)
                w = np.where(ar <= k, 1.0, k / np.maximum(ar, 1e-12)).astype(np.float32)
                A = np.empty((len(r), 6), np.float32)
                A[:, 0] = qi[:, 1] * nr[:, 2] - qi[:, 2] * nr[:, 1]
                A[:, 1] = qi[:, 2] * nr[:, 0] - qi[:, 0] * nr[:, 2]
                A[:, 2] = qi[:, 0] * nr[:, 1] - qi[:, 1] * nr[:, 0]
                A[:, 3:] = nr
                Aw = A * w[:, None]
                Hm = (Aw.T @ A).astype(np.float64)
                b = (Aw.T @ r).astype(np.float64)
                try:
                    xi = -np.linalg.solve(Hm + 1e-9 * np.eye(6), b)
                except np.linalg.LinAlgError:
                    break
                T = _exp_se3(xi) @ T
                inl = ar <= 3 * sigma
                n_inl = int(inl.sum())
                rmse = float(np.sqrt(np.mean(r[inl] ** 2))) if n_inl else np.inf
                if np.abs(xi).max() < cfg.convergence_eps:
                    break
        return T, n_inl, n_pts, rmse

    # ------------------------------------------------------------------------------------------
    # public API

    def track(self, gray: np.ndarray, depth: np.ndarray,
              static_mask: np.ndarray | None = None) -> OdometryResult:
        """Track one frame and return its camera-to-world pose.

        Args:
            gray: H x W uint8 image (unused by the depth-only tracker; kept for the interface).
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
        cur = self._pyramid(depth, static_mask)
        n_valid = int(np.isfinite(cur[0].normals[::cfg.sample_step[0], 0]).sum())
        self._frames += 1
        if self._kf is None:
            if n_valid < cfg.min_points:
                return OdometryResult(self._T_wc.copy(), False, 0, float('nan'), False)
            self._kf = cur
            self._T_wk = self._T_wc.copy()
            self._T_wc_prev = self._T_wc.copy()
            return OdometryResult(self._T_wc.copy(), True, n_valid, 0.0, True)

        # constant-velocity prediction
        if self._T_wc_prev is not None:
            vel = invert_pose(self._T_wc_prev) @ self._T_wc
        else:
            vel = np.eye(4)
        T_pred = _orthonormalize(self._T_wc @ vel)
        ok = n_valid >= cfg.min_points
        n_inl, n_pts, rmse = 0, 0, float('nan')
        T_new = T_pred
        if ok:
            T_kc0 = invert_pose(self._T_wk) @ T_pred
            T_kc, n_inl, n_pts, rmse = self._align(self._kf, cur, T_kc0)
            T_new = _orthonormalize(self._T_wk @ T_kc)
            step = invert_pose(self._T_wc) @ T_new
            ok = (n_inl >= cfg.min_inlier_ratio * max(n_pts, 1) and n_inl >= 6
                  and np.isfinite(rmse) and rmse <= cfg.max_rmse_m
                  and np.linalg.norm(step[:3, 3]) <= cfg.max_step_m
                  and _rotation_deg(step[:3, :3]) <= cfg.max_step_deg
                  and np.all(np.isfinite(T_new)))
            if not ok:
                T_new = T_pred
        self._T_wc_prev = self._T_wc
        self._T_wc = T_new
        is_kf = False
        if n_valid >= cfg.min_points:
            T_kc = invert_pose(self._T_wk) @ T_new
            n_ref = max(n_pts if ok else 1, 1)
            if (not ok or np.linalg.norm(T_kc[:3, 3]) > cfg.kf_trans_m
                    or _rotation_deg(T_kc[:3, :3]) > cfg.kf_rot_deg
                    or n_inl < cfg.kf_min_overlap * n_ref):
                self._kf = cur
                self._T_wk = T_new.copy()
                is_kf = True
        return OdometryResult(T_new.copy(), bool(ok), int(n_inl), float(rmse), is_kf)
