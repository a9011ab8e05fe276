"""Compiled inner loops (numba) of the rgbd backend's alignment (``aligner.RgbdAligner``):
the Gauss-Newton steps of one pyramid level and a level's normals, samples and tables.

Each step visits every tracked point a few times: project it into the reference, look up the
reference vertex and normal, gate the association, weight the residual and add its Jacobian to
the 6 x 6 normal equations. As numpy operations that was some 40 passes over arrays of a few
hundred to 20,000 points, and for a masked object's few hundred points the interpreter's
overhead between them dominated. Here one call runs a level's steps.

Conventions as in ``aligner.py``: depth maps H x W float32 in metres (0 = none), points and
normals 3 x M float32 in a camera, ``R``, ``t`` (float32) take the tracked frame's points into
the reference camera, pixel coordinates of the nearest-pixel association with the ``+ 0.5``
already in ``cx``, ``cy``. Normal equations are summed in float64.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def icp_residuals(P: np.ndarray, Pn: np.ndarray, R: np.ndarray, t: np.ndarray, fx: float,
                  fy: float, cx: float, cy: float, width: int, height: int, ref: np.ndarray,
                  gate2: float, cos_gate: float, inv_sig: np.ndarray, keep: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Projective association of the points ``P`` (normals ``Pn``) moved by ``R``, ``t`` with
    the reference table ``ref`` ((H*W + 1) x 6: vertex, normal; zeros = none).

    Returns the moved points ``q`` (3 x M), the associated reference normals (3 x M), the
    point-to-plane residuals ``r`` (M, metres), ``e = |r| * inv_sig`` (the residual at the
    noise level of 1 m) and ``good``: associated within the distance ``gate2`` (squared) and
    the normal-angle gate, and set in ``keep``.
    """
    m = P.shape[1]
    q = np.empty((3, m), np.float32)
    nrm = np.zeros((3, m), np.float32)
    r = np.zeros(m, np.float32)
    e = np.zeros(m, np.float32)
    good = np.zeros(m, np.bool_)
    for i in range(m):
        x = R[0, 0] * P[0, i] + R[0, 1] * P[1, i] + R[0, 2] * P[2, i] + t[0]
        y = R[1, 0] * P[0, i] + R[1, 1] * P[1, i] + R[1, 2] * P[2, i] + t[1]
        z = R[2, 0] * P[0, i] + R[2, 1] * P[1, i] + R[2, 2] * P[2, i] + t[2]
        q[0, i], q[1, i], q[2, i] = x, y, z
        if not z > 0:
            continue
        iz = np.float32(1.0) / z
        u = fx * x * iz + cx
        v = fy * y * iz + cy
        if not (u >= 0 and u < width and v >= 0 and v < height):
            continue
        k = int(v) * width + int(u)
        gz = ref[k, 2]
        if not gz > 0:
            continue
        dx, dy, dz = x - ref[k, 0], y - ref[k, 1], z - gz
        nx, ny, nz = ref[k, 3], ref[k, 4], ref[k, 5]
        nrm[0, i], nrm[1, i], nrm[2, i] = nx, ny, nz
        res = dx * nx + dy * ny + dz * nz
        r[i] = res
        e[i] = abs(res) * inv_sig[i]
        ncx = R[0, 0] * Pn[0, i] + R[0, 1] * Pn[1, i] + R[0, 2] * Pn[2, i]
        ncy = R[1, 0] * Pn[0, i] + R[1, 1] * Pn[1, i] + R[1, 2] * Pn[2, i]
        ncz = R[2, 0] * Pn[0, i] + R[2, 1] * Pn[1, i] + R[2, 2] * Pn[2, i]
        good[i] = (keep[i] and dx * dx + dy * dy + dz * dz < gate2
                   and ncx * nx + ncy * ny + ncz * nz > cos_gate)
    return q, nrm, r, e, good


