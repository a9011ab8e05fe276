"""`fourd view`: a live 3D view of a running fourd node in the browser (see
`fourd_ros.ros.viewer`)."""

from __future__ import annotations

import argparse

from fourd_ros.cli.common import positive_int


def _vector(text: str) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected X,Y,Z (three numbers), got {text!r}')
    return x, y, z


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'view', help='live 3D view of a running fourd node in the browser (no RViz needed)',
        description='Serve a page on 127.0.0.1 showing a running fourd node: map and current '
                    'clouds, camera trajectory and frustum, track trails (moving tracks in '
                    'magenta) and diagnostics. Open the printed address in a browser; works '
                    'offline (viser, web client inside the wheel).')
    p.add_argument('--namespace', default='', help="the node's namespace ('' = root; the node "
                                                   'is <namespace>/fourd)')
    p.add_argument('--port', type=positive_int, default=8080, help='HTTP port (8080)')
    p.add_argument('--host', default='127.0.0.1',
                   help='address to bind (127.0.0.1: this machine only)')
    p.add_argument('--map-frame', default='map', help="the node's map frame (map)")
    p.add_argument('--max-points', type=positive_int, default=40000,
                   help='most points drawn per cloud (40000)')
    p.add_argument('--point-size', type=float, default=0.02,
                   help='drawn point size, scene units (0.02)')
    p.add_argument('--moving-speed', type=float, default=0.1,
                   help='tracks faster than this (units/s) are drawn as moving (0.1)')
    p.add_argument('--view-from', type=_vector, default=None, metavar='X,Y,Z',
                   help="browsers' initial viewpoint in the map frame (default: behind and "
                        'above the first camera pose)')
    p.add_argument('--look-at', type=_vector, default=None, metavar='X,Y,Z',
                   help='point the initial view looks at (with --view-from)')
    p.add_argument('--fov', type=float, default=60.0, help='vertical field of view, deg (60)')
    p.add_argument('--hide', action='append', default=[], metavar='LAYER',
                   help='a layer hidden at start (map, cloud, tracks, trajectory; repeat for '
                        'more); the page has a checkbox for each')
    p.add_argument('--duration', type=float, default=0.0, metavar='S',
                   help='stop after S seconds (0 = until Ctrl-C)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.view_from is None) != (args.look_at is None):
        raise ValueError('--view-from and --look-at go together')
    from fourd_ros.ros.viewer import serve, ViewerConfig  # ROS layer: imported only here

    config = ViewerConfig(namespace=args.namespace, map_frame=args.map_frame,
                          max_points=args.max_points, point_size=args.point_size,
                          moving_speed=args.moving_speed, view_from=args.view_from,
                          look_at=args.look_at, fov_deg=args.fov, hidden=tuple(args.hide))
    serve(config, args.host, args.port, args.duration)
    return 0
