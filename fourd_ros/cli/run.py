"""`fourd run`: stream a sequence through a backend and write trajectory, tracks, moving objects
and depth.

Outputs in ``--out``:

- ``trajectory.txt``: TUM format ``stamp tx ty tz qx qy qz qw`` per frame, camera-to-world,
  world = first camera, OpenCV axes, metres (model units if not metric).
- ``tracks.npz``: ``stamps`` (F, s), ``ids`` (T uint64), ``positions`` (F x T x 3 float32 world,
  NaN where the track does not exist), ``status`` (F x T uint8 TrackStatus, 255 = not existing),
  ``pixels`` (F x T x 2 float32 at processing resolution, NaN where not existing),
  ``processing_size`` ((width, height)).
  ``object_ids`` (F x T uint64: the moving object each track is on, 0 = static or not existing).
- ``objects.jsonl``: one JSON object per frame: ``stamp``, ``dt`` (s since the previous frame)
  and ``objects``, each with ``id`` (persistent), ``num_points``, ``centroid``, ``box_center``,
  ``box_rotation`` (quaternion x y z w of the box axes), ``box_size``, ``velocity`` (of the
  centroid, units/s; null when unknown), ``angular_velocity`` (rad/s), ``confidence``, ``age``;
  world = first camera, OpenCV axes.
- ``depth/<frame>.npy``: float32 depth in metres at processing resolution (0 = invalid), every
  ``--depth-every`` frames.
- ``map.ply``: the accumulated static cloud (the node's ``~/map_points``): confident points
  outside the motion mask, voxel-downsampled (``--map-voxel-size``), points a later view sees
  through removed; world = first camera, OpenCV axes, metres (model units if not metric).
- ``summary.json``: frames, fps (whole loop: reading from disk, processing, writing), per-frame
  processing latency, peak RSS, cache size, metric flag and more.

A ground robot's monocular camera: ``--camera-height`` (and ``--camera-pitch``) give the learned
backend the floor, and its outputs are metres once it has seen the floor move: from frame
``metric_from_frame`` of the summary on (the frames before are in model units;
docs/learned-model.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from fourd_ros.cli.common import (add_cache_arguments, add_ground_arguments,
                                  add_metric_depth_argument, add_model_arguments, ground_plane,
                                  positive_int, print_table, write_json)
from fourd_ros.core import map_cloud
from fourd_ros.core.data.readers import open_sequence
from fourd_ros.core.engine.cache import budget_policy
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
from fourd_ros.core.engine.objects import ObjectSnapshot
from fourd_ros.core.engine.tracks import TrackConfig
from fourd_ros.core.backends.factory import (BACKENDS, check_metric_depth, make_backend,
                                             resolve_backend)
from fourd_ros.core.eval.evaluate import progress_bar
from fourd_ros.core.eval.soak import peak_rss_mb

BACKEND_HELP = ('auto (default: rgbd when the input has depth, else learned), rgbd (sensor '
                'depth + odometry + optical flow), learned (monocular S-4RC model); oracle '
                'replays the ground truth of the input and is only for testing the pipeline, '
                'not a perception backend')


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'run', help='run a backend over a sequence and write trajectory, tracks, moving '
                    'objects, depth',
        description='Stream a sequence (7-Scenes, TUM, image folder, video, rosbag2 or synthetic '
                    'clip) through the streaming engine and write the outputs to --out.')
    p.add_argument('--backend', choices=('auto', *BACKENDS), default='auto',
                   help=BACKEND_HELP)
    p.add_argument('--input', required=True, help='sequence folder or file')
    add_model_arguments(p)
    p.add_argument('--out', required=True, help='output folder (created)')
    p.add_argument('--width', type=positive_int, default=320,
                   help='processing width in pixels, 0 = input resolution (320)')
    p.add_argument('--depth-every', type=positive_int, default=10, metavar='K',
                   help='write depth/<frame>.npy every K frames, 0 = never (10)')
    p.add_argument('--map-voxel-size', type=float, default=map_cloud.VOXEL_SIZE, metavar='M',
                   help='voxel size of map.ply, metres (model units if not metric); 0 = no '
                        f'map ({map_cloud.VOXEL_SIZE})')
    p.add_argument('--max-frames', type=positive_int, default=0, metavar='N',
                   help='stop after N frames, 0 = all (0)')
    add_cache_arguments(p)
    p.add_argument('--max-tracks', type=positive_int, default=None, metavar='N',
                   help='cap on live persistent tracks (engine default)')
    add_ground_arguments(p)
    add_metric_depth_argument(p)
    p.set_defaults(func=run)


def _safe_name(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]', '_', name) or 'frame'


def run(args: argparse.Namespace) -> int:
    ground = ground_plane(args)
    cache = budget_policy(args.cache_mb, args.cache_device_mb)
    reader = open_sequence(args.input, max_frames=args.max_frames or None)
    args.backend = resolve_backend(args.backend, reader.has_depth)
    if args.metric_depth:
        check_metric_depth(args.backend, reader.has_depth)
    backend = make_backend(args.backend, device=args.device, checkpoint=args.checkpoint,
                           sequence=reader, metric_depth=args.metric_depth)
    cfg = EngineConfig(width=0 if args.backend == 'oracle' else args.width)
    cfg.cache = cache
    if args.max_tracks is not None:
        cfg.tracks = TrackConfig(max_tracks=args.max_tracks)
    engine = StreamingEngine(backend, cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.depth_every:
        (out / 'depth').mkdir(exist_ok=True)
    if args.map_voxel_size < 0:
        raise ValueError('--map-voxel-size must be >= 0')
    world_map = map_cloud.MapAccumulator(args.map_voxel_size, map_cloud.MAX_POINTS) \
        if args.map_voxel_size > 0 else None

    stamps: list[float] = []
    snaps: list[tuple[np.ndarray, ...]] = []
    object_ids: set[int] = set()
    frames_with_objects = 0
    latencies: list[float] = []
    cache_peak = 0.0
    resets = 0
    depth_files = 0
    metric_from = -1  # the first frame in metres (-1: none)
    bar = progress_bar(reader.length, f'run {args.backend}', True)
    t_start = time.perf_counter()
    try:
        with open(out / 'trajectory.txt', 'w') as traj, \
                open(out / 'objects.jsonl', 'w') as objects_file:
            traj.write('# stamp tx ty tz qx qy qz qw (camera-to-world, world = first camera, '
                       'OpenCV axes)\n')
            for i, frame in enumerate(reader):
                if ground is not None:
                    frame = dataclasses.replace(frame, ground=ground)
                t0 = time.perf_counter()
                result = engine.process(frame)
                latencies.append(time.perf_counter() - t0)
                if result.metric and metric_from < 0:
                    metric_from = i
                resets += bool(engine.last_step.reset_reason)
                T = result.T_wc
                q = Rotation.from_matrix(T[:3, :3]).as_quat()
                traj.write(' '.join(f'{v:.9f}' for v in (frame.stamp, *T[:3, 3], *q)) + '\n')
                snap = engine.track_snapshot()
                stamps.append(frame.stamp)
                snaps.append((snap.ids, snap.positions, snap.status, snap.pixels,
                              snap.object_ids))
                objects = engine.object_snapshot()
                object_ids.update(o.id for o in objects.objects)
                frames_with_objects += bool(objects.objects)
                objects_file.write(json.dumps(_objects_record(objects)) + '\n')
                if args.depth_every and i % args.depth_every == 0:
                    name = _safe_name(frame.name or f'{i:06d}')
                    np.save(out / 'depth' / f'{name}.npy', result.depth.astype(np.float32))
                    depth_files += 1
                if world_map is not None:
                    world_map.add_frame(result, np.eye(4))
                    if i % map_cloud.UPDATE_EVERY == map_cloud.UPDATE_EVERY - 1:
                        world_map.update()
                cache_peak = max(cache_peak, engine.cache.megabytes)
                bar.update(1)
    finally:
        bar.close()
    wall = time.perf_counter() - t_start
    frames = len(stamps)
    _write_tracks(out / 'tracks.npz', stamps, snaps, engine.processing_size)
    if world_map is not None:
        world_map.update()
        world_map.save(out / 'map.ply')
    lat = np.asarray(latencies or [np.nan]) * 1e3
    proc = engine.processing_size or (0, 0)
    summary = {
        'frames': frames, 'fps': frames / wall if wall > 0 else float('nan'), 'wall_s': wall,
        'latency_ms_p50': float(np.median(lat)), 'latency_ms_p95': float(np.percentile(lat, 95)),
        'latency_ms_max': float(np.max(lat)), 'peak_rss_mb': peak_rss_mb(),
        'cache_mb': engine.cache.megabytes, 'cache_mb_peak': cache_peak,
        'cache_frames': len(engine.cache), 'cache_budget_mb': cfg.cache.budget_mb,
        'cache_device_budget_mb': cfg.cache.budget_bytes('cuda') / 2**20,
        'cache_mb_by_device': {d: n / 2**20
                               for d, n in engine.cache.nbytes_by_device().items()},
        'metric': engine.metric, 'metric_from_frame': metric_from,
        'backend': args.backend, 'input': str(args.input),
        'layout': reader.layout, 'input_size': _size(engine.input_size),
        'processing_size': f'{proc[0]}x{proc[1]}', 'stream_resets': resets,
        'tracks_total': int(len(np.unique(np.concatenate([s[0] for s in snaps]))))
        if snaps else 0,
        'objects_total': len(object_ids), 'frames_with_objects': frames_with_objects,
        'depth_files': depth_files,
        'map_points': len(world_map.points) if world_map is not None else 0,
    }
    write_json(out / 'summary.json', summary)
    print_table(f'fourd run: {args.backend} on {args.input} -> {out}', [
        ('frames', frames, ''), ('fps', summary['fps'], 'frames/s, whole loop incl. disk I/O'),
        ('latency_ms_p50', summary['latency_ms_p50'], 'ms per frame (engine.process)'),
        ('latency_ms_p95', summary['latency_ms_p95'], 'ms per frame (engine.process)'),
        ('peak_rss_mb', summary['peak_rss_mb'], 'MiB'),
        ('cache_mb', summary['cache_mb'], f'MiB in {len(engine.cache)} cached frames'),
        ('tracks_total', summary['tracks_total'], 'track ids seen'),
        ('objects_total', summary['objects_total'], 'moving object ids reported'),
        ('frames_with_objects', summary['frames_with_objects'],
         'frames with a moving object reported'),
        ('metric', summary['metric'], 'metres if yes'),
    ])
    return 0


def _size(size: tuple[int, int] | None) -> str:
    return f'{size[0]}x{size[1]}' if size else ''


def _objects_record(snapshot: ObjectSnapshot) -> dict:
    """One line of objects.jsonl (see the module docstring)."""
    def vec(v: np.ndarray) -> list[float] | None:
        return [float(x) for x in v] if np.isfinite(v).all() else None

    return {'stamp': snapshot.stamp, 'dt': snapshot.dt, 'objects': [
        {'id': o.id, 'num_points': o.num_points, 'centroid': vec(o.centroid),
         'box_center': vec(o.box_center),
         'box_rotation': vec(Rotation.from_matrix(o.box_rotation).as_quat()),
         'box_size': vec(o.box_size), 'velocity': vec(o.velocity),
         'angular_velocity': vec(o.angular_velocity), 'confidence': o.confidence,
         'age': o.age} for o in snapshot.objects]}


def _write_tracks(path: Path, stamps: list[float], snaps: list[tuple[np.ndarray, ...]],
                  processing_size: tuple[int, int] | None) -> None:
    """Dense F x T arrays from per-frame track snapshots (see the module docstring)."""
    ids = (np.unique(np.concatenate([s[0] for s in snaps])).astype(np.uint64) if snaps
           else np.zeros(0, np.uint64))
    F, T = len(snaps), len(ids)
    positions = np.full((F, T, 3), np.nan, np.float32)
    pixels = np.full((F, T, 2), np.nan, np.float32)
    status = np.full((F, T), 255, np.uint8)
    objects = np.zeros((F, T), np.uint64)
    for f, (sid, pos, st, pix, obj) in enumerate(snaps):
        if not len(sid):
            continue
        col = np.searchsorted(ids, sid.astype(np.uint64))
        positions[f, col] = pos
        pixels[f, col] = pix
        status[f, col] = st
        objects[f, col] = obj
    np.savez_compressed(path, stamps=np.asarray(stamps, np.float64), ids=ids,
                        positions=positions, status=status, pixels=pixels, object_ids=objects,
                        processing_size=np.asarray(processing_size or (0, 0), np.int64))