@numba.njit(cache=True, nogil=True)
def twist_normal_equations(q: np.ndarray, g: np.ndarray, weight: np.ndarray,
                           residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normal equations ``H = sum w a a^T`` (6 x 6) and ``b = sum w a r`` (6) of the rows
    ``a = [q x g; g]`` of points ``q`` (3 x K) with gradients ``g`` (3 x K: the normal of a
    point-to-plane residual, the image gradient of a photometric one), weights and
    residuals (K); points of weight 0 are skipped. Summed in order in float64 scalars that stay
    in registers (an array accumulator was 1.6 times slower; reassociated, vectorised sums 3
    times faster, but they moved a development seed's camera by enough to cost a test 0.1 cm
    at 128x96)."""
    h00, h01, h02, h03, h04, h05 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    h11, h12, h13, h14, h15 = 0.0, 0.0, 0.0, 0.0, 0.0
    h22, h23, h24, h25, h33 = 0.0, 0.0, 0.0, 0.0, 0.0
    h34, h35, h44, h45, h55 = 0.0, 0.0, 0.0, 0.0, 0.0
    b0, b1, b2, b3, b4, b5 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    for i in range(q.shape[1]):
        w = float(weight[i])
        if w == 0.0:
            continue
        q0, q1, q2 = float(q[0, i]), float(q[1, i]), float(q[2, i])
        a3, a4, a5 = float(g[0, i]), float(g[1, i]), float(g[2, i])
        a0, a1, a2 = q1 * a5 - q2 * a4, q2 * a3 - q0 * a5, q0 * a4 - q1 * a3
        r = float(residual[i])
        wa = w * a0
        b0 += wa * r
        h00 += wa * a0
        h01 += wa * a1
        h02 += wa * a2
        h03 += wa * a3
        h04 += wa * a4
        h05 += wa * a5
        wa = w * a1
        b1 += wa * r
        h11 += wa * a1
        h12 += wa * a2
        h13 += wa * a3
        h14 += wa * a4
        h15 += wa * a5
        wa = w * a2
        b2 += wa * r
        h22 += wa * a2
        h23 += wa * a3
        h24 += wa * a4
        h25 += wa * a5
        wa = w * a3
        b3 += wa * r
        h33 += wa * a3
        h34 += wa * a4
        h35 += wa * a5
        wa = w * a4
        b4 += wa * r
        h44 += wa * a4
        h45 += wa * a5
        wa = w * a5
        b5 += wa * r
        h55 += wa * a5
    H = np.empty((6, 6))
    H[0, 0] = h00
    H[0, 1] = H[1, 0] = h01
    H[0, 2] = H[2, 0] = h02
    H[0, 3] = H[3, 0] = h03
    H[0, 4] = H[4, 0] = h04
    H[0, 5] = H[5, 0] = h05
    H[1, 1] = h11
    H[1, 2] = H[2, 1] = h12
    H[1, 3] = H[3, 1] = h13
    H[1, 4] = H[4, 1] = h14
    H[1, 5] = H[5, 1] = h15
    H[2, 2] = h22
    H[2, 3] = H[3, 2] = h23
    H[2, 4] = H[4, 2] = h24
    H[2, 5] = H[5, 2] = h25
    H[3, 3] = h33
    H[3, 4] = H[4, 3] = h34
    H[3, 5] = H[5, 3] = h35
    H[4, 4] = h44
    H[4, 5] = H[5, 4] = h45
    H[5, 5] = h55
    return H, np.array([b0, b1, b2, b3, b4, b5])


@numba.njit(cache=True, nogil=True)
def photo_residuals(q: np.ndarray, good: np.ndarray, inten: np.ndarray, stride: int,
                    fx: float, fy: float, cx: float, cy: float, width: int, height: int,
                    photo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photometric residuals ``I_ref(pi(q)) - I_cur`` of every ``stride``-th point that is
    ``good`` and projects inside the reference with a full bilinear neighbourhood; ``photo``
    is the reference's (H*W + W + 2) x 3 intensity and x / y gradient table.

    Returns the kept points (3 x K), their residuals (K) and the residuals' gradients with
    respect to the point (3 x K: the bilinear image gradient through the projection)."""
    m = q.shape[1]
    kept = np.empty((3, m), np.float32)
    res = np.empty(m, np.float32)
    grad = np.empty((3, m), np.float32)
    n = 0
    for i in range(0, m, stride):
        if not good[i]:
            continue
        x, y, z = q[0, i], q[1, i], q[2, i]
        iz = np.float32(1.0) / z
        xs = fx * x * iz + cx
        ys = fy * y * iz + cy
        if not (xs >= 0 and xs < width - 1 and ys >= 0 and ys < height - 1):
            continue
        x0, y0 = int(xs), int(ys)
        ax, ay = xs - np.float32(x0), ys - np.float32(y0)
        i00 = y0 * width + x0
        s = np.empty(3, np.float32)
        for c in range(3):
            top = photo[i00, c] * (1 - ax) + photo[i00 + 1, c] * ax
            bot = photo[i00 + width, c] * (1 - ax) + photo[i00 + width + 1, c] * ax
            s[c] = top * (1 - ay) + bot * ay
        kept[0, n], kept[1, n], kept[2, n] = x, y, z
        res[n] = s[0] - inten[i]
        gx = s[1] * fx * iz
        gy = s[2] * fy * iz
        grad[0, n], grad[1, n], grad[2, n] = gx, gy, -(gx * x + gy * y) * iz
        n += 1
    return kept[:, :n], res[:n], grad[:, :n]


@numba.njit(cache=True, nogil=True)
def cauchy_weights(e: np.ndarray, good: np.ndarray, w_noise: np.ndarray, c: np.float32
                   ) -> np.ndarray:
    """Cauchy weights ``w_noise / (1 + (e / c)^2)`` of the ``good`` residuals, 0 elsewhere
    (float32, as numpy computed them)."""
    w = np.zeros(e.size, np.float32)
    one = np.float32(1.0)
    for i in range(e.size):
        if good[i]:
            t = e[i] / c
            w[i] = w_noise[i] / (one + t * t)
    return w


@numba.njit(cache=True, nogil=True)
def huber_weights(res: np.ndarray, c: np.float32, scale: np.float32) -> np.ndarray:
    """Huber-like weights ``min(1, c / |r|)`` (|r| at least 1e-6) times ``scale`` (float32)."""
    w = np.empty(res.size, np.float32)
    one, tiny = np.float32(1.0), np.float32(1e-6)
    for i in range(res.size):
        w[i] = min(one, c / max(abs(res[i]), tiny)) * scale
    return w


@numba.njit(cache=True, nogil=True)
def robust_scale(a: np.ndarray, floor: float) -> float:
    """1.4826 * median of the absolute residuals ``a`` (every k-th of more than 4096), at
    least ``floor``."""
    if a.size == 0:
        return floor
    if a.size > 4096:
        a = a[::a.size // 4096 + 1]
    k = a.size // 2
    return max(1.4826 * float(np.partition(a, k)[k]), floor)


@numba.njit(cache=True, nogil=True)
def so3_exp(w: np.ndarray) -> np.ndarray:
    """3x3 rotation of a rotation vector (Rodrigues' formula)."""
    theta = np.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    K = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    if theta < 1e-12:
        return np.eye(3) + K
    return (np.eye(3) + (np.sin(theta) / theta) * K
            + ((1.0 - np.cos(theta)) / (theta * theta)) * (K @ K))


@numba.njit(cache=True, nogil=True)
def so3_log(R: np.ndarray) -> np.ndarray:
    """Rotation vector of a 3x3 rotation (the axis from the symmetric part near 180 degrees,
    where the antisymmetric part vanishes)."""
    c = min(1.0, max(-1.0, 0.5 * (R[0, 0] + R[1, 1] + R[2, 2] - 1.0)))
    theta = np.arccos(c)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if theta < 1e-8:
        return 0.5 * v
    if theta <= 3.0:
        return (theta / (2.0 * np.sin(theta))) * v
    # R + R^T = 2 cos(theta) I + 2 (1 - cos(theta)) n n^T: n from its largest diagonal entry
    i = int(np.argmax(np.array([R[0, 0], R[1, 1], R[2, 2]])))
    n = np.empty(3)
    for j in range(3):
        n[j] = 0.5 * (R[j, i] + R[i, j]) - (c if i == j else 0.0)
    n /= np.sqrt(n[i])
    n /= np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2])
    if n[0] * v[0] + n[1] * v[1] + n[2] * v[2] < 0:  # v = 2 sin(theta) n
        n = -n
    return theta * n


