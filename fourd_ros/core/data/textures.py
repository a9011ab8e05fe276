"""Procedural, tileable textures for the synthetic scene generator.

A texture is an S x S x 3 uint8 RGB image covering one tile of a surface's own 2D coordinates
(metres divided by the tile size), so texture colours move rigidly with the surface. All procedural
patterns are periodic over the tile, so tiled surfaces show no seams. Optional photo textures
(``photo_texture``, ``make_texture(photo_prob=...)``) are crops of real CC0 / public-domain photos
shipped with scikit-image; they are not periodic, so tiled surfaces show seams at tile borders
(the seams still move rigidly with the surface, so the ground truth stays exact).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

PATTERNS = ('noise', 'stripes', 'checkers', 'blobs')
# scikit-image sample photos used by ``photo_texture``; all ship inside the scikit-image wheel
# (no download). 'hubble_deep_field' (82 % near-black sky) and 'retina' (black border around a
# smooth fundus) are left out: their crops are mostly textureless.
PHOTO_NAMES = ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'brick', 'grass', 'gravel')


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def value_noise(rng: np.random.Generator, size: int, cells: int = 4, octaves: int = 4,
                persistence: float = 0.5) -> np.ndarray:
    """Tileable multi-octave value noise.

    Args:
        rng: random generator.
        size: output side length in texels.
        cells: lattice cells per tile of the coarsest octave (doubles per octave).
        octaves: number of octaves.
        persistence: amplitude factor between octaves.

    Returns:
        size x size float32 in [0, 1].
    """
    out = np.zeros((size, size), np.float64)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = min(cells * 2 ** o, size)
        grid = rng.random((c, c))
        x = np.arange(size) * (c / size)
        i0 = np.floor(x).astype(int)
        f = _smoothstep(x - i0)
        i0 %= c
        i1 = (i0 + 1) % c
        # separable smooth interpolation on a periodic lattice
        rows = grid[i0] * (1.0 - f)[:, None] + grid[i1] * f[:, None]
        layer = rows[:, i0] * (1.0 - f)[None, :] + rows[:, i1] * f[None, :]
        out += amp * layer
        total += amp
        amp *= persistence
    out /= total
    # stretch contrast: averaging octaves concentrates values around 0.5
    lo, hi = out.min(), out.max()
    return ((out - lo) / max(hi - lo, 1e-9)).astype(np.float32)


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile coordinates in [0, 1): (x = column, y = row)."""
    t = np.arange(size) / size
    return np.meshgrid(t, t)


def stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Soft periodic stripes with a random integer direction, warped by low-frequency noise."""
    x, y = _coords(size)
    kx, ky = 0, 0
    while kx == 0 and ky == 0:
        kx, ky = rng.integers(-8, 9, size=2)
    warp = value_noise(rng, size, cells=2, octaves=2) - 0.5
    phase = 2 * np.pi * (kx * x + ky * y) + rng.uniform(0.5, 2.5) * warp
    sharp = rng.uniform(2.0, 6.0)
    return (0.5 + 0.5 * np.tanh(sharp * np.sin(phase))).astype(np.float32)


def checkers(rng: np.random.Generator, size: int) -> np.ndarray:
    """Checkerboard with an integer number of squares per tile (slightly blurred edges)."""
    x, y = _coords(size)
    nx, ny = rng.integers(2, 12, size=2)
    sx = np.sin(2 * np.pi * nx * x)
    sy = np.sin(2 * np.pi * ny * y)
    return (0.5 + 0.5 * np.tanh(6.0 * sx * sy)).astype(np.float32)


def blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random soft discs with periodic (wrap-around) distances."""
    x, y = _coords(size)
    out = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(6, 24))):
        cx, cy = rng.random(2)
        r = rng.uniform(0.03, 0.15)
        dx = np.abs(x - cx)
        dy = np.abs(y - cy)
        dx = np.minimum(dx, 1.0 - dx)
        dy = np.minimum(dy, 1.0 - dy)
        d = np.sqrt(dx * dx + dy * dy)
        disc = 0.5 + 0.5 * np.tanh((r - d) * (30.0 / r))
        out = np.maximum(out, disc.astype(np.float32) * rng.uniform(0.5, 1.0))
    return out


def random_palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random RGB colours in [0, 1] with varied hue, saturation and value (n x 3 float32)."""
    hsv = np.stack([rng.random(n), rng.uniform(0.2, 0.9, n), rng.uniform(0.3, 1.0, n)], axis=1)
    h6 = hsv[:, 0] * 6.0
    i = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    s, v = hsv[:, 1], hsv[:, 2]
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([
        np.stack([v, t, p], 1), np.stack([q, v, p], 1), np.stack([p, v, t], 1),
        np.stack([p, q, v], 1), np.stack([t, p, v], 1), np.stack([v, p, q], 1)])
    return table[i, np.arange(n)].astype(np.float32)


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The ``PHOTO_NAMES`` photos as read-only H x W x 3 uint8 RGB arrays (loaded once)."""
    import skimage.data  # imported lazily: only photo textures need scikit-image

    out = []
    for name in PHOTO_NAMES:
        img = np.asarray(getattr(skimage.data, name)(), np.uint8)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        img = np.ascontiguousarray(img[..., :3])
        img.setflags(write=False)
        out.append(img)
    return tuple(out)


