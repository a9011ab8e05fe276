"""The Backend contract, checked the same way against every backend (rgbd, learned, oracle),
and the engine's memory accounting of nested latents."""

from __future__ import annotations

import gc
import threading
import weakref

import cv2
import numpy as np
import pytest
import torch

from fourd_ros.core.backends.factory import BACKENDS, make_backend, resolve_backend
from fourd_ros.core.data.synthetic import generate_clip, SceneConfig
from fourd_ros.core.engine.backend import Backend, BackendError
from fourd_ros.core.engine.cache import CachePolicy
from fourd_ros.core.engine.engine import (EngineConfig, latent_nbytes_by_device,
                                          StreamingEngine)
from fourd_ros.core.types import PointStatus


@pytest.fixture(scope='module')
def clip():
    return generate_clip(SceneConfig(frames=10, width=192, height=144, seed=3, fps=15.0))


class _ClipSequence:
    """What `make_backend('oracle', sequence=...)` reads of a sequence: its synthetic clip."""

    def __init__(self, clip) -> None:
        self.clip = clip


def build(name: str, clip) -> Backend:
    return make_backend(name, device='cpu', sequence=_ClipSequence(clip))


def stream(name: str, clip, **engine):
    backend = build(name, clip)
    width = 0 if name == 'oracle' else 160
    eng = StreamingEngine(backend, EngineConfig(width=width, **engine))
    results = [eng.process(clip.frame(i)) for i in range(len(clip))]
    return eng, results


@pytest.mark.parametrize('name', BACKENDS)
def test_every_backend_gives_metres_when_the_floor_is_known(name) -> None:
    """A ground robot's frames carry the floor (`Frame.ground`): a backend that cannot see
    scale by itself (monocular) takes metres from it, the others are metric anyway; each
    result says so (`metric`) as the backend does."""
    ground = generate_clip(SceneConfig(frames=40, width=192, height=144, seed=2, fps=30.0,
                                       camera_motion='ground'))
    assert ground.frame(0).ground is not None
    eng, results = stream(name, ground)
    metric = [r.metric for r in results]
    # metric from some frame on, and for good
    assert metric[-1] and eng.metric and all(metric[metric.index(True):])
    last = results[-1]
    truth = cv2.resize(ground.depth[-1], last.depth.shape[::-1],
                       interpolation=cv2.INTER_NEAREST)
    ok = last.depth > 0
    assert abs(np.log(np.median(last.depth[ok] / truth[ok]))) < 0.3


@pytest.mark.parametrize('name', BACKENDS)
def test_backend_contract(name, clip) -> None:
    eng, results = stream(name, clip)
    backend = eng.backend
    assert isinstance(backend, Backend) and backend.name == name
    pw, ph = eng.processing_size
    assert (pw, ph) == backend.processing_size(192, 144, 0 if name == 'oracle' else 160)
    for r in results:
        assert r.depth.shape == (ph, pw) and r.points_world.shape == (ph, pw, 3)
        assert r.confidence.shape == (ph, pw) and r.dynamic_mask.dtype == bool
        assert r.T_wc.shape == (4, 4) and np.all(np.isfinite(r.T_wc))
        assert r.K.shape == (3, 3) and r.metric == backend.metric
        assert np.isfinite(r.depth).mean() > 0.9
        assert r.segments.shape == (ph, pw) and r.segments.dtype == np.uint16
        assert r.scene_flow.shape == (ph, pw, 3) and r.scene_flow.dtype == np.float32
        # static pixels do not move: scene flow 0 off the dynamic mask and the segments
        off = ~r.dynamic_mask & (r.segments == 0) & np.isfinite(r.points_world).all(axis=-1)
        assert np.array_equal(r.scene_flow[off], np.zeros_like(r.scene_flow[off]))
    entries = eng.cache.entries()
    for e in entries:
        assert e.nbytes_by_device == latent_nbytes_by_device(
            [e.latent, e.points_world, e.dynamic_mask, e.segments]) and e.nbytes > 0
    # a query 5 frames back answers every point with a status, deterministically
    px = np.array([[20.0, 30.0], [96.0, 72.0], [150.0, 100.0], [500.0, 10.0]])
    a = eng.query_pixels(float(clip.stamps[4]), px)
    b = eng.query_pixels(float(clip.stamps[4]), px)
    assert len(a.status) == 4 and set(a.status) <= {int(s) for s in PointStatus}
    assert a.status[3] == PointStatus.INVALID  # outside the source image
    assert np.array_equal(a.positions, b.positions, equal_nan=True)
    assert np.isfinite(a.positions[:3]).all()
    # a second run of the same stream gives the same outputs
    _, again = stream(name, clip)
    assert np.array_equal(results[-1].depth, again[-1].depth, equal_nan=True)
    assert np.allclose(results[-1].T_wc, again[-1].T_wc)


