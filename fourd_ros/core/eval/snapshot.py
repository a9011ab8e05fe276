"""Snapshot figure of a live run (`fourd demo`): top view of the map, paths, tracks, camera image.

ROS-free (numpy + matplotlib, Agg backend): the caller turns messages into arrays. Frames follow
REP-103: the top view is the map frame's x-y plane seen from above (z up), lengths in metres.

Left panel: the accumulated map cloud coloured by its RGB (points above the camera's highest
position + `ceiling_margin` are left out, so a room's ceiling does not hide the floor plan; lower
points are drawn first), the estimated camera path, the ground-truth camera path, track trails
(the last 30 positions of tracks that moved more than 10 cm within them; other tracks as dots)
and, if given, motion-query answers as arrows from the queried points' source positions to their
target positions, and the latest moving objects seen (box footprint, id, velocity arrow of one
second). Right panel: a camera image with its moving objects tinted and the queried pixels
marked by status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from scipy.spatial import ConvexHull  # noqa: E402

DPI = 110
MAX_MAP_POINTS = 200_000
#: colours of QueryMotion statuses (VALID, OCCLUDED, OUT_OF_VIEW, OUT_OF_WINDOW, INVALID)
QUERY_STATUS = {0: ('valid', '#2ca02c'), 1: ('occluded', '#ff7f0e'),
                2: ('out of view', '#9467bd'), 3: ('out of window', '#7f7f7f'),
                4: ('invalid', '#d62728')}


@dataclass
class SnapshotObject:
    """A moving object as the top view draws it (map frame, metres, seconds).

    Attributes:
        id: persistent object id.
        corners: 8 x 3 corners of its oriented box.
        centroid: 3, centre of its points.
        velocity: 3, velocity of its centroid (m/s; NaN = unknown).
    """

    id: int
    corners: np.ndarray
    centroid: np.ndarray
    velocity: np.ndarray


@dataclass
class SnapshotData:
    """Everything the figure shows; any part may be empty.

    Attributes:
        map_xyz: N x 3 accumulated map points in the map frame, metres.
        map_rgb: N x 3 uint8 colours of `map_xyz`.
        map_voxel: voxel size of the map cloud, metres (sets the marker size).
        path_xyz: M x 3 estimated camera positions in the map frame.
        gt_path_xyz: K x 3 ground-truth camera positions in the map frame.
        trails: track id -> T x 3 positions over time (map frame).
        image: H x W x 3 uint8 camera image for the right panel.
        image_title: caption of `image`.
        query_pixels: Q x 2 (column, row) pixels queried in `image`.
        query_status: Q QueryMotion statuses of the answers.
        query_from: Q x 3 positions of the queried points at the source time (map frame).
        query_to: Q x 3 positions at the target time (map frame).
        objects: the latest moving objects seen (map frame), drawn on the top view.
        image_objects: H x W object ids of `image` (0 = static), outlined on it.
        title: figure title.
        notes: lines of text shown under the top view.
    """

    map_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    map_rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))
    path_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    gt_path_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    map_voxel: float = 0.05
    trails: dict[int, np.ndarray] = field(default_factory=dict)
    image: np.ndarray | None = None
    image_title: str = 'camera image'
    query_pixels: np.ndarray | None = None
    query_status: np.ndarray | None = None
    query_from: np.ndarray | None = None
    query_to: np.ndarray | None = None
    objects: list[SnapshotObject] = field(default_factory=list)
    image_objects: np.ndarray | None = None
    title: str = ''
    notes: list[str] = field(default_factory=list)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """float32 'rgb' field (bits of uint32 0x00RRGGBB, PCL convention) -> ... x 3 uint8."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF],
                    axis=-1).astype(np.uint8)


def _hue(track_id: int) -> tuple[float, float, float]:
    """The colour `conversions.track_markers` gives a track (golden-ratio hue)."""
    return tuple(matplotlib.colors.hsv_to_rgb(((track_id * 0.618034) % 1.0, 0.9, 0.9)))