def photo_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of a real photo, resized to size x size.

    The photo is drawn uniformly from ``PHOTO_NAMES``, scikit-image's sample images
    (``skimage.data``): astronaut (NASA, public domain), coffee (CC0, Rachel Michetti), chelsea
    (CC0, Stefan van der Walt), rocket (SpaceX, public domain), camera (CC0, Lav Varshney),
    brick and gravel (CC0Textures, CC0) and grass (CC0). They ship inside the scikit-image wheel,
    so nothing is downloaded; the photos are loaded once and cached. Grey photos (camera, brick,
    grass, gravel) are replicated to three equal channels.

    The crop side is a uniform 0.3-1.0 of the photo's shorter side at a uniform position, flipped
    left-right and up-down each with probability 0.5, and resized with ``cv2.INTER_AREA``. Unlike
    the procedural patterns the result is not periodic.

    Args:
        rng: random generator.
        size: output side length in texels.

    Returns:
        size x size x 3 uint8 RGB.
    """
    photos = _photos()
    img = photos[int(rng.integers(len(photos)))]
    h, w = img.shape[:2]
    side = min(max(int(round(rng.uniform(0.3, 1.0) * min(h, w))), 1), h, w)
    y0 = int(rng.integers(h - side + 1))
    x0 = int(rng.integers(w - side + 1))
    crop = img[y0:y0 + side, x0:x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    out = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out, dtype=np.uint8)


def make_texture(rng: np.random.Generator, size: int = 256, pattern: str | None = None,
                 photo_prob: float = 0.0) -> np.ndarray:
    """One random texture: a pattern mixing two colours, modulated by detail noise, or a photo.

    Args:
        rng: random generator.
        size: side length in texels.
        pattern: one of ``PATTERNS``; random when None. Ignored when a photo is chosen.
        photo_prob: probability in [0, 1] that the texture is a ``photo_texture`` crop (lightly
            modulated by detail noise) instead of a procedural pattern. With 0 (the default) no
            extra random numbers are drawn, so the random stream and the textures are exactly
            those of the procedural-only generator.

    Returns:
        size x size x 3 uint8 RGB.
    """
    if not 0.0 <= photo_prob <= 1.0:
        raise ValueError(f'photo_prob must be in [0, 1], got {photo_prob}')
    if pattern is not None and pattern not in PATTERNS:
        raise ValueError(f'unknown texture pattern {pattern!r}; expected one of {PATTERNS}')
    if photo_prob > 0.0 and rng.random() < photo_prob:
        img = photo_texture(rng, size).astype(np.float32) / 255.0
        # light detail noise so that flat photo regions (sky, walls) keep some texture
        detail = value_noise(rng, size, cells=int(rng.integers(8, 32)), octaves=3)
        strength = rng.uniform(0.0, 0.25)
        img = img * (1.0 - strength / 2 + strength * detail[..., None])
        return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    if pattern is None:
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    if pattern == 'noise':
        mix = value_noise(rng, size, cells=int(rng.integers(2, 8)), octaves=5)
    elif pattern == 'stripes':
        mix = stripes(rng, size)
    elif pattern == 'checkers':
        mix = checkers(rng, size)
    elif pattern == 'blobs':
        mix = blobs(rng, size)
    else:
        raise ValueError(f'unknown texture pattern {pattern!r}; expected one of {PATTERNS}')
    c = random_palette(rng, 2)
    img = c[0] * (1.0 - mix[..., None]) + c[1] * mix[..., None]
    # fine multi-octave detail so that no region is flat (matching needs texture everywhere)
    detail = value_noise(rng, size, cells=int(rng.integers(8, 32)), octaves=3)
    strength = rng.uniform(0.25, 0.6)
    img = img * (1.0 - strength / 2 + strength * detail[..., None])
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def sample_texture(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrap-around lookup.

    Args:
        tex: S x S x 3 float32 texture.
        u: N texel column coordinates (any real value; texel centres at integers).
        v: N texel row coordinates.

    Returns:
        N x 3 float32 colours.
    """
    size_v, size_u = tex.shape[:2]
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = (u - u0).astype(np.float32)[:, None]
    fv = (v - v0).astype(np.float32)[:, None]
    u0 = u0.astype(np.int64) % size_u
    v0 = v0.astype(np.int64) % size_v
    u1 = (u0 + 1) % size_u
    v1 = (v0 + 1) % size_v
    top = tex[v0, u0] * (1.0 - fu) + tex[v0, u1] * fu
    bot = tex[v1, u0] * (1.0 - fu) + tex[v1, u1] * fu
    return top * (1.0 - fv) + bot * fv
