"""Evaluation figures (matplotlib, Agg backend): trajectory, depth samples, tracking samples.

All lengths in metres; the world frame is the first camera (OpenCV axes: x right, y down,
z forward), so the top view is the x-z plane.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fourd_ros.core.eval import metrics as M  # noqa: E402
from fourd_ros.core.eval.evaluate import EvalReport  # noqa: E402
from fourd_ros.core.types import TrackStatus  # noqa: E402

DPI = 110


def write_plots(report: EvalReport, out_dir: str | Path) -> list[Path]:
    """Write every figure the report has material for; returns the PNG paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    title = _run_title(report)
    if len(report.poses_est):
        written.append(plot_trajectory(report, out / 'trajectory.png', title))
    if report.depth_samples:
        written.append(plot_depth_samples(report, out / 'depth_samples.png', title))
    if report.track_samples:
        written.append(plot_track_samples(report, out / 'track_queries.png', title))
    if report.trail is not None and report.trail.history:
        written.append(plot_track_trails(report, out / 'track_trails.png', title))
    return written


def _run_title(report: EvalReport) -> str:
    m = report.metrics
    src = Path(str(m.get('input', ''))).name
    return f'{m.get("backend", "?")} on {src} ({m.get("frames", 0)} frames)'


def _fmt(v: object, unit: str = '', digits: int = 3) -> str:
    if isinstance(v, float) and not np.isfinite(v):
        return 'n/a'
    if isinstance(v, (float, np.floating)):
        return f'{v:.{digits}g}{unit}'
    return f'{v}{unit}'


