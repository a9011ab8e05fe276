"""Tests of the `fourd` command line (synth, run, eval, bench) and of the oracle evaluation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
from scipy.spatial.transform import Rotation

from fourd_ros.cli.main import main
from sequence_files import write_bag
from shared_data import SEVEN_SCENES, needs_7scenes

SEED_WITH_MOVERS = 2  # 96x72 x 12: two moving objects, visible in frames 0-11


@pytest.fixture(scope='module')
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('clip') / 'clip'
    assert main(['synth', '--seed', str(SEED_WITH_MOVERS), '--frames', '12', '--size', '96x72',
                 '--out', str(out)]) == 0
    return out


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_synth_writes_clip(clip_dir: Path, capsys: pytest.CaptureFixture) -> None:
    meta = _load(clip_dir / 'meta.json')
    assert meta['frames'] == 12 and (meta['width'], meta['height']) == (96, 72)
    assert any(meta['object_moving'])
    assert len(list((clip_dir / 'rgb').glob('*.png'))) == 12


def test_eval_oracle_synthetic_is_perfect(clip_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / 'out.json'
    plots = tmp_path / 'plots'
    assert main(['eval', '--backend', 'oracle', '--input', str(clip_dir), '--json', str(out),
                 '--plots', str(plots)]) == 0
    m = _load(out)
    assert m['frames'] == 12 and m['backend'] == 'oracle' and m['metric'] is True
    assert m['depth_absrel'] == pytest.approx(0.0, abs=1e-9)
    assert m['depth_delta125'] == pytest.approx(1.0)
    assert m['ate_m'] < 1e-6 and m['ate_sim3_m'] < 1e-6
    assert m['rpe_trans_m'] < 1e-6 and m['rpe_rot_deg'] < 1e-4
    assert m['track_points'] > 100 and m['track_points_dynamic'] > 20
    assert m['apd3d'] == pytest.approx(100.0)
    assert m['apd3d_dynamic'] == pytest.approx(100.0)
    assert m['track_epe_m'] < 1e-5 and m['track_median_err_m'] < 1e-5
    # moving objects from the oracle's true motion mask and motion (not a perfect score: its
    # segments leave out depth edges, its scene flow is a one-frame difference and objects are
    # reported from their 3rd frame); static points do not move
    assert m['objects_mask_iou'] > 0.7 and m['objects_flow_static_median_m_s'] == 0.0
    assert m['objects_frames_with_false_object'] == 0.0
    for name in ('trajectory', 'depth_samples', 'track_queries', 'track_trails'):
        assert (plots / f'{name}.png').stat().st_size > 10_000


@needs_7scenes
def test_eval_oracle_seven_scenes(tmp_path: Path) -> None:
    out = tmp_path / 'out.json'
    assert main(['eval', '--backend', 'oracle', '--input', str(SEVEN_SCENES), '--max-frames',
                 '30', '--json', str(out)]) == 0
    m = _load(out)
    assert m['frames'] == 30 and m['processing_size'] == '640x480'
    assert m['depth_absrel'] == pytest.approx(0.0, abs=1e-9)
    assert m['ate_m'] < 1e-6 and m['rpe_trans_m'] < 1e-6
    assert m['track_epe_m'] < 1e-5
    # static scene: no dynamic points
    assert m['apd3d_dynamic'] is None and m['track_points_dynamic'] == 0
    assert not any(k.startswith('objects_') for k in m)  # scored on synthetic clips only
    # integer-pixel queries next to depth holes come back INVALID (bilinear NaN propagation)
    assert m['apd3d'] > 98.0


def test_run_rgbd_writes_outputs(clip_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / 'run'
    assert main(['run', '--backend', 'rgbd', '--input', str(clip_dir), '--out', str(out),
                 '--depth-every', '5', '--max-tracks', '64', '--cache-mb', '64',
                 '--cache-device-mb', '32']) == 0
    summary = _load(out / 'summary.json')
    assert summary['cache_budget_mb'] == 64 and summary['cache_device_budget_mb'] == 32
    # the rgbd backend caches host arrays only
    assert set(summary['cache_mb_by_device']) == {'cpu'}
    for key in ('frames', 'fps', 'latency_ms_p50', 'latency_ms_p95', 'peak_rss_mb', 'cache_mb',
                'metric'):
        assert key in summary, key
    assert summary['frames'] == 12 and summary['metric'] is True and summary['fps'] > 0
    # TUM trajectory: one line per frame, unit quaternions, first pose = identity
    rows = np.loadtxt(out / 'trajectory.txt', comments='#')
    assert rows.shape == (12, 8)
    assert np.allclose(np.linalg.norm(rows[:, 4:], axis=1), 1.0, atol=1e-6)
    assert np.allclose(rows[0, 1:], [0, 0, 0, 0, 0, 0, 1], atol=1e-9)
    Rotation.from_quat(rows[:, 4:])
    tracks = np.load(out / 'tracks.npz')
    F, T = len(tracks['stamps']), len(tracks['ids'])
    assert F == 12 and 0 < T
    assert tracks['positions'].shape == (F, T, 3) and tracks['status'].shape == (F, T)
    assert tracks['status'].dtype == np.uint8
    exists = tracks['status'] != 255
    assert np.isfinite(tracks['positions'][exists]).all()
    assert np.isnan(tracks['positions'][~exists]).all()
    assert exists.sum(axis=1).max() <= 64
    assert tracks['object_ids'].shape == (F, T) and tracks['object_ids'].dtype == np.uint64
    # moving objects: one line per frame; this clip's movers are reported, under ids that the
    # tracks on them carry too
    lines = [json.loads(line) for line in (out / 'objects.jsonl').read_text().splitlines()]
    assert [line['stamp'] for line in lines] == list(tracks['stamps'])
    reported = {o['id'] for line in lines for o in line['objects']}
    assert summary['objects_total'] == len(reported) > 0
    assert summary['frames_with_objects'] == sum(bool(line['objects']) for line in lines) > 0
    assert reported <= set(tracks['object_ids'].ravel().tolist())
    first = next(o for line in lines for o in line['objects'])
    assert len(first['centroid']) == len(first['box_size']) == 3
    assert len(first['box_rotation']) == 4 and first['age'] >= 3
    depth_files = sorted((out / 'depth').glob('*.npy'))
    assert [p.stem for p in depth_files] == ['000000', '000005', '000010']
    d = np.load(depth_files[0])
    assert d.dtype == np.float32 and d.shape == (72, 96)
    # the static map: coloured points in front of the first camera, within the depth's range
    cloud = o3d.io.read_point_cloud(str(out / 'map.ply'))
    points = np.asarray(cloud.points)
    assert len(points) == summary['map_points'] > 100 and cloud.has_colors()
    assert np.isfinite(points).all() and (points[:, 2] > 0).mean() > 0.9
    assert np.percentile(np.linalg.norm(points, axis=1), 99) < 2 * np.nanmax(d)


def test_bench_small(tmp_path: Path) -> None:
    out = tmp_path / 'bench.json'
    assert main(['bench', '--frames', '150', '--size', '96x72', '--clip-frames', '40',
                 '--json', str(out), '--plot', str(tmp_path / 'soak.png')]) == 0
    r = _load(out)
    assert (tmp_path / 'soak.png').stat().st_size > 10_000
    assert r['soak_rss_growth_mb'] == r['rss_growth_steady_mb']
    assert r['soak_ok'] == (r['soak_rss_growth_mb'] <= r['cache_budget_mb']
                            and r['soak_latency_ratio'] <= 1.1)
    for key in ('fps', 'latency_ms_first_p50', 'latency_ms_first_p95', 'latency_ms_last_p50',
                'latency_ms_last_p95', 'latency_ratio_last_first', 'rss_first_mb',
                'rss_last_mb', 'rss_growth_mb', 'cache_mb', 'query_ms_1', 'query_ms_100',
                'query_ms_1000', 'query_ms_all'):
        assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), key
    assert r['frames'] == 150 and r['query_points_all'] == 96 * 72
    # the query on moving objects runs whenever the source frame shows one
    assert r['query_points_moving'] == 0 or math.isfinite(r['query_ms_moving'])


def test_soak_verdict() -> None:
    from fourd_ros.core.eval.soak import soak_failure
    ok = {'soak_rss_growth_mb': 5.0, 'cache_budget_mb': 256.0, 'soak_latency_ratio': 1.05}
    assert soak_failure(ok) == ''
    assert 'RSS grew 300.0 MiB' in soak_failure({**ok, 'soak_rss_growth_mb': 300.0})
    assert 'latency last/first 1.25' in soak_failure({**ok, 'soak_latency_ratio': 1.25})


def test_soak_check_sets_the_exit_code(tmp_path: Path) -> None:
    """`fourd bench --check` exits 1 exactly when the soak verdict fails (here a 0.5 MiB
    budget: five 96x72 frames, below what a process allocates after warm-up on most runs)."""
    out = tmp_path / 'bench.json'
    code = main(['bench', '--frames', '120', '--size', '96x72', '--clip-frames', '30',
                 '--cache-mb', '0.5', '--check', '--json', str(out)])
    r = _load(out)
    assert r['cache_budget_mb'] == pytest.approx(0.5)
    assert code == (0 if r['soak_ok'] else 1)


def test_bench_real_next_to_open3d(clip_dir: Path, tmp_path: Path) -> None:
    """`fourd bench --real DIR --open3d`: our rgbd backend and Open3D's RGB-D odometry on the
    same frames, frames/s as a ratio and both ATEs (the synthetic clip has exact poses)."""
    out = tmp_path / 'bench.json'
    assert main(['bench', '--frames', '12', '--size', '64x48', '--clip-frames', '12',
                 '--real', str(clip_dir), '--open3d', '--json', str(out)]) == 0
    r = _load(out)
    assert r['real_frames'] == 12 and r['open3d_failures'] <= 2
    assert r['real_over_open3d_fps'] == pytest.approx(r['real_process_fps'] / r['open3d_fps'])
    print(f"bench real ATE {r['real_ate_m'] * 1e3:.3f} mm")
    assert r['real_ate_m'] < 0.0066 and math.isfinite(r['open3d_ate_m'])  # measured 5.28 mm
    assert main(['bench', '--open3d', '--frames', '12']) == 2  # needs --real


def test_pingpong_is_continuous() -> None:
    from fourd_ros.core.eval.engine_bench import pingpong_index

    idx = [pingpong_index(k, 4) for k in range(10)]
    assert idx == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]


# --- bad input ----------------------------------------------------------------------------------

def _seven_scenes_folder(folder: Path, frames: int = 3, w: int = 64, h: int = 48) -> Path:
    """A tiny valid 7-Scenes-layout sequence (flat wall 2 m away, camera sliding sideways)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(frames):
        rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f'frame-{i:06d}.color.png'), rgb)
        depth = np.full((h, w), 2000, np.uint16)
        assert cv2.imwrite(str(folder / f'frame-{i:06d}.depth.png'), depth)
        T = np.eye(4)
        T[0, 3] = 0.01 * i
        np.savetxt(folder / f'frame-{i:06d}.pose.txt', T)
    (folder / 'camera-intrinsics.txt').write_text('60 0 31.5\n0 60 23.5\n0 0 1\n')
    return folder


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    corrupt = _seven_scenes_folder(tmp_path / 'corrupt')
    (corrupt / 'frame-000001.color.png').write_bytes(b'not a png at all')
    no_k = _seven_scenes_folder(tmp_path / 'no_intrinsics')
    (no_k / 'camera-intrinsics.txt').unlink()
    mismatch = _seven_scenes_folder(tmp_path / 'mismatch')
    assert cv2.imwrite(str(mismatch / 'frame-000002.depth.png'),
                       np.full((24, 32), 2000, np.uint16))
    return {'corrupt': corrupt, 'intrinsics': no_k, 'mismatch': mismatch,
            'missing': tmp_path / 'does_not_exist'}


