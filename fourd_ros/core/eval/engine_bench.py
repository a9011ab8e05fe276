"""The engine benchmark behind `fourd bench`: long-stream speed and memory on a synthetic
ping-pong stream (ROS-free; the CLI parses its options into `EngineBench`).

A short clip (``clip_frames``, slow smooth camera) is rendered once and played forward and
backward (0..N-1, N-2..1, 0..) with increasing stamps, so camera and objects move continuously
for any stream length without rendering it all. Reported (speed):

- per-frame latency of ``engine.process`` (median, p95) over the first and the last 100 frames
  and ``latency_ratio_last_first`` (ratio of the medians; ~1 when the cost does not grow),
  and ``cpu_ratio_last_first``, the same in CPU time (not inflated by other processes);
- resident memory (VmRSS) after 100 frames, at the end, their difference, the peak; cache MiB;
- motion-query latency for 1, 100, 1000 and all pixels (median of a few calls, source frame 10
  back, target the newest), plus the first (cold) call, and for up to 1000 pixels on moving
  objects (their motion is refined across the gap: the slow path);
- ``fps`` = frames / time in ``engine.process`` (frames come from memory);
- the backend's own stage times where it reports them (``FrameResult.extras['time_*_ms']``):
  their medians, and ``encode_geometry_fps``, frames/s of every stage but the motion decoder;
- with ``real``: the same loop on a real sequence read from disk (``fourd run`` semantics,
  no outputs written): ``real_fps`` including reading, and ``real_ate_m`` when the sequence has
  ground-truth poses; with ``open3d`` also Open3D's frame-to-frame hybrid RGB-D odometry on
  the same frames at the same size (rgbd backend), ``open3d_fps`` / ``open3d_ate_m`` and
  ``real_over_open3d_fps`` (a ratio, since absolute times vary between machines; the two take
  turns over blocks of 40 frames, so a drift in the machine's speed weighs on both alike);
- ``backend='learned'``: cache bytes per device, and, measured in the same run, an *unbounded*
  variant (every past frame cached and attended to, as StreamVGGT / STream3R "causal" do) over
  ``unbounded_frames`` frames: its latency over its first and last 100 frames and its cache
  size, next to the bounded backend's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from fourd_ros.core.backends.factory import check_metric_depth, make_backend
from fourd_ros.core.data.readers import open_sequence, timed
from fourd_ros.core.data.synthetic import generate_clip, SceneConfig, SyntheticClip
from fourd_ros.core.engine.cache import budget_policy, CachePolicy
from fourd_ros.core.engine.engine import EngineConfig, latent_nbytes_by_device, StreamingEngine
from fourd_ros.core.eval.evaluate import progress_bar
from fourd_ros.core.eval.metrics import ate
from fourd_ros.core.eval.open3d_odometry import Open3dOdometry
from fourd_ros.core.eval.soak import (peak_rss_mb, plot_soak, resident_mb, soak_failure,
                                      soak_title)
from fourd_ros.core.types import Frame

WINDOW = 100
QUERY_SIZES = (1, 100, 1000)


@dataclass
class EngineBench:
    """What `benchmark` runs (the `fourd bench` options of the same names).

    Attributes:
        frames: stream length.
        size: (width, height) of the images, pixels; also the processing size.
        backend: 'rgbd' or 'learned'.
        cache_mb: latent cache budget in host memory, MiB (None: the engine's default).
        cache_device_mb: latent cache budget on each accelerator, MiB (None: ``cache_mb``).
        clip_frames: frames rendered for the ping-pong stream.
        seed: scene seed.
        plot: PNG of memory, latency and cache over the stream (None: no plot).
        real: also time this real sequence read from disk (None: no).
        real_frames: frames of `real` to time.
        open3d: with `real`, also Open3D's RGB-D odometry on the same frames.
        unbounded_frames: learned: frames of the unbounded-context variant (0 = skip).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        checkpoint: learned: a checkpoint file (None: the shipped one).
        metric_depth: learned: metres from the stream's depth (an RGB-D camera; the node's
            backend:=learned with a depth remap).
    """

    frames: int = 2000
    size: tuple[int, int] = (320, 240)
    backend: str = 'rgbd'
    cache_mb: float | None = None
    cache_device_mb: float | None = None
    clip_frames: int = 96
    seed: int = 0
    plot: str | None = None
    real: str | None = None
    real_frames: int = 300
    open3d: bool = False
    unbounded_frames: int = 300
    device: str = 'auto'
    checkpoint: str | None = None
    metric_depth: bool = False


def pingpong_index(k: int, n: int) -> int:
    """Clip index of stream frame k when playing n frames forward, backward, forward..."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    r = k % period
    return r if r < n else period - r