@numba.njit(cache=True, nogil=True)
def se3_exp(xi: np.ndarray) -> np.ndarray:
    """4x4 transform of a twist (rotation vector, translation), applied on the left."""
    T = np.eye(4)
    T[:3, :3] = so3_exp(xi[:3])
    T[:3, 3] = xi[3:]
    return T


@numba.njit(cache=True, nogil=True)
def se3_log(T: np.ndarray) -> np.ndarray:
    """(rotation vector, translation) of a 4x4 transform (inverse of `se3_exp`)."""
    out = np.empty(6)
    out[:3] = so3_log(np.ascontiguousarray(T[:3, :3]))
    out[3:] = T[:3, 3]
    return out


@numba.njit(cache=True, nogil=True)
def gauss_newton_level(T: np.ndarray, P: np.ndarray, Pn: np.ndarray, ref: np.ndarray,
                       fx: np.float32, fy: np.float32, cx: np.float32, cy: np.float32,
                       width: int, height: int, gate2: np.float32, cos_gate: np.float32,
                       inv_sig: np.ndarray, w_noise: np.ndarray, iterations: int,
                       reject_k: float, min_scale: float, robust_k: float, photo: np.ndarray,
                       inten: np.ndarray, photo_stride: int, photo_cx: np.float32,
                       photo_cy: np.float32, photo_scale: np.float32, prior: np.ndarray,
                       T_prior_inv: np.ndarray, convergence_eps: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, int]:
    """The Gauss-Newton steps of one pyramid level of ``aligner.RgbdAligner.align`` from
    ``T`` (4x4 float64, tracked camera to reference): point-to-plane residuals with Cauchy
    weights, outliers of the coarse solution frozen when ``reject_k`` > 0 (the finest
    level), the photometric term when ``photo`` and ``inten`` are not empty, the motion prior
    ``prior`` (6 x 6 information; empty: none) towards the inverse of ``T_prior_inv``.

    Returns T, then the residuals, normalised residuals, gated associations and robust scale
    of the last step taken, and the number of gated associations then (-1: no step taken;
    the residual arrays are then empty)."""
    n_pts = P.shape[1]
    keep = np.ones(n_pts, np.bool_)
    last_r = np.empty(0, np.float32)
    last_e = np.empty(0, np.float32)
    last_good = np.empty(0, np.bool_)
    last_scale = 0.0
    n_good = -1
    use_photo = photo.size > 0 and inten.size > 0
    damping = 1e-6 * np.eye(6)
    for it in range(iterations):
        R = T[:3, :3].astype(np.float32)
        t = T[:3, 3].astype(np.float32)
        q, nrm, r, e, good = icp_residuals(P, Pn, R, t, fx, fy, cx, cy, width, height, ref,
                                           gate2, cos_gate, inv_sig, keep)
        if reject_k > 0 and it == 0 and np.count_nonzero(good) > 6:
            # freeze the outliers of the coarse solution (e.g. moving objects) before the
            # finest level, whose weights may favour some points strongly
            keep = e <= np.float32(reject_k * robust_scale(e[good], min_scale))
            good &= keep
        n_good_it = np.count_nonzero(good)
        if n_good_it < 6:
            break
        scale = robust_scale(e[good], min_scale)
        H, b = twist_normal_equations(q, nrm, cauchy_weights(e, good, w_noise,
                                                             np.float32(robust_k * scale)), r)
        if use_photo:
            kept, res, grad = photo_residuals(q, good, inten, photo_stride, fx, fy, photo_cx,
                                              photo_cy, width, height, photo)
            if res.size >= 6:
                c = np.float32(1.5 * robust_scale(np.abs(res), 1.0))
                Hp, bp = twist_normal_equations(kept, grad, huber_weights(res, c, photo_scale),
                                                res)
                H += Hp
                b += bp
        if prior.size > 0:
            # constant-velocity motion prior: r = log(T T_pred^-1) + xi
            H += prior
            b += prior @ se3_log(T @ T_prior_inv)
        try:
            xi = -np.linalg.solve(H + damping, b)
        except Exception:  # singular: no step
            break
        if not np.all(np.isfinite(xi)):
            break
        T = se3_exp(xi) @ T
        last_r, last_e, last_good, last_scale, n_good = r, e, good, scale, n_good_it
        if np.abs(xi).max() < convergence_eps:
            break
    return T, last_r, last_e, last_good, last_scale, n_good