def test_good_tiny_folder_runs(tmp_path: Path) -> None:
    folder = _seven_scenes_folder(tmp_path / 'ok')
    assert main(['run', '--input', str(folder), '--out', str(tmp_path / 'out')]) == 0
    # the default backend, auto: rgbd for an input with depth
    assert _load(tmp_path / 'out' / 'summary.json')['backend'] == 'rgbd'


@pytest.mark.parametrize('case', ['corrupt', 'intrinsics', 'mismatch', 'missing'])
@pytest.mark.parametrize('command', ['run', 'eval'])
def test_bad_input_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture, case: str,
                                  command: str) -> None:
    path = _bad_inputs(tmp_path)[case]
    argv = [command, '--backend', 'rgbd', '--input', str(path)]
    argv += ['--out', str(tmp_path / 'out')] if command == 'run' else []
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith('fourd: error: ')
    expected = {'corrupt': 'frame-000001.color.png', 'intrinsics': 'camera-intrinsics.txt',
                'mismatch': 'frame-000002.depth.png', 'missing': 'does_not_exist'}[case]
    assert expected in err[0]


def test_bad_input_subprocess_no_traceback(tmp_path: Path) -> None:
    path = _bad_inputs(tmp_path)['mismatch']
    proc = subprocess.run([sys.executable, '-m', 'fourd_ros.cli.main', 'run', '--input',
                           str(path), '--out', str(tmp_path / 'out')],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fourd: error: '), proc.stderr


def test_bad_option_values(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['synth', '--size', '96by72', '--out', str(tmp_path / 'x')])
    assert exc.value.code == 2
    assert 'WIDTHxHEIGHT' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['run', '--input', 'x', '--out', str(tmp_path / 'r'), '--camera-height', 'nan'])
    assert 'finite' in capsys.readouterr().err
    # a pitch without a height: one clear error (exit 2), before anything is loaded
    assert main(['run', '--input', 'x', '--out', str(tmp_path / 'r'),
                 '--camera-pitch', '10']) == 2
    assert '--camera-pitch goes with --camera-height' in capsys.readouterr().err
    # a host cache budget of 0 or a negative device budget: one clear error, before anything
    # is loaded
    assert main(['run', '--input', 'x', '--out', str(tmp_path / 'r'), '--cache-mb', '0']) == 2
    assert 'the host cache budget must be > 0 MiB, got 0' in capsys.readouterr().err
    assert main(['run', '--input', 'x', '--out', str(tmp_path / 'r'),
                 '--cache-device-mb', '-1']) == 2
    assert 'the device cache budget must be >= 0 MiB' in capsys.readouterr().err


