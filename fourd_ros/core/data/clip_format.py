"""On-disk format of synthetic clips (``fourd_synthetic_clip`` version 1).

A clip of F frames, H x W pixels and N objects is a directory::

    meta.json            format description, see below
    K.txt                3x3 float64 pinhole intrinsics (np.savetxt, one matrix row per line),
                         shared by all frames, pixel centres at integer coordinates
    poses.txt            F lines 'stamp tx ty tz qx qy qz qw' (TUM trajectory format): stamp in
                         seconds, camera-to-world pose T_wc (world = first camera, OpenCV axes,
                         metres), Hamilton unit quaternion (x, y, z, w)
    object_poses.npy     float64 F x (N+1) x 4 x 4 object-to-world poses T_wo per frame; index 0
                         is the static background (identity), k >= 1 is object k
    rgb/000000.png       8-bit 3-channel colour image of frame 0 (standard PNG, RGB content)
    depth/000000.npy     float32 H x W camera z in metres (> 0 everywhere)
    instance/000000.png  16-bit 1-channel PNG: 0 = static room, k >= 1 = object k
    scene.json           optional: room/object geometry and trajectories (``Scene.to_dict``),
                         needed for ``SyntheticClip.cast_rays`` and exact poses between frames
    textures/000.png     optional, with scene.json: the scene's textures (8-bit RGB)

Frame files are numbered 000000 .. F-1 with six digits. ``meta.json`` holds::

    {"format": "fourd_synthetic_clip", "version": 1, "width": W, "height": H, "fps": float,
     "frames": F, "num_objects": N, "object_moving": [N bools for objects 1..N],
     "seed": int or null, "depth_unit": "m", "info": {...free-form, e.g. the generator config}}

Reading validates the format name, version, file presence and array shapes; problems raise
``FileNotFoundError`` (missing file) or ``ValueError`` (bad content) naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from fourd_ros.core.data.synthetic import Scene, SyntheticClip

FORMAT_NAME = 'fourd_synthetic_clip'
FORMAT_VERSION = 1


def _name(i: int) -> str:
    return f'{i:06d}'


def _write_png(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img):
        raise OSError(f'could not write {path}')


def write_clip(clip: SyntheticClip, out_dir: str | Path) -> Path:
    """Write a clip in the documented format; returns the directory. Overwrites files."""
    out = Path(out_dir)
    for sub in ('rgb', 'depth', 'instance'):
        (out / sub).mkdir(parents=True, exist_ok=True)
    F = len(clip)
    if clip.num_objects > np.iinfo(np.uint16).max:
        raise ValueError('too many objects for a 16-bit instance image')
    meta = {
        'format': FORMAT_NAME, 'version': FORMAT_VERSION, 'width': clip.width,
        'height': clip.height, 'fps': float(clip.fps), 'frames': F,
        'num_objects': clip.num_objects,
        'object_moving': [bool(m) for m in clip.moving[1:]],
        'seed': None if clip.seed is None else int(clip.seed), 'depth_unit': 'm',
        'info': clip.info,
    }
    (out / 'meta.json').write_text(json.dumps(meta, indent=1))
    np.savetxt(out / 'K.txt', clip.K, fmt='%.17g')
    q = Rotation.from_matrix(clip.T_wc[:, :3, :3]).as_quat()
    with open(out / 'poses.txt', 'w') as fh:
        fh.write('# stamp tx ty tz qx qy qz qw (camera-to-world)\n')
        for i in range(F):
            vals = [clip.stamps[i], *clip.T_wc[i, :3, 3], *q[i]]
            fh.write(' '.join(f'{v:.17g}' for v in vals) + '\n')
    np.save(out / 'object_poses.npy', clip.T_wo.astype(np.float64))
    for i in range(F):
        _write_png(out / 'rgb' / f'{_name(i)}.png', clip.rgb[i][..., ::-1])
        np.save(out / 'depth' / f'{_name(i)}.npy', clip.depth[i].astype(np.float32))
        _write_png(out / 'instance' / f'{_name(i)}.png', clip.instance[i].astype(np.uint16))
    if clip.scene is not None:
        (out / 'scene.json').write_text(json.dumps(clip.scene.to_dict(), indent=1))
        if clip.scene.textures:
            (out / 'textures').mkdir(exist_ok=True)
            for k, tex in enumerate(clip.scene.textures):
                _write_png(out / 'textures' / f'{k:03d}.png', tex[..., ::-1])
    return out


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f'synthetic clip: missing file {path}')
    return path


def _read_png(path: Path, flags: int) -> np.ndarray:
    img = cv2.imread(str(_need(path)), flags)
    if img is None:
        raise ValueError(f'synthetic clip: cannot decode image {path}')
    return img


def _check_shape(path: Path, arr: np.ndarray, shape: tuple) -> None:
    if arr.shape != shape:
        raise ValueError(f'synthetic clip: {path} has shape {arr.shape}, expected {shape}')


def read_meta(clip_dir: str | Path) -> dict:
    """Read and validate ``meta.json`` of a clip directory."""
    path = _need(Path(clip_dir) / 'meta.json')
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f'synthetic clip: {path} is not valid JSON ({e})') from None
    if not isinstance(meta, dict) or meta.get('format') != FORMAT_NAME:
        raise ValueError(f'synthetic clip: {path} is not a {FORMAT_NAME} file')
    if meta.get('version') != FORMAT_VERSION:
        raise ValueError(f'synthetic clip: {path} has version {meta.get("version")}, '
                         f'this reader supports {FORMAT_VERSION}')
    for key in ('width', 'height', 'fps', 'frames', 'num_objects', 'object_moving'):
        if key not in meta:
            raise ValueError(f'synthetic clip: {path} lacks the key {key!r}')
    return meta


def read_clip(clip_dir: str | Path) -> SyntheticClip:
    """Load a clip written by ``write_clip`` (scene restored when scene.json is present)."""
    d = Path(clip_dir)
    meta = read_meta(d)
    F, H, W, N = (int(meta[k]) for k in ('frames', 'height', 'width', 'num_objects'))
    K = np.loadtxt(_need(d / 'K.txt'), dtype=np.float64, ndmin=2)
    _check_shape(d / 'K.txt', K, (3, 3))
    poses = np.loadtxt(_need(d / 'poses.txt'), dtype=np.float64, comments='#', ndmin=2)
    _check_shape(d / 'poses.txt', poses, (F, 8))
    T_wc = np.tile(np.eye(4), (F, 1, 1))
    T_wc[:, :3, :3] = Rotation.from_quat(poses[:, 4:8]).as_matrix()
    T_wc[:, :3, 3] = poses[:, 1:4]
    T_wo = np.load(_need(d / 'object_poses.npy'))
    _check_shape(d / 'object_poses.npy', T_wo, (F, N + 1, 4, 4))
    rgb = np.empty((F, H, W, 3), np.uint8)
    depth = np.empty((F, H, W), np.float32)
    instance = np.empty((F, H, W), np.int32)
    for i in range(F):
        p = d / 'rgb' / f'{_name(i)}.png'
        img = _read_png(p, cv2.IMREAD_COLOR)
        _check_shape(p, img, (H, W, 3))
        rgb[i] = img[..., ::-1]
        p = d / 'depth' / f'{_name(i)}.npy'
        dep = np.load(_need(p))
        _check_shape(p, dep, (H, W))
        depth[i] = dep
        p = d / 'instance' / f'{_name(i)}.png'
        ins = _read_png(p, cv2.IMREAD_UNCHANGED)
        _check_shape(p, ins, (H, W))
        instance[i] = ins
    moving = np.array([False] + [bool(m) for m in meta['object_moving']])
    if len(moving) != N + 1:
        raise ValueError(f'synthetic clip: {d / "meta.json"} object_moving has '
                         f'{len(moving) - 1} entries for {N} objects')
    scene = None
    if (d / 'scene.json').is_file():
        textures = [_read_png(p, cv2.IMREAD_COLOR)[..., ::-1].copy()
                    for p in sorted((d / 'textures').glob('*.png'))]
        scene = Scene.from_dict(json.loads((d / 'scene.json').read_text()), textures)
    return SyntheticClip(rgb=rgb, depth=depth, instance=instance, K=K, T_wc=T_wc,
                         stamps=poses[:, 0].copy(), T_wo=T_wo, moving=moving,
                         fps=float(meta['fps']), seed=meta.get('seed'), scene=scene,
                         info=meta.get('info') or {})