@numba.njit(cache=True, nogil=True)
def depth_normals(z: np.ndarray, rx: np.ndarray, ry: np.ndarray, fx: float, fy: float
                  ) -> np.ndarray:
    """3 x H x W camera-facing unit normals of a depth map from its central differences
    (``aligner.RgbdAligner._normals``); zeros at the border, next to a hole and across a depth
    jump of 5 % a pixel. ``rx``, ``ry``: the pixel rays' x / z and y / z."""
    h, w = z.shape
    out = np.zeros((3, h, w), np.float32)
    half, jump = np.float32(0.5), np.float32(0.05)
    for v in range(1, h - 1):
        for u in range(1, w - 1):
            zc = z[v, u]
            if not (zc > 0 and z[v, u + 1] > 0 and z[v, u - 1] > 0 and z[v + 1, u] > 0
                    and z[v - 1, u] > 0):
                continue
            zu = (z[v, u + 1] - z[v, u - 1]) * half
            zv = (z[v + 1, u] - z[v - 1, u]) * half
            if not (abs(zu) < jump * zc and abs(zv) < jump * zc):
                continue
            gx = fx * zu
            gy = fy * zv
            nz = -(zc + gx * rx[v, u] + gy * ry[v, u])
            inv = np.float32(1.0) / np.sqrt(gx * gx + gy * gy + nz * nz + np.float32(1e-30))
            out[0, v, u] = gx * inv
            out[1, v, u] = gy * inv
            out[2, v, u] = nz * inv
    return out


