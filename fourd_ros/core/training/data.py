"""Training clips: rendered once to an on-disk cache, then sampled as many short sub-clips.

Rendering dominates the cost of a sample (about 45 ms per 128x96 frame on one core), so each
scene is rendered once with a few frames and re-used: every training sample draws a random
stride, frames and query view from it. Units follow ``fourd_ros.core.types`` (metres, seconds,
OpenCV axes); `sample_batch` converts to the model's normalised units (a per-clip scale so that
the anchor frame's median depth is about 1).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fourd_ros.core.data.synthetic import generate_clip, SceneConfig, SyntheticClip
from fourd_ros.core.geometry import invert_pose
from fourd_ros.core.model.cost_volume import far_source

CLIP_KEYS = ('rgb', 'depth', 'instance', 'K', 'T_wc', 'stamps', 'T_wo', 'moving')


@dataclass(frozen=True)
class DataConfig:
    """What the training scenes look like.

    Attributes:
        width, height: rendered size in pixels (multiples of 16).
        frames: frames rendered per scene.
        photo_texture_prob: share of textures that are real photographs (scikit-image's CC0
            photos); the rest are procedural.
        rgb_noise_std: pixel noise in 0..255 units.
        scale_jitter: each sub-clip's normalised units are the anchor's median depth times
            exp(U(-scale_jitter, scale_jitter)). Wide (0.7: x0.5-2) so that the network cannot
            read the scale from the image and must take it from the cost volume, i.e. from
            the poses it is given; at 0.25 its depth kept a unit median whatever the poses
            said, and the stream's scale drifted (docs/history.md).
        max_stride: sub-clips take every 1st .. `max_stride`-th rendered frame (at most what
            the scene's `frames` allow: with 8 frames and 5-frame sub-clips, every frame), so
            the cost volume sees baselines of 1 .. `max_stride` camera steps.
        source_search: 0: each frame's cost volume matches the sub-clip's frames before it
            (its last two). N > 0: as the learned backend at run time, the previous frame plus
            the far source `far_source` picks among the N frames before it in the stream,
            rendered frames before the sub-clip included (render more `frames` to give them
            room); a real camera moves a small share of the depth per frame, so the previous
            frame barely has parallax there, and the network must learn to read the far one.
        source_baseline: the far source's baseline, as a share of the previous frame's median
            depth (`LearnedConfig.source_baseline`).
    """

    width: int = 128
    height: int = 96
    frames: int = 8
    photo_texture_prob: float = 0.5
    rgb_noise_std: float = 2.0
    scale_jitter: float = 0.7
    max_stride: int = 3
    source_search: int = 0
    source_baseline: float = 0.03


def scene_config(seed: int, cfg: DataConfig) -> SceneConfig:
    """The scene of one training seed: camera motion and speeds vary with the seed."""
    rng = np.random.default_rng([seed, 4242])
    motion = str(rng.choice(['smooth', 'smooth', 'smooth', 'smooth', 'rotation', 'static']))
    fps = float(rng.choice([10.0, 15.0, 30.0]))
    return SceneConfig(frames=cfg.frames, width=cfg.width, height=cfg.height, seed=seed,
                       fps=fps, camera_motion=motion, num_objects=(0, 4),
                       camera_speed=(0.1, 0.8), photo_texture_prob=cfg.photo_texture_prob,
                       rgb_noise_std=cfg.rgb_noise_std, texture_size=128)


def _render_one(args: tuple[int, DataConfig, str]) -> str:
    seed, cfg, root = args
    path = Path(root) / f'clip_{seed:06d}.npz'
    if not path.exists():
        clip = generate_clip(scene_config(seed, cfg))
        tmp = path.with_suffix('.tmp.npz')
        np.savez(tmp, rgb=clip.rgb, depth=clip.depth.astype(np.float16),
                 instance=clip.instance.astype(np.int16), K=clip.K, T_wc=clip.T_wc,
                 stamps=clip.stamps, T_wo=clip.T_wo, moving=clip.moving)
        tmp.replace(path)  # atomic: an interrupted render leaves no half file
    return str(path)


def render_clips(root: str | Path, seeds: list[int], cfg: DataConfig, workers: int = 1,
                 progress=None) -> list[Path]:
    """Render (or find already rendered) clips for `seeds` under `root`; resumable."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(s, cfg, str(root)) for s in seeds]
    if workers > 1:
        with multiprocessing.get_context('spawn').Pool(workers) as pool:
            paths = []
            for p in pool.imap(_render_one, jobs):
                paths.append(Path(p))
                if progress:
                    progress()
    else:
        paths = []
        for job in jobs:
            paths.append(Path(_render_one(job)))
            if progress:
                progress()
    return paths


def load_clip(path: str | Path) -> SyntheticClip:
    """A cached clip (without scene geometry; ground truth motion comes from object poses)."""
    with np.load(path) as z:
        d = {k: z[k] for k in CLIP_KEYS}
    return SyntheticClip(rgb=d['rgb'], depth=d['depth'].astype(np.float32),
                         instance=d['instance'].astype(np.int32), K=d['K'], T_wc=d['T_wc'],
                         stamps=d['stamps'], T_wo=d['T_wo'], moving=d['moving'],
                         fps=float(1.0 / np.median(np.diff(d['stamps']))))


@dataclass
class Batch:
    """B sub-clips of N frames in normalised units (tensors on one device).

    Attributes:
        rgb: B x N x 3 x H x W in [0, 1].
        depth: B x N x 1 x H x W GT depth.
        K: B x 3 x 3 intrinsics (pixels).
        T_anchor_cam: B x N x 4 x 4 GT camera-to-anchor poses (anchor = frame 0).
        T_noisy: B x N x 4 x 4 the same with pose noise (what the cost volume is given).
        t: B x N seconds from the anchor.
        query: index of the query view q.
        dP: B x N x 3 x H x W GT displacement of view q's points from t_q to t_tau, in view q's
            camera axes.
        far_rgb: B x N x 3 x H x W each frame's far cost-volume source (None: the sub-clip's
            own earlier frames are the sources; entry 0 unused).
        T_far: B x N x 4 x 4 its noisy source-camera-to-anchor pose (None with ``far_rgb``).
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    K: torch.Tensor
    T_anchor_cam: torch.Tensor
    T_noisy: torch.Tensor
    t: torch.Tensor
    query: int
    dP: torch.Tensor
    far_rgb: torch.Tensor | None = None
    T_far: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device)
                                            for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


def _small_rotation(rng: np.random.Generator, sigma_rad: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.from_rotvec(rng.normal(0, sigma_rad, 3)).as_matrix()


def _noisy_step(rng: np.random.Generator, T: np.ndarray, T_from: np.ndarray,
                Tn_from: np.ndarray, noise_deg: float, noise_rel: float) -> np.ndarray:
    """The pose T given to the cost volume: a rotation error and a translation error relative
    to the step from its neighbour (true T_from, given Tn_from), like tracking drift."""
    Tn = T.copy()
    Tn[:3, :3] = _small_rotation(rng, np.deg2rad(noise_deg)) @ T[:3, :3]
    step = float(np.linalg.norm(T[:3, 3] - T_from[:3, 3])) + 0.002
    Tn[:3, 3] = Tn_from[:3, 3] + (T[:3, 3] - T_from[:3, 3]) + rng.normal(0, noise_rel, 3) * step
    return Tn


def sample_batch(clips: list[SyntheticClip], rng: np.random.Generator, batch: int,
                 frames: int, max_stride: int = 3, pose_noise_deg: float = 0.3,
                 pose_noise_rel: float = 0.05,
                 scale_jitter: float = DataConfig.scale_jitter, source_search: int = 0,
                 source_baseline: float = DataConfig.source_baseline) -> Batch:
    """Draw `batch` random sub-clips of `frames` frames (random stride, scale, query view);
    with `source_search` > 0 each frame also gets its far cost-volume source as the backend
    picks it (`DataConfig.source_search`)."""
    query = int(rng.integers(frames))
    out = {k: [] for k in ('rgb', 'depth', 'K', 'T', 'Tn', 't', 'dP', 'far_rgb', 'T_far')}
    for _ in range(batch):
        clip = clips[int(rng.integers(len(clips)))]
        n = len(clip)
        stride = int(rng.integers(1, max(1, min(max_stride, (n - 1) // max(1, frames - 1))) + 1))
        start = int(rng.integers(0, n - stride * (frames - 1)))
        idx = [start + stride * k for k in range(frames)]
        if rng.random() < 0.5:
            idx = idx[::-1]  # backwards in time is another valid stream
        # the rendered frames before the sub-clip in the stream's direction, nearest first
        step_dir = idx[1] - idx[0] if frames > 1 else -stride
        before = [i for i in (idx[0] - step_dir * j for j in range(1, source_search + 1))
                  if 0 <= i < n]
        d0 = clip.depth[idx[0]]
        scale = float(np.median(d0)) * float(np.exp(rng.uniform(-scale_jitter, scale_jitter)))
        T0_inv = invert_pose(clip.T_wc[idx[0]])

        def pose(i: int) -> np.ndarray:
            T = T0_inv @ clip.T_wc[i]
            T[:3, 3] /= scale
            return T
        T = np.stack([pose(i) for i in idx])
        Tn = T.copy()
        for k in range(1, frames):
            Tn[k] = _noisy_step(rng, T[k], T[k - 1], Tn[k - 1], pose_noise_deg, pose_noise_rel)
        if source_search > 0:
            # the stream as the backend saw it, oldest first: the frames before, the sub-clip
            T_b, Tn_b = [T[0]], [Tn[0]]
            for i in before:
                T_b.append(pose(i))
                Tn_b.append(_noisy_step(rng, T_b[-1], T_b[-2], Tn_b[-1], pose_noise_deg,
                                        pose_noise_rel))
            stream = before[::-1] + idx
            Tn_stream = np.stack(Tn_b[1:][::-1] + list(Tn))
            far_rgb, T_far = [clip.rgb[idx[0]]], [Tn[0]]
            for k in range(1, frames):
                pos = len(before) + k
                lo = max(0, pos - source_search)
                min_baseline = source_baseline * float(np.median(clip.depth[stream[pos - 1]]))
                j = lo + far_source(Tn_stream[lo:pos, :3, 3], Tn[k, :3, 3], min_baseline / scale)
                far_rgb.append(clip.rgb[stream[j]])
                T_far.append(Tn_stream[j])
            out['far_rgb'].append(np.stack(far_rgb).transpose(0, 3, 1, 2))
            out['T_far'].append(np.stack(T_far))
        stamps = clip.stamps[idx]
        t = np.abs(stamps - stamps[0])
        q = idx[query]
        P0 = clip.points_world(q)
        R_cw = clip.T_wc[q, :3, :3].T
        dP = np.stack([(clip._move(q, clip.T_wo[j]) - P0) @ R_cw.T for j in idx]) / scale
        out['rgb'].append(clip.rgb[idx].transpose(0, 3, 1, 2))
        out['depth'].append(clip.depth[idx][:, None] / scale)
        out['K'].append(clip.K)
        out['T'].append(T)
        out['Tn'].append(Tn)
        out['t'].append(t)
        out['dP'].append(dP.transpose(0, 3, 1, 2))

    def f32(x):
        return torch.from_numpy(np.stack(x).astype(np.float32))
    far = source_search > 0
    return Batch(rgb=f32(out['rgb']) / 255.0, depth=f32(out['depth']), K=f32(out['K']),
                 T_anchor_cam=f32(out['T']), T_noisy=f32(out['Tn']), t=f32(out['t']),
                 query=query, dP=f32(out['dP']),
                 far_rgb=f32(out['far_rgb']) / 255.0 if far else None,
                 T_far=f32(out['T_far']) if far else None)