def _period_block_medians(lat: np.ndarray, n_clip: int) -> list[float]:
    """Median latency (ms) of the WINDOW frames starting at each multiple of the ping-pong
    period, first to last."""
    period = max(2 * (n_clip - 1), 1)
    return [round(float(np.median(lat[s:s + WINDOW])) * 1e3, 1)
            for s in range(0, len(lat) - WINDOW + 1, period)]


def _engine(bench: EngineBench, width: int, max_query: int) -> StreamingEngine:
    cfg = EngineConfig(width=width, max_query_points=max(100_000, max_query))
    cfg.cache = budget_policy(bench.cache_mb, bench.cache_device_mb)
    if bench.metric_depth:
        check_metric_depth(bench.backend, has_depth=True)  # the synthetic stream has depth
    return StreamingEngine(make_backend(bench.backend, device=bench.device,
                                        checkpoint=bench.checkpoint,
                                        metric_depth=bench.metric_depth), cfg)


def benchmark(bench: EngineBench) -> dict:
    """Run the benchmark described in the module docstring; returns its figures (the PNG of
    memory, latency and cache over the stream at ``bench.plot`` when set, path in 'plot')."""
    if bench.frames < 12:
        raise ValueError('--frames must be at least 12 (queries go 10 frames back)')
    if bench.open3d and not bench.real:
        raise ValueError('--open3d needs --real DIR (a real RGB-D sequence to compare on)')
    w, h = bench.size
    n_clip = max(2, min(bench.clip_frames, bench.frames))
    fps = 30.0
    t0 = time.perf_counter()
    clip = generate_clip(SceneConfig(
        frames=n_clip, width=w, height=h, seed=bench.seed, fps=fps, camera_motion='smooth',
        camera_speed=(0.1, 0.25), camera_angular_speed_deg=10.0, object_speed=(0.1, 0.5)))
    gen_s = time.perf_counter() - t0
    engine = _engine(bench, w, w * h)
    lat = np.zeros(bench.frames)
    cpu = np.zeros(bench.frames)  # CPU seconds of this process, all threads
    rss = np.zeros(bench.frames)
    cache_mb = np.zeros(bench.frames)
    stamps = np.arange(bench.frames) / fps
    stages: dict[str, np.ndarray] = {}  # per-stage times (ms) the backend reports, if any
    bar = progress_bar(bench.frames, f'bench {bench.backend}', True)
    try:
        for k in range(bench.frames):
            idx = pingpong_index(k, n_clip)
            frame = Frame(stamp=float(stamps[k]), rgb=clip.rgb[idx], depth=clip.depth[idx],
                          K=clip.K, name=str(k), index=k)
            t, c = time.perf_counter(), time.process_time()
            result = engine.process(frame)
            lat[k] = time.perf_counter() - t
            for key, ms in result.extras.items():
                if key.startswith('time_') and key.endswith('_ms'):
                    stages.setdefault(key[5:-3], np.zeros(bench.frames))[k] = ms
            cpu[k] = time.process_time() - c
            rss[k] = resident_mb()
            cache_mb[k] = engine.cache.megabytes
            bar.update(1)
    finally:
        bar.close()
    first, last = lat[:WINDOW] * 1e3, lat[-WINDOW:] * 1e3
    k100 = min(WINDOW, bench.frames) - 1
    res = {
        'backend': bench.backend, 'metric': engine.metric, 'frames': bench.frames,
        'size': f'{w}x{h}',
        'clip_frames': n_clip, 'clip_generation_s': gen_s,
        'fps': bench.frames / float(lat.sum()),
        'latency_ms_first_p50': float(np.median(first)),
        'latency_ms_first_p95': float(np.percentile(first, 95)),
        'latency_ms_last_p50': float(np.median(last)),
        'latency_ms_last_p95': float(np.percentile(last, 95)),
        'latency_ratio_last_first': float(np.median(last) / np.median(first)),
        # the same ratio in CPU time: unlike wall time, it does not count time the process
        # waited for a core that another process held (a shared machine)
        'cpu_ratio_last_first': float(np.median(cpu[-WINDOW:]) / np.median(cpu[:WINDOW])),
        # the same images every ping-pong period: a drift of these medians is growth with
        # stream length, free of the scene content that the first/last windows may differ in
        'latency_ms_period_blocks_p50': _period_block_medians(lat, n_clip),
        'rss_first_mb': float(rss[k100]), 'rss_last_mb': float(rss[-1]),
        'rss_growth_mb': float(rss[-1] - rss[k100]),
        # from a quarter of the stream on the cache is full: growth after that is a leak
        'rss_warm_mb': float(rss[bench.frames // 4]),
        'rss_growth_steady_mb': float(rss[-1] - rss[bench.frames // 4]),
        'rss_peak_mb': max(peak_rss_mb(), float(np.nanmax(rss))),
        'cache_mb': engine.cache.megabytes, 'cache_frames': len(engine.cache),
        'cache_budget_mb': engine.config.cache.budget_mb,
        'cache_device_budget_mb': engine.config.cache.budget_bytes('cuda') / 2**20,
        'cache_evicted': engine.cache.evicted_count,
    }
    res.update(_stage_figures(stages))
    # soak verdict (issue 14): memory after warm-up grows by no more than the cache may hold,
    # and the per-frame cost does not drift up with stream length
    res['soak_rss_growth_mb'] = res['rss_growth_steady_mb']
    res['soak_latency_ratio'] = res['latency_ratio_last_first']
    res['soak_ok'] = not soak_failure(res)
    if bench.backend == 'learned':
        per_device = {}
        for e in engine.cache.entries():
            for dev, n in latent_nbytes_by_device(e.latent).items():
                per_device[dev] = per_device.get(dev, 0) + n
        for dev, nbytes in per_device.items():
            res[f"cache_latent_mb_{dev.replace(':', '_')}"] = nbytes / 2**20
        res.update(_device_memory(engine))
        if bench.unbounded_frames > 0:
            res.update(_unbounded_variant(bench, clip, engine))
    res.update(_query_timings(engine, stamps, w, h))
    res.update(_moving_query_timing(engine, stamps, clip))
    if bench.real:
        res.update(_real_timings(bench))
    if bench.plot:
        window = min(50, bench.frames)
        smooth = np.array([np.median(lat[max(0, k - window + 1):k + 1])
                           for k in range(bench.frames)]) * 1e3
        res['plot'] = plot_soak(
            bench.plot, np.arange(bench.frames), rss, smooth, cache_mb,
            soak_title(f"fourd bench {bench.backend} {res['size']}", res),
            res['cache_budget_mb'], f'latency (ms, median of {window})')
    return res


def _stage_figures(stages: dict[str, np.ndarray]) -> dict[str, float]:
    """Median time of each stage the backend reports (``stage_ms_p50_<name>``), and frames/s
    of encoding and geometry alone (every stage but the motion decoder's: for the learned
    backend pose tracking, the encoder with its geometry head, and the map's upkeep)."""
    out = {f'stage_ms_p50_{name}': float(np.median(ms)) for name, ms in stages.items()}
    geometry = [ms for name, ms in stages.items() if name != 'motion']
    total_s = float(np.sum(geometry)) / 1e3
    if total_s > 0:
        out['encode_geometry_fps'] = len(geometry[0]) / total_s
    return out


def _device_memory(engine: StreamingEngine) -> dict[str, float]:
    """CUDA memory of the learned backend's device (nothing on the CPU)."""
    import torch
    dev = getattr(engine.backend, 'device', None)
    if dev is None or dev.type != 'cuda':
        return {}
    return {'cuda_allocated_mb': torch.cuda.memory_allocated(dev) / 2**20,
            'cuda_peak_mb': torch.cuda.max_memory_allocated(dev) / 2**20}


def _unbounded_variant(bench: EngineBench, clip: SyntheticClip,
                       bounded: StreamingEngine) -> dict[str, float]:
    """The learned backend with every past frame cached and attended to (no bound)."""
    from fourd_ros.core.backends.learned import LearnedBackend
    b = bounded.backend
    backend = LearnedBackend(model=b.model, device=str(b.device),
                             config=replace(b.config, context_frames=10**9))
    n = max(2 * WINDOW + 10, bench.unbounded_frames)
    engine = StreamingEngine(backend, EngineConfig(
        width=bounded.config.width,
        cache=CachePolicy(budget_mb=1e9, recent=10**9, max_keyframes=0)))
    lat = np.zeros(n)
    n_clip = len(clip.stamps)
    bar = progress_bar(n, 'bench unbounded', True)
    try:
        for k in range(n):
            idx = pingpong_index(k, n_clip)
            frame = Frame(stamp=k / 30.0, rgb=clip.rgb[idx], K=clip.K, name=str(k), index=k)
            t = time.perf_counter()
            engine.process(frame)
            lat[k] = time.perf_counter() - t
            bar.update(1)
    finally:
        bar.close()
    first, last = np.median(lat[:WINDOW]), np.median(lat[-WINDOW:])
    return {'unbounded_frames': n, 'unbounded_latency_ms_first_p50': float(first * 1e3),
            'unbounded_latency_ms_last_p50': float(last * 1e3),
            'unbounded_latency_ratio_last_first': float(last / first),
            'unbounded_cache_mb': engine.cache.megabytes}


def _moving_query_timing(engine: StreamingEngine, stamps: np.ndarray, clip: SyntheticClip
                         ) -> dict[str, float]:
    """Latency of queries of (at most 1000) pixels on moving objects to the newest frame, from
    each of up to 8 source frames 10-40 frames back, still cached, that show at least 200
    moving pixels: rigid objects' motions are refined across the gap where a segment has
    stored motions (the slow path), which random pixels may not take. Reports the median over
    those sources and the slowest (the slow path when any source takes it)."""
    n_clip = len(clip.stamps)
    rng = np.random.default_rng(0)
    times, points, gaps = [], [], []
    for k in range(len(stamps) - 11, max(len(stamps) - 41, -1), -1):
        ys, xs = np.nonzero(clip.moving[clip.instance[pingpong_index(k, n_clip)]])
        # an evicted source (the cache keeps some older frames, not all) answers at once with
        # OUT_OF_WINDOW: no query to time
        if len(ys) < 200 or engine.cached_pose(float(stamps[k])) is None:
            continue
        pick = rng.permutation(len(ys))[:1000]
        px = np.stack([xs[pick], ys[pick]], axis=1).astype(np.float64)
        times.append(_median_ms(lambda: engine.query_pixels(float(stamps[k]), px), 3))
        points.append(len(px))
        gaps.append(len(stamps) - 1 - k)
        if len(times) == 8:
            break
    if not times:
        return {'query_ms_moving': float('nan'), 'query_ms_moving_max': float('nan'),
                'query_points_moving': 0, 'query_moving_sources': 0}
    return {'query_ms_moving': float(np.median(times)), 'query_ms_moving_max': max(times),
            'query_points_moving': int(np.median(points)), 'query_moving_sources': len(times),
            'query_moving_gaps': f'{min(gaps)}-{max(gaps)}'}


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def _query_timings(engine: StreamingEngine, stamps: np.ndarray, w: int,
                   h: int) -> dict[str, float]:
    """Query latency vs number of pixels: source 10 frames back, target = newest frame."""
    source = float(stamps[-11])
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    t = time.perf_counter()
    engine.query_pixels(source, np.array([[w / 2, h / 2]]))
    out['query_ms_cold'] = (time.perf_counter() - t) * 1e3
    for n in QUERY_SIZES:
        px = np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], axis=1)
        out[f'query_ms_{n}'] = _median_ms(lambda: engine.query_pixels(source, px), 7)
    v, u = np.mgrid[0:h, 0:w]
    px = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)
    out['query_ms_all'] = _median_ms(lambda: engine.query_pixels(source, px), 3)
    out['query_points_all'] = int(len(px))
    q = engine.query_pixels(source, px)
    out['query_valid_fraction_all'] = float(np.mean(q.status == 0))
    return out


def _real_timings(bench: EngineBench, block: int = 40) -> dict[str, float]:
    """Time `fourd run`-style streaming of a real sequence from disk (no outputs written); with
    ground-truth poses its ATE; with ``--open3d`` Open3D's RGB-D odometry on the same frames.

    The two take turns over blocks of ``block`` frames (ours on a block, then Open3D on it),
    so a change in the machine's speed during the run (shared cores) weighs on both alike and
    leaves their ratio alone."""
    reader = open_sequence(bench.real, max_frames=bench.real_frames or None)
    engine = _engine(bench, 320, 0)
    reference = Open3dOdometry(320) if bench.open3d else None
    read, proc, gt, poses = [], [], [], []
    pending: list[Frame] = []

    def run_block() -> None:
        for frame in pending:
            t1 = time.perf_counter()
            # the frame's own pose (the engine's trajectory starts again if the units change)
            poses.append(engine.process(frame).T_wc)
            proc.append(time.perf_counter() - t1)
            bar.update(1)
        if reference is not None:
            for frame in pending:
                reference.step(frame)
        pending.clear()

    bar = progress_bar(reader.length, 'bench real', True)
    try:
        for frame, t_read in timed(reader):
            read.append(t_read)
            gt.append(frame.T_wc_gt)
            pending.append(frame)
            if len(pending) == block:
                run_block()
        run_block()
    finally:
        bar.close()
    n = len(proc)
    busy = float(np.sum(read) + np.sum(proc))
    out = {'real_frames': n, 'real_fps': n / busy if busy > 0 else float('nan'),
           'real_read_ms_p50': float(np.median(read) * 1e3) if n else float('nan'),
           'real_latency_ms_p50': float(np.median(proc) * 1e3) if n else float('nan'),
           'real_latency_ms_p95': float(np.percentile(proc, 95) * 1e3) if n else float('nan')}
    has_gt = n > 2 and all(T is not None for T in gt)
    align = 'se3' if engine.metric else 'sim3'
    if has_gt:
        out['real_ate_m'] = ate(np.array(poses), np.array(gt), align=align)['ate_m']
    if reference is not None:
        o3d_run = reference.run()
        # frames/s without reading, to compare like with like: ours from engine.process
        ours_fps = n / float(np.sum(proc)) if n else float('nan')
        out.update(real_process_fps=ours_fps, open3d_fps=o3d_run.fps,
                   open3d_failures=o3d_run.failures,
                   real_over_open3d_fps=ours_fps / o3d_run.fps)
        if has_gt:
            out['open3d_ate_m'] = ate(o3d_run.T_wc, np.array(gt), align='se3')['ate_m']
    return out


UNITS = {
    'metric': 'metres (else up to scale)',
    'frames': 'stream length', 'clip_frames': 'rendered frames (ping-pong)',
    'clip_generation_s': 's (not part of the timings)',
    'fps': 'frames/s (engine.process only)',
    'encode_geometry_fps': 'frames/s of the backend without its motion decoder',
    'stage_ms_p50_pose': 'ms, median: landmark tracking (learned)',
    'stage_ms_p50_encode': 'ms, median: encoder + geometry head + fit to the map (learned)',
    'stage_ms_p50_motion': 'ms, median: motion decoder for the dynamic mask (learned)',
    'stage_ms_p50_ground': 'ms, median: metres from the floor or a depth sensor (learned)',
    'stage_ms_p50_map': 'ms, median: landmark upkeep (learned)',
    'latency_ms_first_p50': 'ms, first 100 frames', 'latency_ms_first_p95': 'ms, first 100',
    'latency_ms_last_p50': 'ms, last 100 frames', 'latency_ms_last_p95': 'ms, last 100',
    'latency_ratio_last_first': 'median last / median first',
    'latency_ms_period_blocks_p50': 'ms, medians of 100 frames at each period start',
    'rss_first_mb': 'MiB after 100 frames', 'rss_last_mb': 'MiB at the end',
    'rss_growth_mb': 'MiB, end - after 100 (includes the cache filling up)',
    'rss_warm_mb': 'MiB after a quarter of the stream (cache full)',
    'rss_growth_steady_mb': 'MiB, end - after a quarter', 'rss_peak_mb': 'MiB (ru_maxrss)',
    'cache_mb': 'MiB held by the latent cache', 'cache_frames': 'frames in the cache',
    'cache_budget_mb': 'MiB', 'cache_device_budget_mb': 'MiB on each GPU',
    'cache_evicted': 'frames evicted',
    'query_ms_cold': 'ms, first query (1 px)', 'query_ms_1': 'ms, median',
    'query_ms_100': 'ms, median', 'query_ms_1000': 'ms, median', 'query_ms_all': 'ms, median',
    'query_points_all': 'pixels in the full-image query',
    'query_ms_moving': 'ms, median over sources, pixels on moving objects',
    'query_ms_moving_max': 'ms, slowest of those sources',
    'query_moving_sources': 'cached source frames timed (10-40 frames back)',
    'cpu_ratio_last_first': 'same ratio in CPU time (robust to other processes)',
    'query_points_moving': 'pixels per query (median)',
    'query_moving_gaps': 'frames between the sources and the newest',
    'query_valid_fraction_all': 'fraction VALID in the full-image query',
    'real_frames': 'frames of --real', 'real_fps': 'frames/s incl. reading from disk',
    'real_read_ms_p50': 'ms per frame reading', 'real_latency_ms_p50': 'ms engine.process',
    'real_latency_ms_p95': 'ms engine.process',
    'real_ate_m': 'm ATE of --real (SE(3) if metric, else Sim(3))',
    'real_process_fps': 'frames/s in engine.process (no reading)',
    'open3d_fps': "frames/s of Open3D's RGB-D odometry (same frames and size)",
    'open3d_failures': 'frame pairs Open3D could not align',
    'open3d_ate_m': "m ATE (SE(3)) of Open3D's RGB-D odometry",
    'real_over_open3d_fps': 'ratio: ours / Open3D frames/s',
    'cache_latent_mb_cpu': 'MiB of cached latents in host memory',
    'cache_latent_mb_cuda_0': 'MiB of cached latents on GPU 0',
    'cuda_allocated_mb': 'MiB allocated on the GPU', 'cuda_peak_mb': 'MiB peak on the GPU',
    'unbounded_frames': 'frames of the unbounded-context variant',
    'unbounded_latency_ms_first_p50': 'ms, its first 100 frames',
    'unbounded_latency_ms_last_p50': 'ms, its last 100 frames',
    'unbounded_latency_ratio_last_first': 'its growth (bounded: latency_ratio_last_first)',
    'unbounded_cache_mb': 'MiB it caches (no budget)',
}