@numba.njit(cache=True, nogil=True)
def sample_level(depth: np.ndarray, normals: np.ndarray, rx: np.ndarray, ry: np.ndarray,
                 gray: np.ndarray, step: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The points with a normal on every ``step``-th row and column, row by row: 3 x M points,
    3 x M normals, their flat pixel indices (M) and intensities (M; empty when ``gray`` is)."""
    h, w = depth.shape
    m = 0
    for v in range(0, h, step):
        for u in range(0, w, step):
            if normals[2, v, u] != 0:
                m += 1
    pts = np.empty((3, m), np.float32)
    nrm = np.empty((3, m), np.float32)
    pix = np.empty(m, np.int64)
    inten = np.empty(m if gray.size else 0, np.float32)
    i = 0
    for v in range(0, h, step):
        for u in range(0, w, step):
            if normals[2, v, u] == 0:
                continue
            zc = depth[v, u]
            pts[0, i], pts[1, i], pts[2, i] = rx[v, u] * zc, ry[v, u] * zc, zc
            nrm[0, i], nrm[1, i], nrm[2, i] = normals[0, v, u], normals[1, v, u], normals[2, v, u]
            pix[i] = v * w + u
            if gray.size:
                inten[i] = gray[v, u]
            i += 1
    return pts, nrm, pix, inten


@numba.njit(cache=True, nogil=True)
def halve_depth(depth: np.ndarray, max_jump: np.float32) -> np.ndarray:
    """A depth map (0 = none) at half size: the mean of each 2 x 2 block's valid depths, 0 for
    a block without any or whose depths spread more than ``max_jump`` of the mean (an edge)."""
    h, w = depth.shape[0] // 2, depth.shape[1] // 2
    out = np.zeros((h, w), np.float32)
    big = np.float32(1e9)
    for v in range(h):
        for u in range(w):
            a, c = depth[2 * v, 2 * u], depth[2 * v, 2 * u + 1]
            d, e = depth[2 * v + 1, 2 * u], depth[2 * v + 1, 2 * u + 1]
            cnt = np.float32((a > 0) + (c > 0) + (d > 0) + (e > 0))
            if cnt == 0:
                continue
            mean = (a + c + d + e) / cnt
            hi = max(max(a, c), max(d, e))
            lo = min(min(a if a > 0 else big, c if c > 0 else big),
                     min(d if d > 0 else big, e if e > 0 else big))
            if hi - lo < max_jump * mean:
                out[v, u] = mean
    return out


@numba.njit(cache=True, nogil=True)
def reference_table(depth: np.ndarray, normals: np.ndarray, rx: np.ndarray, ry: np.ndarray
                    ) -> np.ndarray:
    """(H*W + 1) x 6 vertex and normal table of a level (zeros where it has no normal, and a
    last all-zero row for associations that miss the image)."""
    h, w = depth.shape
    ref = np.zeros((h * w + 1, 6), np.float32)
    for v in range(h):
        for u in range(w):
            if normals[2, v, u] == 0:
                continue
            k = v * w + u
            z = depth[v, u]
            ref[k, 0], ref[k, 1], ref[k, 2] = rx[v, u] * z, ry[v, u] * z, z
            ref[k, 3], ref[k, 4], ref[k, 5] = normals[0, v, u], normals[1, v, u], normals[2, v, u]
    return ref


@numba.njit(cache=True, nogil=True)
def fuse_depth(depth: np.ndarray, weight: np.ndarray, pts: np.ndarray, nrm: np.ndarray,
               point_weight: np.ndarray, fill: bool, rx: np.ndarray, ry: np.ndarray,
               fx: np.float32, fy: np.float32, cx: np.float32, cy: np.float32,
               gate_m: np.float32, max_weight: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Fuse 3 x M points ``pts`` (normals ``nrm``, in this camera) into a level-0 depth map
    (H x W, 0 = none) and its per-pixel weights (in frames, capped at ``max_weight``).

    Each point goes to the pixel it projects to, its depth along that pixel's ray taken from
    its tangent plane (its own z at grazing angles). It is dropped when it disagrees with the
    map by ``gate_m`` at 1 m (growing with z^2), unless the pixel is empty and ``fill`` is set.
    A pixel's new depth is the weighted mean of the map and its points (``point_weight``: one
    per point, or one for all). Sums in float64 in point order, as ``np.bincount``.
    """
    h, w = depth.shape
    acc_w = np.zeros(h * w, np.float64)
    acc_z = np.zeros(h * w, np.float64)
    one, grazing = np.float32(1.0), np.float32(0.3)
    for i in range(pts.shape[1]):
        z = pts[2, i]
        if not z > 0:
            continue
        iz = one / z
        uf = fx * pts[0, i] * iz + cx
        vf = fy * pts[1, i] * iz + cy
        if not (uf >= 0 and uf < w and vf >= 0 and vf < h):
            continue
        v, u = np.int64(vf), np.int64(uf)
        den = nrm[0, i] * rx[v, u] + nrm[1, i] * ry[v, u] + nrm[2, i]
        zr = z
        if abs(den) > grazing:
            zr = (nrm[0, i] * pts[0, i] + nrm[1, i] * pts[1, i] + nrm[2, i] * z) / den
        dt = depth[v, u]
        scale = max(dt, one)
        ok = abs(zr - dt) < gate_m * (scale * scale) or (fill and dt == 0)
        if not (ok and zr > 0):
            continue
        ws = point_weight[i] if point_weight.size > 1 else point_weight[0]
        acc_w[v * w + u] += np.float64(ws)
        acc_z[v * w + u] += np.float64(ws * zr)
    new = np.empty((h, w), np.float32)
    tot = np.empty((h, w), np.float32)
    for v in range(h):
        for u in range(w):
            aw = np.float32(acc_w[v * w + u])
            t = weight[v, u] + aw
            new[v, u] = ((weight[v, u] * depth[v, u] + np.float32(acc_z[v * w + u])) / t
                         if aw > 0 else depth[v, u])
            tot[v, u] = min(t, max_weight)
    return new, tot