def test_demo_is_dispatched_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import fourd_ros.ros

    seen = {}
    fake = types.ModuleType('fourd_ros.ros.demo')
    fake.add_arguments = lambda p: p.add_argument('--duration', type=float, default=20.0)
    fake.main = lambda args: seen.setdefault('duration', args.duration) and 0
    monkeypatch.setitem(sys.modules, 'fourd_ros.ros.demo', fake)
    monkeypatch.setattr(fourd_ros.ros, 'demo', fake, raising=False)
    assert main(['demo', '--duration', '3']) == 0
    assert seen == {'duration': 3.0}


def _as_image_folder(clip_dir: Path, out: Path) -> Path:
    from fourd_ros.core.data.readers import open_sequence
    out.mkdir()
    for f in open_sequence(clip_dir):
        cv2.imwrite(str(out / f'{f.index:04d}.png'), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
    return out


def _as_video(clip_dir: Path, out: Path) -> Path:
    from fourd_ros.core.data.readers import open_sequence
    frames = list(open_sequence(clip_dir))
    h, w = frames[0].rgb.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return out


def _as_bag(clip_dir: Path, out: Path) -> Path:
    """The clip as a monocular camera's rosbag2 (images + CameraInfo, no depth)."""
    from fourd_ros.core.data.readers import open_sequence
    frames = list(open_sequence(clip_dir))
    write_bag(out, [f.rgb for f in frames], frames[0].K)
    return out


def _as_tum(clip_dir: Path, out: Path) -> Path:
    """The clip as a TUM RGB-D folder without depth (rgb.txt, rgb/, camera-intrinsics.txt)."""
    from fourd_ros.core.data.readers import open_sequence
    (out / 'rgb').mkdir(parents=True)
    lines = ['# color images', '# timestamp filename']
    for f in open_sequence(clip_dir):
        name = f'rgb/{f.stamp + 100.0:.6f}.png'
        cv2.imwrite(str(out / name), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
        lines.append(f'{f.stamp + 100.0:.6f} {name}')
        K = f.K
    (out / 'rgb.txt').write_text('\n'.join(lines) + '\n')
    np.savetxt(out / 'camera-intrinsics.txt', K)
    return out


@pytest.mark.parametrize('kind', ['synthetic clip', 'image folder', 'video', 'bag', 'TUM',
                                  pytest.param('7-Scenes', marks=needs_7scenes)])
def test_run_learned_on_each_input_kind(kind: str, clip_dir: Path, tmp_path: Path) -> None:
    """`fourd run --backend learned` reads what the rgbd backend reads, monocular, up to scale;
    on inputs without depth `--backend auto` (the default) picks it."""
    source = {'synthetic clip': lambda: clip_dir,
              'image folder': lambda: _as_image_folder(clip_dir, tmp_path / 'imgs'),
              'video': lambda: _as_video(clip_dir, tmp_path / 'clip.avi'),
              'bag': lambda: _as_bag(clip_dir, tmp_path / 'bag'),
              'TUM': lambda: _as_tum(clip_dir, tmp_path / 'tum'),
              '7-Scenes': lambda: SEVEN_SCENES}[kind]()
    with_depth = kind in ('synthetic clip', '7-Scenes')
    out = tmp_path / 'run'
    assert main(['run', '--backend', 'learned' if with_depth else 'auto', '--device', 'cpu',
                 '--input', str(source), '--out', str(out), '--max-frames', '12',
                 '--depth-every', '4']) == 0
    summary = _load(out / 'summary.json')
    assert summary['frames'] == 12 and summary['metric'] is False
    assert summary['backend'] == 'learned'
    rows = np.loadtxt(out / 'trajectory.txt', comments='#')
    assert rows.shape == (12, 8) and np.isfinite(rows).all()
    assert len(sorted((out / 'depth').glob('*.npy'))) == 3
    tracks = np.load(out / 'tracks.npz')
    assert len(tracks['stamps']) == 12 and len(tracks['ids']) > 0


def test_run_learned_takes_metres_from_the_depth_when_asked(
        clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`fourd run --backend learned --metric-depth` on an input with depth: metric outputs
    (the learned depth brought to the sensor's); refused without depth or for rgbd."""
    from fourd_ros.core.data.readers import open_sequence
    out = tmp_path / 'run'
    assert main(['run', '--backend', 'learned', '--device', 'cpu', '--metric-depth', '--input',
                 str(clip_dir), '--out', str(out), '--depth-every', '1']) == 0
    summary = _load(out / 'summary.json')
    assert summary['metric'] is True and summary['metric_from_frame'] == 0
    frames = list(open_sequence(clip_dir))
    ratios = []
    for path in sorted((out / 'depth').glob('*.npy')):
        depth, truth = np.load(path), frames[int(path.stem)].depth
        truth = cv2.resize(truth, depth.shape[::-1], interpolation=cv2.INTER_NEAREST)
        ok = (depth > 0) & (truth > 0)
        ratios.append(float(np.median(depth[ok] / truth[ok])))
    print('fourd run --metric-depth: depth / true depth per frame',
          ' '.join(f'{r:.3f}' for r in ratios))
    # measured 0.87-1.04 (a 96x72 clip whose two moving objects cover much of the view)
    assert abs(np.log(np.median(ratios))) < 0.1 and min(ratios) > 0.75
    # `fourd eval --metric-depth`: metric from the first frame, so scored without alignment
    # (the same run without it: median-scaled)
    for metric_depth in (True, False):
        assert main(['eval', '--backend', 'learned', '--device', 'cpu', '--no-rgbd-baseline',
                     '--input', str(clip_dir), '--width', '0', '--json',
                     str(tmp_path / 'eval.json')] + ['--metric-depth'] * metric_depth) == 0
        m = _load(tmp_path / 'eval.json')
        assert m['metric'] is metric_depth and 'metric_from_frame' not in m
        if metric_depth:
            metric_absrel = m['depth_absrel']
    # measured: 0.184 in metres, 0.242 median-scaled monocular
    assert metric_absrel < 0.3 and metric_absrel < 1.2 * m['depth_absrel']
    video = _as_video(clip_dir, tmp_path / 'v.avi')
    for command in ('run', 'eval'):
        for argv in (['--backend', 'rgbd', '--input', str(clip_dir)],
                     ['--backend', 'learned', '--input', str(video)]):
            argv += ['--out', str(tmp_path / 'x')] if command == 'run' else []
            # one clear error (exit 2)
            assert main([command, *argv, '--metric-depth']) == 2
            assert '(--metric-depth) are for the learned backend' in capsys.readouterr().err
    # `fourd bench --metric-depth`: the learned backend on the synthetic stream's depth is
    # metric; the rgbd backend is refused with the same message
    assert main(['bench', '--backend', 'learned', '--metric-depth', '--device', 'cpu',
                 '--frames', '24', '--size', '96x72', '--clip-frames', '12',
                 '--unbounded-frames', '0', '--json', str(tmp_path / 'bench.json')]) == 0
    assert _load(tmp_path / 'bench.json')['metric'] is True
    assert main(['bench', '--metric-depth', '--frames', '12']) == 2
    assert '(--metric-depth) are for the learned backend' in capsys.readouterr().err


def test_bench_learned_small(tmp_path: Path) -> None:
    out = tmp_path / 'bench.json'
    assert main(['bench', '--backend', 'learned', '--device', 'cpu', '--frames', '220',
                 '--size', '128x96', '--clip-frames', '40', '--unbounded-frames', '210',
                 '--json', str(out)]) == 0
    r = _load(out)
    for key in ('latency_ratio_last_first', 'rss_growth_mb', 'query_ms_1000',
                'unbounded_latency_ratio_last_first', 'unbounded_cache_mb', 'cache_latent_mb_cpu',
                'encode_geometry_fps', 'stage_ms_p50_encode', 'stage_ms_p50_motion'):
        assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), key
    # the backend's stages are part of engine.process: without the motion decoder it is faster
    assert r['encode_geometry_fps'] > r['fps']
    # the unbounded variant caches every frame; the bounded one stays within its budget
    assert r['unbounded_cache_mb'] > r['cache_mb']


def _as_seven_scenes(clip_dir: Path, out: Path) -> Path:
    """A synthetic clip rewritten in the 7-Scenes layout: images, depth and poses, but no
    floor (a 'ground' clip's reader gives each frame its floor; a recording does not)."""
    from fourd_ros.core.data.readers import open_sequence
    out.mkdir()
    for f in open_sequence(clip_dir):
        stem = out / f'frame-{f.index:06d}'
        cv2.imwrite(f'{stem}.color.png', cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(f'{stem}.depth.png', np.round(f.depth * 1000).astype(np.uint16))
        np.savetxt(f'{stem}.pose.txt', f.T_wc_gt)
        K = f.K
    np.savetxt(out / 'camera-intrinsics.txt', K)
    return out


def test_eval_takes_a_ground_robots_camera_height(tmp_path: Path) -> None:
    """`fourd eval --camera-height --camera-pitch` gives every frame the floor, as `fourd run`
    does: the learned backend turns metric on the way, and its metric frames are scored as
    such (without the options: a monocular stream)."""
    from fourd_ros.core.data.readers import open_sequence
    clip_dir = tmp_path / 'clip'
    assert main(['synth', '--seed', '2', '--frames', '30', '--size', '128x96', '--fps', '30',
                 '--camera', 'ground', '--out', str(clip_dir)]) == 0
    ground = open_sequence(clip_dir).clip.ground_plane(0)
    pitch = float(np.degrees(np.arcsin(-ground.up[2])))
    folder = _as_seven_scenes(clip_dir, tmp_path / '7s')
    out = tmp_path / 'eval.json'
    argv = ['eval', '--backend', 'learned', '--device', 'cpu', '--no-rgbd-baseline',
            '--input', str(folder), '--width', '0', '--json', str(out)]
    assert main(argv) == 0
    assert 'metric_from_frame' not in _load(out)
    assert main(argv + ['--camera-height', f'{ground.height:.4f}',
                        '--camera-pitch', f'{pitch:.3f}']) == 0
    m = _load(out)
    print(f"fourd eval --camera-height: metric from frame {m['metric_from_frame']}, AbsRel "
          f"of those frames {m['depth_absrel_once_metric']:.3f}")
    assert 0 < m['metric_from_frame'] < 30 and m['depth_absrel_once_metric'] < 0.5


def test_run_learned_is_metric_with_a_ground_robots_camera_height(tmp_path: Path) -> None:
    """`fourd run --camera-height --camera-pitch` on a ground robot's images (a folder: no
    ground truth comes with them): the learned backend's depth is in metres."""
    from fourd_ros.core.data.readers import open_sequence
    clip_dir = tmp_path / 'clip'
    assert main(['synth', '--seed', '2', '--frames', '40', '--size', '256x192', '--fps', '30',
                 '--camera', 'ground', '--out', str(clip_dir)]) == 0
    clip = open_sequence(clip_dir).clip
    ground = clip.ground_plane(0)  # fixed height and pitch
    pitch = float(np.degrees(np.arcsin(-ground.up[2])))
    out = tmp_path / 'run'
    assert main(['run', '--backend', 'learned', '--device', 'cpu', '--input',
                 str(_as_image_folder(clip_dir, tmp_path / 'imgs')), '--out', str(out),
                 '--depth-every', '1', '--camera-height', f'{ground.height:.4f}',
                 '--camera-pitch', f'{pitch:.3f}']) == 0
    summary = _load(out / 'summary.json')
    assert summary['metric'] is True and 0 < summary['metric_from_frame'] < 30
    last = sorted((out / 'depth').glob('*.npy'))[-1]
    depth = np.load(last)
    truth = cv2.resize(clip.depth[int(last.stem)], depth.shape[::-1],
                       interpolation=cv2.INTER_NEAREST)
    ok = depth > 0
    ratio = float(np.median(depth[ok] / truth[ok]))
    print(f'ground robot, fourd run: depth / true depth {ratio:.3f} at frame {last.stem}')
    assert abs(np.log(ratio)) < 0.25
    # `fourd eval` on the clip itself (its frames carry the floor): the frames once metric are
    # scored without alignment
    assert main(['eval', '--backend', 'learned', '--device', 'cpu', '--input', str(clip_dir),
                 '--width', '0', '--json', str(tmp_path / 'eval.json')]) == 0
    m = _load(tmp_path / 'eval.json')
    print(f"fourd eval: metric from frame {m['metric_from_frame']}, AbsRel once metric "
          f"{m['depth_absrel_once_metric']:.3f}")
    # measured: from frame 15, 0.144-0.148
    assert m['metric'] is False and 0 < m['metric_from_frame'] < 30
    assert m['depth_absrel_once_metric'] < 0.3
    # the clip has depth: the rgbd backend's figures come beside the learned one's (issue 10)
    assert m['has_depth'] and math.isfinite(m['baseline_rgbd_ate_sim3_m'])
    assert m['baseline_rgbd_ate_sim3_m'] < 0.05