@pytest.fixture(scope='module')
def moving_clip():
    return generate_clip(SceneConfig(frames=8, width=192, height=144, seed=2, fps=30.0))


@pytest.mark.parametrize('name', BACKENDS)
def test_each_backend_reports_moving_segments_and_their_scene_flow(name, moving_clip) -> None:
    eng, results = stream(name, moving_clip)
    last = results[-1]
    moving = last.segments > 0
    if name == 'learned':
        # the shipped model's motion field (its scene-flow prior refined) marks parts of
        # these objects, not all of them on every frame (docs/measurements.md, issue 10): its
        # segments must be parts of its dynamic mask
        assert not (moving & ~last.dynamic_mask).any()
        moving_frames = [r for r in results if (r.segments > 0).any()]
        if not moving_frames:
            return
        last = moving_frames[-1]
        moving = last.segments > 0
    else:
        # rgbd and the oracle see the two moving objects of this clip by its last frame
        assert moving.sum() > 0.02 * moving.size
    # the segments' points have velocities (the oracle's are the ground truth's)
    assert np.isfinite(last.scene_flow[moving]).all(axis=-1).mean() > 0.9
    if last is not results[-1]:
        return
    objects = eng.object_snapshot()
    assert objects.segments.shape == last.segments.shape
    if name != 'learned':
        # followed from their first frames, so reported (an object is from its 3rd frame on
        # and while it travels); the learned segments of this 8-frame clip come and go
        assert objects.objects
    assert all(o.id >= 1 and o.num_points > 0 for o in objects.objects)
    # the engine's id of each segment is what the cache entry and queries report
    entry = eng.cache.latest()
    v, u = np.argwhere(moving)[0]
    scale = np.array([moving_clip.width, moving_clip.height]) / last.segments.shape[::-1]
    ids = eng.query_pixels(float(moving_clip.stamps[-1]),
                           (np.array([[u, v]], float) + 0.5) * scale - 0.5).object_ids
    assert ids[0] == entry.segment_ids[last.segments[v, u]] >= 1


@pytest.mark.parametrize('name', BACKENDS)
def test_cache_budget_holds_with_each_backends_latents(name, clip) -> None:
    eng, _ = stream(name, clip, cache=CachePolicy(budget_mb=2.5, recent=30))
    assert eng.cache.nbytes <= 2.5 * 2**20
    assert len(eng.cache) < len(clip)  # the budget, not the count policy, evicted frames


def test_eviction_releases_the_learned_latents_tensors(clip) -> None:
    backend = make_backend('learned', device='cpu')
    eng = StreamingEngine(backend, EngineConfig(
        cache=CachePolicy(recent=2, max_keyframes=0, keep_anchor=False)))
    eng.process(clip.frame(0))
    first = eng.cache.entries()[0]
    refs = [weakref.ref(t) for t in first.latent.model.tensors()]
    device_bytes = latent_nbytes_by_device(first.latent)
    assert device_bytes.get('cpu', 0) > 100_000  # keys/values of every layer are counted
    del first
    for i in range(1, 5):
        eng.process(clip.frame(i))
    gc.collect()
    assert eng.cache.get(float(clip.stamps[0])) is None
    assert all(r() is None for r in refs), 'an evicted latent is still referenced'