def _top_view(ax: plt.Axes, data: SnapshotData, ceiling_margin: float, trail_points: int = 30,
              moving_extent: float = 0.1, max_moving: int = 40) -> None:
    handles = []
    xyz, rgb = np.asarray(data.map_xyz, float), np.asarray(data.map_rgb)
    ok = np.isfinite(xyz).all(axis=1) if len(xyz) else np.zeros(0, bool)
    cams = [p for p in (data.path_xyz, data.gt_path_xyz) if len(p)]
    if len(xyz) and cams:
        ok &= xyz[:, 2] <= max(float(np.nanmax(p[:, 2])) for p in cams) + ceiling_margin
    xyz, rgb = xyz[ok], rgb[ok]
    if len(xyz) > MAX_MAP_POINTS:
        keep = np.random.default_rng(0).choice(len(xyz), MAX_MAP_POINTS, replace=False)
        xyz, rgb = xyz[keep], rgb[keep]
    if len(xyz):
        order = np.argsort(xyz[:, 2])  # low first: the top view shows the highest surface
        # marker side ~ one voxel at the plot's scale (axes ~6.5 in wide, 72 pt per inch)
        every = np.concatenate([xyz[:, :2]] + [p[:, :2] for p in cams])
        span = max(float(np.ptp(every[:, 0])), float(np.ptp(every[:, 1])), 1e-3)
        side = float(np.clip(data.map_voxel * 6.5 * 72 / span, 1.0, 8.0))
        ax.scatter(xyz[order, 0], xyz[order, 1], c=rgb[order] / 255.0, s=side ** 2, marker='s',
                   linewidths=0, rasterized=True, zorder=1)
        handles.append(Line2D([], [], ls='', marker='s', color='#a08060',
                              label=f'map cloud ({len(data.map_xyz):,} points, RGB)'))
    moving, static = [], []
    for track_id, trail in data.trails.items():
        trail = np.asarray(trail, float)[-trail_points:]
        if not len(trail) or not np.isfinite(trail).all():
            continue
        extent = float(np.linalg.norm(trail[:, :2].max(0) - trail[:, :2].min(0)))
        (moving if extent > moving_extent else static).append((extent, track_id, trail))
    if static:
        heads = np.array([t[-1] for _, _, t in static])
        ax.scatter(heads[:, 0], heads[:, 1], s=5, c=[_hue(i) for _, i, _ in static],
                   edgecolors='none', alpha=0.8, zorder=3)
        handles.append(Line2D([], [], ls='', marker='.', color='#1f77b4',
                              label=f'static tracks ({len(static)})'))
    for _, track_id, trail in sorted(moving, key=lambda m: m[0])[-max_moving:]:
        colour = _hue(track_id)
        ax.plot(trail[:, 0], trail[:, 1], '-', color=colour, lw=1.0, alpha=0.75, zorder=4)
        ax.plot(trail[-1, 0], trail[-1, 1], 'o', color=colour, ms=3.5, mec='k', mew=0.4,
                zorder=5)
    if moving:
        shown = min(len(moving), max_moving)
        handles.append(Line2D([], [], color='#1f77b4', lw=1.0, marker='o', ms=3.5, mec='k',
                              label=f'moving track trails ({shown} of {len(moving)}, last '
                                    f'{trail_points} frames)'))
    for obj in data.objects:
        colour = _hue(obj.id)
        xy = np.asarray(obj.corners, float)[:, :2]
        hull = xy[ConvexHull(xy).vertices] if np.ptp(xy, axis=0).min() > 1e-9 else xy
        ax.fill(hull[:, 0], hull[:, 1], facecolor=(*colour, 0.25), edgecolor=colour, lw=1.6,
                zorder=6)
        c, v = np.asarray(obj.centroid, float), np.asarray(obj.velocity, float)
        if np.isfinite(v).all():
            ax.annotate('', xy=(c[0] + v[0], c[1] + v[1]), xytext=(c[0], c[1]),
                        arrowprops=dict(arrowstyle='->', color=colour, lw=1.8), zorder=6)
        ax.text(c[0], c[1], f' {obj.id}', color='black', fontsize=8, zorder=6)
    if data.objects:
        handles.append(Line2D([], [], color='#9467bd', lw=1.6, marker='s', ms=7,
                              mfc=(0.58, 0.4, 0.74, 0.25),
                              label=f'moving objects ({len(data.objects)}): box, id, '
                                    'velocity (1 s)'))
    if len(data.gt_path_xyz):
        gt = np.asarray(data.gt_path_xyz, float)
        ax.plot(gt[:, 0], gt[:, 1], '--', color='white', lw=3.2, zorder=6)
        handles += ax.plot(gt[:, 0], gt[:, 1], '--', color='black', lw=1.6, zorder=7,
                           label='camera, ground truth')
    if len(data.path_xyz):
        est = np.asarray(data.path_xyz, float)
        ax.plot(est[:, 0], est[:, 1], '-', color='white', lw=3.6, zorder=8)
        handles += ax.plot(est[:, 0], est[:, 1], '-', color='#d62728', lw=2.0, zorder=9,
                           label='camera, estimated (fourd): \u25cf start, \u25b2 now')
        ax.plot(est[0, 0], est[0, 1], 'o', color='#d62728', mec='white', ms=7, zorder=10)
        ax.plot(est[-1, 0], est[-1, 1], '^', color='#d62728', mec='white', ms=9, zorder=10)
    if data.query_from is not None and data.query_to is not None and len(data.query_from):
        a, b = np.asarray(data.query_from, float), np.asarray(data.query_to, float)
        good = np.isfinite(a).all(1) & np.isfinite(b).all(1)
        if good.any():
            ax.quiver(a[good, 0], a[good, 1], b[good, 0] - a[good, 0], b[good, 1] - a[good, 1],
                      angles='xy', scale_units='xy', scale=1.0, color='#00e5ff', width=0.004,
                      headwidth=4, zorder=11)
            ax.plot(a[good, 0], a[good, 1], '.', color='#00e5ff', ms=4, zorder=11)
            handles.append(Line2D([], [], color='#00e5ff', marker='>', lw=1.5,
                                  label='query_motion: source -> latest'))
    ax.set_xlabel('x [m] (map)')
    ax.set_ylabel('y [m] (map)')
    ax.set_aspect('equal', adjustable='datalim')
    ax.grid(True, color='0.8', lw=0.5, zorder=0)
    ax.set_facecolor('#f4f4f4')
    ax.set_title('top view (map frame, z up)')
    if handles:
        ax.legend(handles=handles, loc='upper left', fontsize=8, framealpha=0.85)


