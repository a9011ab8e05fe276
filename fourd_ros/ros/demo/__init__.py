"""`fourd demo`: the whole ROS 2 pipeline on a synthetic camera, recorded and summarised.

    fourd demo [--duration 20] [--out out/demo] [--rate 10] [--seed 2] [--backend rgbd|learned]
               [--domain-id N] [--view [--view-port 8080]]
    python -m fourd_ros.ros.demo ...          (the same, without the `fourd` CLI)

What it does:

1. Environment (for itself and its child processes): ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
   and FASTDDS_DEFAULT_PROFILES_FILE=<share or source>/config/fastdds.xml unless already set;
   ROS_DOMAIN_ID = --domain-id, else a random one (printed, so `ROS_DOMAIN_ID=N rviz2` can
   watch). Any ROS_DOMAIN_ID already in the environment is overridden, to stay private.
2. Starts `fourd_synthetic_camera` (a procedural RGB-D room with moving objects, ground-truth
   pose on /camera/ground_truth/pose) and `fourd_node` (config/fourd.yaml) as child processes;
   their logs go to <out>/logs/; with --view also `fourd view` (the live 3D view in the
   browser, http://127.0.0.1:<view-port>, printed), logs/viewer.log. `--backend rgbd`
   (default): the camera publishes depth and the node uses it; `--backend learned`: the
   camera publishes no depth (monocular) and the node runs the learned S-4RC model (outputs
   up to scale).
3. Subscribes to the node's outputs and records them into a rosbag2 with MCAP storage as they
   arrive (serialized bytes from `raw=True` subscriptions, nothing kept in RAM): /fourd/points
   (only every 5th message: one 320x240 cloud is 1.5 MB), /fourd/map_points, /tf, /tf_static,
   /fourd/path, /fourd/odom, /fourd/tracks, /fourd/track_markers, /diagnostics and
   /camera/ground_truth/pose (all messages).
4. Shows a status line (frames, fps, latency, live tracks, cache) from /diagnostics and message
   counts: a live line on a terminal, one printed line every 2 s otherwise.
5. After ~30 processed frames, asks /fourd/query_motion where a 5x5 grid of pixels of the frame
   10 frames back is now (target = latest frame) and prints the answers; then calls
   /fourd/get_trajectory and compares it with the ground truth.
6. After --duration seconds of node output (or Ctrl-C) it stops the children (SIGINT, then
   SIGKILL after 10 s) and writes, in --out:
     demo.mcap      the recording (plain MCAP file: Foxglove, `ros2 bag play out/demo/demo.mcap`)
     metadata.yaml  rosbag2 metadata, so the folder itself is a rosbag2 bag too
     snapshot.png   top view of the map cloud, estimated + ground-truth camera paths (the
                    ground truth tied to the node's first pose), track trails and query
                    answers; camera image with the queried pixels
     summary.json   frames, fps, latency, per-topic message counts, query/trajectory results
     logs/          synthetic_camera.log, fourd_node.log
   Exit status 0; 1 if the node produced no output within 60 s (the node log's tail is shown)
   or a child process died; 130 if interrupted before any output.
"""

from __future__ import annotations

# The docstring above is the --help text. The parts: processes (children, environment),
# monitor (recording node), messages (decoding helpers), console (status line), query
# (/fourd/query_motion), trajectory (ground-truth comparison), runner (the Demo run).
import argparse
import sys

from fourd_ros.core.backends.factory import STREAM_BACKENDS
from fourd_ros.ros.demo.runner import Demo

__all__ = ['add_arguments', 'Demo', 'main']


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `fourd demo` (shared by the `fourd` CLI and `python -m`)."""
    parser.add_argument('--duration', type=float, default=20.0, metavar='S',
                        help='seconds to record once the node produces output (20)')
    parser.add_argument('--out', default='out/demo', metavar='DIR',
                        help='output folder for demo.mcap, snapshot.png, summary.json, logs/ '
                             '(out/demo)')
    parser.add_argument('--rate', type=float, default=10.0, metavar='HZ',
                        help='synthetic camera frame rate, Hz (10)')
    parser.add_argument('--seed', type=int, default=2, help='synthetic scene seed (2)')
    parser.add_argument('--backend', choices=STREAM_BACKENDS, default='rgbd',
                        help='rgbd: RGB-D camera + depth backend; learned: monocular camera '
                             '(no depth published) + the learned S-4RC backend (rgbd)')
    parser.add_argument('--domain-id', type=int, default=None, metavar='N',
                        help='ROS_DOMAIN_ID to use (default: a random one in 1..100)')
    parser.add_argument('--view', action='store_true',
                        help='also serve the live 3D view in the browser (`fourd view`)')
    parser.add_argument('--view-port', type=int, default=8080, metavar='PORT',
                        help='port of the --view page on 127.0.0.1 (8080)')


def main(args: argparse.Namespace) -> int:
    """Run `fourd demo` with parsed arguments; returns the exit status."""
    try:
        return Demo(args).run()
    except (ValueError, FileNotFoundError) as exc:
        print(f'fourd demo: error: {exc}', file=sys.stderr)
        return 2


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='fourd demo', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[2:]))
    add_arguments(parser)
    return main(parser.parse_args(argv))