def test_latent_bytes_count_storage_once_and_views_in_full() -> None:
    big = torch.zeros(1000)
    arr = np.zeros(500, np.float32)
    record = {'a': big, 'nested': [big[:10], {'k': (big[5:], arr[:3])}], 'arr': arr}
    assert latent_nbytes_by_device(record) == {'cpu': 4000 + 2000}
    assert latent_nbytes_by_device({'x': [torch.zeros(2, 3)]}) == {'cpu': 24}


def test_factory_resolves_auto_and_refuses_unknown_devices() -> None:
    assert resolve_backend('auto', has_depth=True) == 'rgbd'
    assert resolve_backend('auto', has_depth=False) == 'learned'
    assert resolve_backend('rgbd', has_depth=False) == 'rgbd'
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA is not available'):
            make_backend('learned', device='cuda:0')
    with pytest.raises(ValueError, match='unknown backend'):
        make_backend('sonar')
    with pytest.raises(ValueError, match='nope.pt'):
        make_backend('learned', device='cpu', checkpoint='/nonexistent/nope.pt')


def test_queries_run_during_the_track_update_and_reset_waits_for_the_frame(clip) -> None:
    """The engine's threading contract: no lock is held while `process` is inside a backend
    call (here the track update's motion decode), so a query from another thread is served;
    `reset` from another thread waits for the frame in flight instead of racing it."""
    backend = make_backend('rgbd')
    eng = StreamingEngine(backend, EngineConfig(width=160))
    for i in range(3):
        eng.process(clip.frame(i))
    inside, release = threading.Event(), threading.Event()
    real_motion = backend.motion

    def motion(source, target, pixels, via=None):
        if threading.current_thread() is worker:  # the track update inside `process`
            inside.set()
            release.wait(30)
        return real_motion(source, target, pixels, via)

    backend.motion = motion
    worker = threading.Thread(target=eng.process, args=(clip.frame(3),))
    worker.start()
    try:
        assert inside.wait(30)
        answers: list = []
        asker = threading.Thread(target=lambda: answers.append(
            eng.query_pixels(float(clip.stamps[1]), np.array([[20.0, 20.0]]))))
        asker.start()
        asker.join(20)
        assert not asker.is_alive() and answers[0].status[0] != PointStatus.INVALID
        resetter = threading.Thread(target=eng.reset)
        resetter.start()
        resetter.join(0.5)
        assert resetter.is_alive(), 'reset did not wait for the frame being processed'
    finally:
        release.set()
        worker.join(30)
    resetter.join(30)
    assert len(eng.cache) == 0 and eng.track_snapshot().ids.size == 0


def test_device_out_of_memory_is_one_clear_error_and_the_stream_goes_on(clip) -> None:
    eng, _ = stream('learned', clip)
    backend = eng.backend
    cached = len(eng.cache)

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

    real_encode, real_motion = backend.model.encode, backend.model.motion
    backend.model.motion = oom
    out = eng.query_pixels(float(clip.stamps[4]), np.array([[20.0, 30.0], [50.0, 40.0]]))
    assert (out.status == PointStatus.INVALID).all() and 'ran out of memory' in out.message
    backend.model.encode = oom
    frame = clip.frame(len(clip) - 1)
    frame.stamp += 1.0
    with pytest.raises(BackendError, match=r'cpu ran out of memory while encoding a frame'):
        eng.process(frame)
    assert len(eng.cache) == cached  # nothing half-cached
    backend.model.encode, backend.model.motion = real_encode, real_motion
    frame.stamp += 1.0
    eng.process(frame)
    out = eng.query_pixels(float(clip.stamps[4]), np.array([[20.0, 30.0]]))
    assert out.status[0] != PointStatus.INVALID
    eng.close()
    assert backend.model is None