def _image_panel(ax: plt.Axes, data: SnapshotData) -> None:
    ax.imshow(data.image, interpolation='nearest')
    ids = data.image_objects
    if ids is not None and ids.shape == data.image.shape[:2] and ids.any():
        # each object's pixels tinted in its colour
        overlay = np.zeros((*ids.shape, 4))
        for object_id in np.unique(ids[ids > 0]):
            overlay[ids == object_id] = (*_hue(int(object_id)), 0.45)
        ax.imshow(overlay, interpolation='nearest')
    ax.set_title(data.image_title)
    ax.set_xlabel('u [px]')
    ax.set_ylabel('v [px]')
    px, st = data.query_pixels, data.query_status
    if px is None or not len(px):
        return
    px = np.asarray(px, float)
    st = np.full(len(px), -1) if st is None or len(st) != len(px) else np.asarray(st)
    handles = []
    for code in sorted(set(st.tolist())):
        name, colour = QUERY_STATUS.get(code, ('no answer', 'white'))
        sel = st == code
        handles.append(ax.scatter(px[sel, 0], px[sel, 1], s=36, c=colour, edgecolors='black',
                                  linewidths=0.8, label=f'query: {name} ({int(sel.sum())})'))
    ax.legend(handles=handles, loc='lower right', fontsize=8, framealpha=0.85)


def render_snapshot(data: SnapshotData, path: str | Path, ceiling_margin: float = 0.3) -> Path:
    """Write the snapshot PNG (one or two panels); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    two = data.image is not None
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(15, 7.2) if two else (8.5, 7.5),
                             gridspec_kw={'width_ratios': [1.1, 1]} if two else None)
    axes = np.atleast_1d(axes)
    _top_view(axes[0], data, ceiling_margin)
    if two:
        _image_panel(axes[1], data)
    if data.title:
        fig.suptitle(data.title, fontsize=13)
    if data.notes:
        fig.text(0.01, 0.01, '\n'.join(data.notes), fontsize=8.5, family='monospace',
                 va='bottom', ha='left')
    fig.tight_layout(rect=(0, 0.03 + 0.018 * len(data.notes), 1, 0.97))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