def plot_trajectory(report: EvalReport, path: Path, title: str = '') -> Path:
    """Top view (x-z of the first camera) of GT vs estimate, plus the position error over time.

    The estimate is drawn after the alignment that ATE uses (SE(3) when metric, else Sim(3)),
    so the plotted error is the one ATE averages.
    """
    est = report.poses_est[:, :3, 3].copy()
    gt = report.poses_gt[:, :3, 3]
    metric = bool(report.metrics.get('metric', True))
    label = 'estimate'
    kind = 'SE(3)' if metric else 'Sim(3)'
    if len(est) >= 3:
        try:
            s, R, t = M.umeyama(est, gt, with_scale=not metric)
            est = s * est @ R.T + t
            label = f'estimate ({kind}-aligned)'
        except ValueError:
            pass
    t_rel = report.stamps - report.stamps[0]
    err = np.linalg.norm(est - gt, axis=1)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5.2),
                                  gridspec_kw={'width_ratios': [1.1, 1]})
    ax.plot(gt[:, 0], gt[:, 2], '-', color='0.15', lw=2.0, label='ground truth')
    ax.plot(est[:, 0], est[:, 2], '-', color='tab:orange', lw=1.4, label=label)
    ax.plot(gt[0, 0], gt[0, 2], 'o', color='tab:green', ms=8, label='start')
    ax.plot(gt[-1, 0], gt[-1, 2], 's', color='0.15', ms=6, label='end (GT)')
    ax.plot(est[-1, 0], est[-1, 2], 's', color='tab:orange', ms=6, label='end (estimate)')
    # viewing direction every few frames (camera z axis)
    step = max(1, len(gt) // 12)
    span = max(np.ptp(gt[:, [0, 2]], axis=0).max(), 0.1)
    for T in report.poses_gt[::step]:
        d = T[:3, 2] * 0.06 * span
        ax.annotate('', xy=(T[0, 3] + d[0], T[2, 3] + d[2]), xytext=(T[0, 3], T[2, 3]),
                    arrowprops={'arrowstyle': '->', 'color': '0.5', 'lw': 0.8})
    ax.set_aspect('equal', adjustable='datalim')
    ax.set_xlabel('x [m] (right of the first camera)')
    ax.set_ylabel('z [m] (forward of the first camera)')
    m = report.metrics
    ax.set_title(f'Camera path, top view\nATE {_fmt(m.get("ate_m"), " m")} '
                 f'(Sim(3) {_fmt(m.get("ate_sim3_m"), " m")}), '
                 f'RPE {_fmt(m.get("rpe_trans_m"), " m")} / '
                 f'{_fmt(m.get("rpe_rot_deg"), " deg")}')
    ax.grid(alpha=0.3)
    ax.legend(loc='best', fontsize=8)
    ax2.plot(t_rel, err * 100.0, color='tab:red', lw=1.2)
    ax2.set_xlabel('time since first frame [s]')
    ax2.set_ylabel('camera position error [cm]')
    ax2.set_title(f'Position error per frame ({kind}-aligned)')
    ax2.grid(alpha=0.3)
    ax2.set_ylim(bottom=0)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_depth_samples(report: EvalReport, path: Path, title: str = '') -> Path:
    """Rows of image | GT depth | predicted depth | abs error (metres, shared colour scale)."""
    samples = report.depth_samples
    n = len(samples)
    h, w = samples[0].gt.shape
    fig_w = 16.0
    fig_h = min(4.2 * n, fig_w / 4 * h / w * n + 0.8 * n + 0.6)
    fig, axes = plt.subplots(n, 4, figsize=(fig_w, fig_h), squeeze=False)
    for r, s in enumerate(samples):
        gt = np.where(np.isfinite(s.gt) & (s.gt > 0), s.gt, np.nan)
        pred = np.where(np.isfinite(s.pred) & (s.pred > 0), s.pred, np.nan)
        both = np.isfinite(gt) & np.isfinite(pred)
        vals = gt[np.isfinite(gt)]
        vmin, vmax = (np.percentile(vals, [1, 99]) if vals.size else (0.0, 1.0))
        err = np.where(both, np.abs(pred - gt), np.nan)
        emax = max(float(np.nanpercentile(err, 99)) if both.any() else 0.0, 0.01)
        absrel = float(np.nanmean(err / gt)) if both.any() else float('nan')
        axes[r, 0].imshow(s.rgb)
        axes[r, 0].set_title(_frame_label(s.name))
        cmap = plt.get_cmap('turbo').copy()
        cmap.set_bad('black')
        im1 = axes[r, 1].imshow(gt, cmap=cmap, vmin=vmin, vmax=vmax)
        axes[r, 1].set_title('GT depth (black: no data)')
        im2 = axes[r, 2].imshow(pred, cmap=cmap, vmin=vmin, vmax=vmax)
        axes[r, 2].set_title('predicted depth')
        ecmap = plt.get_cmap('magma').copy()
        ecmap.set_bad('0.6')
        im3 = axes[r, 3].imshow(err, cmap=ecmap, vmin=0.0, vmax=emax)
        axes[r, 3].set_title(f'|error| (AbsRel {_fmt(absrel)})')
        for im, ax, lab in ((im1, axes[r, 1], 'depth [m]'), (im2, axes[r, 2], 'depth [m]'),
                            (im3, axes[r, 3], 'error [m]')):
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(lab)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    m = report.metrics
    fig.suptitle(f'{title}: depth AbsRel {_fmt(m.get("depth_absrel"))}, '
                 f'delta<1.25 {_fmt(m.get("depth_delta125"))} '
                 f'(processing size {m.get("processing_size", "?")})')
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_track_samples(report: EvalReport, path: Path, title: str = '') -> Path:
    """Per pair: source image with the query grid | target image with GT vs predicted positions.

    Only GT-visible points are drawn in the target; a line joins GT (circle) and prediction
    (cross, coloured by the 3D error).
    """
    samples = report.track_samples[:3]
    n = len(samples)
    h, w = samples[0].source_rgb.shape[:2]
    fig, axes = plt.subplots(n, 2, figsize=(13, 5.9 * h / w * n + 0.6 * n + 0.4),
                             squeeze=False, layout='constrained')
    err_max = 0.10
    sc = None
    for r, s in enumerate(samples):
        a0, a1 = axes[r]
        a0.imshow(s.source_rgb)
        st = ~s.dynamic
        a0.scatter(s.query_px[st, 0], s.query_px[st, 1], s=9, c='white', edgecolors='black',
                   linewidths=0.4, label='static query')
        if s.dynamic.any():
            a0.scatter(s.query_px[s.dynamic, 0], s.query_px[s.dynamic, 1], s=12, c='tab:red',
                       edgecolors='black', linewidths=0.4, label='dynamic query')
        a0.set_title(f'source {_frame_label(s.source_name)}: {len(s.query_px)} query pixels',
                     fontsize=10)
        a0.legend(loc='lower right', fontsize=7)
        a1.imshow(s.target_rgb)
        vis = s.visible & np.isfinite(s.gt_px).all(axis=1)
        has = vis & np.isfinite(s.pred_px).all(axis=1)
        for p, q in zip(s.gt_px[has], s.pred_px[has]):
            a1.plot([p[0], q[0]], [p[1], q[1]], '-', color='yellow', lw=0.7)
        a1.scatter(s.gt_px[vis, 0], s.gt_px[vis, 1], s=14, facecolors='none',
                   edgecolors='white', linewidths=0.8, label='GT')
        sc = a1.scatter(s.pred_px[has, 0], s.pred_px[has, 1], s=16, c=s.err_m[has], marker='x',
                        cmap='plasma', vmin=0.0, vmax=err_max, linewidths=1.0,
                        label='prediction')
        missed = int(vis.sum() - has.sum())
        a1.set_xlim(-0.5, w - 0.5)
        a1.set_ylim(h - 0.5, -0.5)
        med = float(np.median(s.err_m[has])) if has.any() else float('nan')
        a1.set_title(f'target {_frame_label(s.target_name)}: GT (o) vs predicted (x)\n'
                     f'{int(vis.sum())} GT-visible, median 3D error {_fmt(med * 100, " cm")}, '
                     f'{missed} without prediction', fontsize=10)
        a1.legend(loc='lower right', fontsize=7)
        for ax in (a0, a1):
            ax.set_xticks([])
            ax.set_yticks([])
    if sc is not None:
        cb = fig.colorbar(sc, ax=axes[:, 1].tolist(), fraction=0.03, pad=0.01)
        cb.set_label(f'3D error [m] (colour clipped at {err_max:g} m)')
    m = report.metrics
    fig.suptitle(f'{title}: 3D tracking, EPE {_fmt(m.get("track_epe_m"), " m")}, '
                 f'APD3D {_fmt(m.get("apd3d"))} % (dynamic {_fmt(m.get("apd3d_dynamic"))} %)')
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _frame_label(name: str) -> str:
    return name if name.lower().startswith('frame') else f'frame {name}'


def plot_track_trails(report: EvalReport, path: Path, title: str = '') -> Path:
    """The engine's persistent tracks over the last frames, drawn on the last processed image."""
    tr = report.trail
    h, w = tr.rgb.shape[:2]
    fig, ax = plt.subplots(figsize=(9, 9 * h / w + 0.6))
    ax.imshow(tr.rgb)
    colours = {TrackStatus.TRACKED: 'lime', TrackStatus.OCCLUDED: 'orange',
               TrackStatus.LOST: 'red'}
    shown = 0
    for tid, status in tr.status.items():
        pts = np.array([snap[tid] for snap in tr.history if tid in snap])
        if not len(pts):
            continue
        c = colours.get(TrackStatus(status), 'white')
        ax.plot(pts[:, 0], pts[:, 1], '-', color=c, lw=1.0, alpha=0.8)
        ax.plot(pts[-1, 0], pts[-1, 1], 'o', color=c, ms=2.5)
        shown += 1
    for st, c in colours.items():
        ax.plot([], [], '-o', color=c, ms=3, label=st.name.lower())
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc='lower right', fontsize=8)
    ax.set_title(f'{title}\n{shown} persistent tracks at {_frame_label(tr.name)}, '
                 f'trails over the last {len(tr.history)} frames', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
