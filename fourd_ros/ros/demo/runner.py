"""One `fourd demo` run (``Demo``): children, monitor, services, snapshot and summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import signal
import sys
import time
from typing import Any

import numpy as np

from fourd_ros.ros.demo.console import Display, status_line
from fourd_ros.ros.demo.monitor import make_monitor, POINTS_RECORD_EVERY
from fourd_ros.ros.demo.processes import (
    camera_argv,
    Child,
    config_dir,
    map_voxel_size,
    node_argv,
    setup_environment,
    start_child,
    stop_children,
)
from fourd_ros.ros.demo.query import make_query, query_table, summarize_query
from fourd_ros.ros.demo.trajectory import (align_ground_truth, path_poses, pose_to_matrix,
                                           trajectory_error)

STARTUP_TIMEOUT_S = 60.0
QUERY_AFTER_FRAMES = 30


class StartupError(RuntimeError):
    """The node produced no output in time, or a child process died."""


class Demo:
    """One `fourd demo` run (see the fourd_ros.ros.demo docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.display = Display()
        self.children: list[Child] = []
        self.query: dict[str, Any] | None = None
        self.query_resp: Any = None
        self.query_ctx: dict[str, Any] | None = None
        self.trajectory: dict[str, Any] | None = None
        self.interrupted = False
        self.recorder: Any = None
        self.t_end: float | None = None  # when recording stopped (monotonic)
        self._pending: list[tuple[str, Any, float, Any]] = []

    # ---------------------------------------------------------------- main loop pieces
    def _check_children(self) -> None:
        for child in self.children:
            rc = child.proc.poll()
            if rc is not None:
                raise StartupError(f'{child.name} exited with status {rc}; last lines of '
                                   f'{child.log}:\n{child.tail()}')

    def _maybe_query(self, mon: Any) -> None:
        if self.query is not None or any(k == 'query' for k, *_ in self._pending):
            return
        if mon.received['/fourd/points'] < QUERY_AFTER_FRAMES:
            return
        self._send_query(mon)

    def _send_query(self, mon: Any) -> bool:
        if not mon.query_client.service_is_ready():
            return False
        made = make_query(mon)
        if made is None:
            return False
        req, ctx = made
        self.query_ctx = ctx
        self._pending.append(('query', mon.query_client.call_async(req), time.monotonic(),
                              ctx))
        return True

    def _send_trajectory(self, mon: Any) -> None:
        if mon.trajectory_client.service_is_ready():
            req = mon.GetTrajectory.Request()  # zero start/end: the whole trajectory
            self._pending.append(('trajectory', mon.trajectory_client.call_async(req),
                                  time.monotonic(), None))

    def _poll_futures(self, mon: Any) -> None:
        for item in list(self._pending):
            kind, future, t0, ctx = item
            if not future.done():
                continue
            self._pending.remove(item)
            ms = (time.monotonic() - t0) * 1e3
            resp = future.result()
            if kind == 'query':
                self._on_query(mon, resp, ctx, ms)
            else:
                self._on_trajectory(mon, resp, ms)

    def _on_query(self, mon: Any, resp: Any, ctx: dict[str, Any], ms: float) -> None:
        self.query = summarize_query(resp, ctx, ms)
        if not resp.success:
            self.display.print(f'query_motion failed: {resp.message}')
        else:
            self.query_resp = resp
            back = ctx['frames_back']
            self.display.print(
                f'\n/fourd/query_motion: {len(resp.status)} pixels of the frame {back} frames '
                f'back -> latest frame ({ms:.1f} ms round trip): {resp.message}')
            self.display.print(query_table(resp, ctx['pixels']))
        self._send_trajectory(mon)

    def _on_trajectory(self, mon: Any, resp: Any, ms: float) -> None:
        if not resp.success:
            self.trajectory = {'success': False, 'message': resp.message}
            self.display.print(f'get_trajectory failed: {resp.message}')
            return
        stamps, poses = path_poses(resp.path)
        xyz = poses[:, :3, 3]
        length = float(np.linalg.norm(np.diff(xyz, axis=0), axis=1).sum()) if len(xyz) > 1 \
            else 0.0
        self.trajectory = {'success': True, 'poses': len(xyz), 'frame_id':
                           resp.path.header.frame_id, 'path_length_m': length,
                           'round_trip_ms': round(ms, 2),
                           'vs_ground_truth': trajectory_error(
                               stamps, poses, mon.gt, self._metric(mon))}
        err = self.trajectory['vs_ground_truth']
        gt = (f', position RMSE vs ground truth {err["position_rmse_m"] * 100:.1f} cm over '
              f'{err["matched_poses"]} poses ({err["alignment"]} aligned)' if err else '')
        self.display.print(f'/fourd/get_trajectory: {len(xyz)} poses in '
                           f"'{resp.path.header.frame_id}', {length:.2f} m travelled{gt} "
                           f'({ms:.1f} ms)\n')

    def _metric(self, mon: Any) -> bool:
        """Whether the node's output is metres (its diagnostics; before any, its backend)."""
        return mon.diag.get('metric', str(self.args.backend == 'rgbd').lower()) == 'true'

    def _finish_services(self, mon: Any, executor: Any) -> None:
        """Before stopping the node: make sure the query ran and wait for pending answers."""
        if self.query is None and not self._pending and mon.received['/fourd/points'] >= 2:
            self._send_query(mon)
        deadline = time.monotonic() + 5.0
        while self._pending and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            self._poll_futures(mon)

    # ---------------------------------------------------------------- run
    def run(self) -> int:
        args = self.args
        if not args.duration > 0:
            raise ValueError('--duration must be > 0')
        if not args.rate > 0:
            raise ValueError('--rate must be > 0')
        if args.domain_id is not None and not 0 <= args.domain_id <= 232:
            raise ValueError('--domain-id must be in 0..232')
        config = config_dir()
        domain = setup_environment(args.domain_id, config)
        log_dir = self.out / 'logs'
        log_dir.mkdir(parents=True, exist_ok=True)
        monocular = getattr(args, 'backend', 'rgbd') == 'learned'

        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        from fourd_ros.ros.bag_recorder import BagRecorder

        print(f'fourd demo: ROS_DOMAIN_ID={domain} (localhost only), output in {self.out}/',
              flush=True)
        recorder = self.recorder = BagRecorder(self.out / 'demo.mcap')
        context = Context()
        rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
        # Ctrl-C and SIGTERM end the recording the same way (also when started in the
        # background, where SIGINT would otherwise be ignored)
        old_handlers = {sig: signal.signal(sig, _raise_keyboard_interrupt)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
        mon = executor = None
        t_start = time.monotonic()
        failure: str | None = None
        try:
            mon = make_monitor(context, recorder)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(mon)
            self.children = [
                start_child('synthetic_camera', camera_argv(
                    f'rate:={float(args.rate)}', f'seed:={int(args.seed)}',
                    f'publish_depth:={str(not monocular).lower()}'), log_dir),
                start_child('fourd_node', node_argv(config, depth=not monocular), log_dir)]
            print(f'started synthetic camera (pid {self.children[0].proc.pid}) and fourd_node '
                  f'(pid {self.children[1].proc.pid}); logs in {log_dir}/', flush=True)
            if getattr(args, 'view', False):
                self.children.append(start_child('viewer', [
                    '-m', 'fourd_ros.cli.main', 'view', '--port', str(args.view_port)], log_dir))
                print(f'live 3D view: open http://127.0.0.1:{args.view_port} in a browser',
                      flush=True)
            with self.display:
                try:
                    self._loop(mon, executor, t_start)
                    self._finish_services(mon, executor)
                except KeyboardInterrupt:
                    self.interrupted = True
                self.t_end = time.monotonic()
                self.display.status(status_line(mon, time.monotonic() - t_start, recorder),
                                    force=True)
        except StartupError as exc:
            failure = str(exc)
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            for sig in old_handlers:  # no second interrupt while the children stop
                signal.signal(sig, signal.SIG_IGN)
            try:
                stop_children(self.children)
                bag = recorder.close()
            finally:
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
        try:
            if failure is not None:
                print(f'fourd demo: error: {failure}', file=sys.stderr)
                return 1
            if mon is None or mon.first_output is None:
                print('fourd demo: interrupted before fourd_node produced output',
                      file=sys.stderr)
                return 130
            return self._write_outputs(mon, recorder, bag, domain, t_start)
        finally:
            if mon is not None:
                mon.destroy_node()
            if executor is not None:
                executor.shutdown()
            context.try_shutdown()

    def _loop(self, mon: Any, executor: Any, t_start: float) -> None:
        while True:
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            self._check_children()
            if mon.first_output is None:
                if now - t_start > STARTUP_TIMEOUT_S:
                    node = self.children[1]
                    raise StartupError(
                        f'fourd_node produced no output within {STARTUP_TIMEOUT_S:.0f} s '
                        f'(camera frames seen by the node: '
                        f"{mon.diag.get('frames_received', 'unknown')}). Last lines of "
                        f'{node.log}:\n{node.tail()}')
            elif now - mon.first_output >= self.args.duration:
                return
            self._maybe_query(mon)
            self._poll_futures(mon)
            self.display.status(status_line(mon, now - t_start, self.recorder))

    # ---------------------------------------------------------------- outputs
    def _write_outputs(self, mon: Any, recorder: Any, bag: Path, domain: int,
                       t_start: float) -> int:
        from fourd_ros.core.eval.snapshot import render_snapshot
        end = self.t_end or time.monotonic()
        recorded_s = max(0.0, end - mon.first_output) if mon.first_output else 0.0
        data, traj = self._snapshot_data(mon, recorded_s)
        png = render_snapshot(data, self.out / 'snapshot.png')
        d = mon.diag

        def num(key: str) -> float | None:
            try:
                return float(d[key])
            except (KeyError, ValueError):
                return None

        summary = {
            'duration_s': round(recorded_s, 2), 'wall_time_s': round(end - t_start, 2),
            'interrupted': self.interrupted, 'ros_domain_id': domain,
            'camera': {'rate_hz': self.args.rate, 'seed': self.args.seed},
            'frames_processed': mon.frames, 'frames_received_by_node': num('frames_received'),
            'dropped_frames': num('dropped_frames'),
            'dropped_frames_at_start': num('dropped_frames_at_start'),
            'rejected_frames': num('rejected_frames'),
            'fps': round(mon.received['/fourd/tracks'] / recorded_s, 2) if recorded_s else 0.0,
            'engine_fps': num('fps'), 'latency_ms_p50': num('latency_ms_p50'),
            'latency_ms_p95': num('latency_ms_p95'), 'cache_mb': num('cache_mb'),
            'backend': d.get('backend'), 'tracks_live': mon.live_tracks,
            'tracks_seen': len(mon.track_ids), 'objects_seen': len(mon.object_ids),
            'objects_in_snapshot': len(data.objects),
            'topics': {t: {'type': mon.types[t], 'received': mon.received[t],
                           'recorded': recorder.counts[t]} for t in mon.types},
            'points_recorded_every_n': POINTS_RECORD_EVERY,
            'query_motion': self.query, 'get_trajectory': self.trajectory,
            'final_path_vs_ground_truth': traj,
            'files': {'bag': str(bag), 'rosbag2_metadata': str(bag.parent / 'metadata.yaml'),
                      'snapshot': str(png), 'logs': str(self.out / 'logs')},
        }
        summary_path = self.out / 'summary.json'
        summary_path.write_text(json.dumps(summary, indent=2) + '\n')
        rmse = (f", camera position RMSE {traj['position_rmse_m'] * 100:.1f} cm "
                f"({traj['alignment']} aligned)" if traj else '')
        print(f'\nfourd demo: {mon.frames} frames in {recorded_s:.1f} s '
              f"({summary['fps']} fps){rmse}; {sum(recorder.counts.values())} messages "
              f'recorded ({len([t for t in recorder.counts if recorder.counts[t]])} topics).')
        size_mb = bag.stat().st_size / 1e6 if bag.exists() else 0.0
        print(f'  bag       {bag}  ({size_mb:.1f} MB; /fourd/points: every '
              f'{POINTS_RECORD_EVERY}th message)\n'
              f'  snapshot  {png}\n  summary   {summary_path}\n  logs      {self.out / "logs"}/'
              f'\nreplay: ros2 bag play {bag}   (or open it in Foxglove Studio)')
        return 0

    def _snapshot_data(self, mon: Any, recorded: float) -> tuple[Any, dict[str, Any] | None]:
        from fourd_ros.core.eval.snapshot import SnapshotData, SnapshotObject, unpack_rgb
        from fourd_ros.core.geometry import box_corners
        from fourd_ros.ros.conversions import cloud_to_array
        data = SnapshotData(map_voxel=map_voxel_size(config_dir() / 'fourd.yaml'))
        if mon.last_map is not None:
            cloud = cloud_to_array(mon.deserialize('/fourd/map_points', mon.last_map)).reshape(-1)
            data.map_xyz = np.stack([cloud['x'], cloud['y'], cloud['z']], axis=1)
            data.map_rgb = unpack_rgb(cloud['rgb'])
        traj = None
        if mon.last_path is not None:
            stamps, poses = path_poses(mon.deserialize('/fourd/path', mon.last_path))
            data.path_xyz = poses[:, :3, 3]
            traj = trajectory_error(stamps, poses, mon.gt,
                                    self._metric(mon))
            aligned = align_ground_truth(stamps, poses, mon.gt)
            if aligned is not None:
                data.gt_path_xyz = aligned[1][:, :3, 3]
        data.trails = {k: np.array(v, float) for k, v in mon.trails.items()}
        source = self.query_ctx['source_cloud'] if self.query_ctx else (
            mon.deserialize('/fourd/points', mon.recent_points[-1][1])
            if mon.recent_points else None)
        if mon.last_objects is not None:
            for o in mon.deserialize('/fourd/objects', mon.last_objects).objects:
                T = pose_to_matrix(o.box_pose)
                data.objects.append(SnapshotObject(
                    int(o.id), box_corners(T[:3, 3], T[:3, :3],
                                           [o.box_size.x, o.box_size.y, o.box_size.z]),
                    np.array([o.centroid.x, o.centroid.y, o.centroid.z]),
                    np.array([o.velocity.x, o.velocity.y, o.velocity.z])))
        if source is not None:
            cloud = cloud_to_array(source)
            data.image = unpack_rgb(cloud['rgb'])
            if 'segment' in cloud.dtype.names:
                data.image_objects = cloud['segment']
            if self.query_ctx and self.query_resp is not None:
                back = self.query_ctx['frames_back']
                data.image_title = (f'camera image {back} frames before the latest, with the '
                                    f'query_motion pixels')
                resp = self.query_resp
                data.query_pixels = self.query_ctx['pixels']
                data.query_status = np.array(resp.status, int)
                pos = np.array([[p.x, p.y, p.z] for p in resp.positions], float)
                disp = np.array([[v.x, v.y, v.z] for v in resp.displacements], float)
                data.query_to, data.query_from = pos, pos - disp
            else:
                data.image_title = 'latest camera image'
        d = mon.diag
        data.title = (f'fourd demo: synthetic RGB-D scene (seed {self.args.seed}), '
                      f"{mon.frames} frames, backend {d.get('backend', '?')}")
        notes = [f'{mon.frames} frames processed in {recorded:.0f} s '
                 f"({mon.received['/fourd/tracks'] / max(recorded, 1e-3):.1f} fps; engine "
                 f"{d.get('fps', '?')} fps), latency p50 {d.get('latency_ms_p50', '?')} ms, "
                 f"cache {d.get('cache_mb', '?')} MB, {len(mon.track_ids)} tracks seen, "
                 f"{d.get('dropped_frames', '?')} camera frames dropped by the node "
                 f"({d.get('dropped_frames_at_start', '?')} of them while it waited for a "
                 "camera driver's TF at start)"]
        if traj:
            notes.append(f"camera position RMSE vs ground truth {traj['position_rmse_m']*100:.1f}"
                         f" cm over {traj['matched_poses']} poses, {traj['alignment']} aligned "
                         f"(travelled: ground truth {traj['gt_path_length_m']:.2f} m, estimate "
                         f"{traj['path_length_m']:.2f} m)")
        if self.query:
            counts = ', '.join(f'{k} {v}' for k, v in self.query['status_counts'].items())
            notes.append(f'query_motion ({self.query["frames_back"]} frames back -> latest): '
                         f'{counts}')
        data.notes = notes
        return data, traj


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
