"""`fourd eval`: score a backend against a sequence's ground truth (`core.eval.metrics`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fourd_ros.cli.common import (add_cache_arguments, add_ground_arguments,
                                  add_metric_depth_argument, add_model_arguments, ground_plane,
                                  positive_int, print_table, write_json)
from fourd_ros.core.backends.factory import BACKENDS
from fourd_ros.core.eval.evaluate import evaluate

ROWS = (
    ('frames', ''),
    ('fps', 'frames/s (reading + engine.process)'),
    ('depth_absrel', 'mean |d - d*| / d*'),
    ('depth_delta125', 'fraction max(d/d*, d*/d) < 1.25'),
    ('ate_m', 'm RMSE, SE(3)-aligned if metric else Sim(3)'),
    ('ate_sim3_m', 'm RMSE, Sim(3)-aligned'),
    ('rpe_trans_m', 'm RMSE, consecutive frames'),
    ('rpe_rot_deg', 'deg RMSE, consecutive frames'),
    ('track_epe_m', 'm mean 3D end-point error (visible GT)'),
    ('apd3d', '% within {1,2,4,8,16} px * z/f'),
    ('apd3d_dynamic', '% APD3D on moving points'),
    ('track_median_err_m', 'm median 3D error'),
    ('track_points', 'GT-visible query points scored'),
    ('track_points_dynamic', 'of which on moving objects'),
    ('baseline_const_depth_absrel', 'constant depth AbsRel (baseline, median-scaled)'),
    ('baseline_const_depth_delta125', 'constant depth delta<1.25 (baseline)'),
    ('baseline_zero_motion_apd3d', 'zero-motion APD3D % (baseline: source positions)'),
    ('baseline_zero_motion_apd3d_dynamic', 'zero-motion APD3D % on moving points (baseline)'),
    ('baseline_zero_motion_epe_m', 'm zero-motion 3D EPE (baseline)'),
    ('baseline_rgbd_ate_sim3_m', 'rgbd backend on the same input: m ATE, Sim(3)'),
    ('baseline_rgbd_rpe_trans_m', 'rgbd: m RPE, consecutive frames'),
    ('baseline_rgbd_track_epe_m', 'rgbd: m 3D EPE'),
    ('baseline_rgbd_apd3d', 'rgbd: APD3D %'),
    ('baseline_rgbd_apd3d_dynamic', 'rgbd: APD3D % on moving points'),
    ('baseline_rgbd_fps', 'rgbd: frames/s'),
    ('objects_mask_iou', 'moving objects: motion mask IoU (synthetic clips)'),
    ('objects_flow_moving_rel_median', 'moving points: |v - v*| / |v*|, median'),
    ('objects_flow_static_median_m_s', 'static points: speed, median (m/s if metric)'),
    ('objects_objects_matched_share', "share of true objects' frames with an object"),
    ('objects_object_velocity_rel_median_worst', 'worst object: velocity error / speed'),
    ('objects_id_stability_worst', 'worst object: share of its frames with its id'),
    ('objects_frames_with_false_object', 'share of frames with a false object'),
    ('latency_ms_p50', 'ms per frame (engine.process)'),
    ('metric', 'metres if yes (no scale alignment)'),
    ('metric_from_frame', 'a monocular stream in metres from this frame on (the floor)'),
    ('depth_absrel_once_metric', 'AbsRel of those frames, no alignment'),
)


# the rgbd backend's figures reported beside the learned backend's where the input has depth
RGBD_BASELINE_KEYS = ('ate_sim3_m', 'rpe_trans_m', 'track_epe_m', 'apd3d', 'apd3d_dynamic', 'fps')


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'eval', help='evaluate a backend against ground truth (depth, poses, 3D tracking)',
        description='Run a backend over a sequence with ground truth and report depth AbsRel / '
                    'delta<1.25, ATE / RPE and 3D tracking EPE / APD3D, next to baselines from '
                    'the same run: a constant depth and zero motion (the source-time positions '
                    'the backend itself returns). The oracle backend replays the ground truth '
                    'itself: it checks the evaluation pipeline (it must score perfectly) and is '
                    'not a perception backend.')
    p.add_argument('--backend', choices=('auto', *BACKENDS), required=True,
                   help='oracle (GT replay, pipeline test only), rgbd, learned or auto (rgbd '
                        'when the input has depth, else learned)')
    p.add_argument('--input', required=True, help='sequence folder or file with ground truth')
    add_model_arguments(p)
    p.add_argument('--json', metavar='FILE', help='write the metrics as JSON (NaN as null)')
    p.add_argument('--plots', metavar='DIR', help='write PNG figures to this folder')
    p.add_argument('--max-frames', type=positive_int, default=0, metavar='N',
                   help='evaluate the first N frames, 0 = all (0)')
    p.add_argument('--width', type=positive_int, default=320,
                   help='processing width, 0 = input resolution (320; oracle: always native)')
    p.add_argument('--depth-every', type=positive_int, default=1, metavar='K',
                   help='score depth on every K-th frame (1)')
    p.add_argument('--track-gap', type=positive_int, default=10, metavar='G',
                   help='frame gap of the tracking pairs (i, i+G) (10)')
    add_cache_arguments(p)
    add_ground_arguments(p)
    add_metric_depth_argument(p)
    p.add_argument('--no-rgbd-baseline', action='store_true',
                   help='learned backend on an input with depth: skip the rgbd backend run '
                        'whose figures are reported beside it (baseline_rgbd_*)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.track_gap < 1:
        raise ValueError('--track-gap must be >= 1')
    common = dict(width=args.width, max_frames=args.max_frames or None,
                  depth_every=max(1, args.depth_every), track_gap=args.track_gap,
                  cache_mb=args.cache_mb, cache_device_mb=args.cache_device_mb)
    report = evaluate(args.backend, args.input, device=args.device,
                      checkpoint=args.checkpoint, metric_depth=args.metric_depth,
                      ground=ground_plane(args), **common)
    m = report.metrics
    if m['backend'] == 'learned' and m['has_depth'] and not args.no_rgbd_baseline:
        # issue 10: the monocular backend next to the depth sensor's, same input, same run
        rgbd = evaluate('rgbd', args.input, **common).metrics
        m.update({f'baseline_rgbd_{k}': rgbd[k] for k in RGBD_BASELINE_KEYS})
    print_table(f'fourd eval: {m["backend"]} on {args.input} ({m["layout"]}, '
                f'processing {m["processing_size"]})',
                [(k, m.get(k, float('nan')), unit) for k, unit in ROWS
                 # objects: synthetic clips only; metric_from_frame: streams turning metric;
                 # the rgbd baseline: the learned backend on an input with depth
                 if k in m or not k.startswith(('objects_', 'metric_from', 'depth_absrel_once',
                                                'baseline_rgbd_'))])
    if args.json:
        print(f'metrics: {write_json(args.json, report.to_json_dict())}')
    if args.plots:
        from fourd_ros.core.eval.plots import write_plots

        for path in write_plots(report, Path(args.plots)):
            print(f'plot: {path}')
    return 0
