"""`fourd view` in a real browser: headless Chromium opens the page beside the synthetic camera
and the node (real processes over DDS); a rendered frame shows the clouds, moving tracks, and
the moving objects in their colours where their ground-truth projection says. The screenshots
are kept in out/viewer/ (viewer.png is the README's). The moving objects' boxes are drawn."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
import urllib.request
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import spin_until

rclpy = pytest.importorskip('rclpy')

from fourd_ros_msgs.msg import TrackedPoints  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402

from browser import HeadlessPage, free_port, screenshot  # noqa: E402
from fourd_ros.core.geometry import transform_points, unproject_depth  # noqa: E402
from fourd_ros.ros import conversions as conv  # noqa: E402
from fourd_ros.ros.viewer import TRAIL_COLOR  # noqa: E402
from test_node import REPO, camera_args, clip_index, node_args  # noqa: E402

pytestmark = pytest.mark.ros
OUT = REPO / 'out' / 'viewer'
WIDTH, HEIGHT, FOV_DEG = 960, 640, 50.0
# the same pixels moved off the object in 8 directions by 100 and 200 px: what the page shows
# there is the colour error of a drawing in the wrong place
SHIFTS = np.round([r * np.array([np.cos(a), np.sin(a)]) for r in (100, 200)
                   for a in np.radians(np.arange(0, 360, 45))]).astype(int)
# moving tracks are drawn in magenta: heads (255, 0, 255), trails (255, 150, 255); where they
# overlap, software WebGL blends them (one CI run drew its heads as (253, 97-106, 253)). Static
# tracks are blue, the path orange, and none of the clip's pixels has red and blue >= 200 with
# green <= 170 (0 of 576,000)
MOVING_TRACK_GREEN_MAX = 170
STATIC_TRACK_RGB = np.array(TRAIL_COLOR)  # static tracks' colour in the view
VIEW_LAG_S = 1.5  # camera image -> node -> viewer (5 Hz redraws) -> browser, generously
SCREENSHOTS_FOR_S = 60.0


def project(points: np.ndarray, eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pixels (N x 2) of map-frame points in the browser's view (three.js lookAt, z up)."""
    z = (eye - target) / np.linalg.norm(eye - target)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c = (points - eye) @ np.stack([x, y, z], axis=1)
    f = HEIGHT / 2 / np.tan(np.radians(FOV_DEG) / 2)
    return np.stack([WIDTH / 2 + f * c[:, 0] / -c[:, 2], HEIGHT / 2 - f * c[:, 1] / -c[:, 2]],
                    axis=1)


@contextmanager
def spinning(node):
    """Spin `node` in a background thread for the duration of the block."""
    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5.0)
        executor.remove_node(node)


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f'{url} never answered')


def test_viewer_page_shows_clouds_and_the_moving_object(ros_context, start_process,
                                                        clip) -> None:
    T0 = conv.T_LINK_FROM_OPTICAL @ clip.T_wc[0]
    cam0, forward = T0[:3, 3], T0[:3, 2]
    eye = cam0 - 2.0 * forward + np.array([0.0, 0.0, 1.2])
    target = cam0 + 3.0 * forward
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    start_process('-m', 'fourd_ros.cli.main', 'view', '--port', str(port), '--fov',
                  str(FOV_DEG), f"--view-from={','.join(map(str, eye))}",
                  f"--look-at={','.join(map(str, target))}", '--point-size', '0.03',
                  # the map hidden (its checkbox unticked): the motion mask misses part of a
                  # moving object in each frame, so the map holds the object where it is now
                  # too, and with the map shown the objects check passed with the current
                  # cloud drawn 100 m away
                  '--hide', 'map', name='viewer')
    wait_http(url)
    empty = np.asarray(PILImage.open(screenshot(url, OUT / 'empty.png', WIDTH, HEIGHT,
                                                settle_s=4.0)).convert('RGB'), np.int32)
    start_process(*camera_args(rate=8.0), name='camera')
    start_process(*node_args(), name='node')
    node = rclpy.create_node('viewer_test', context=ros_context)
    tracks, poses = [], []  # poses: (monotonic receipt time, ground-truth PoseStamped)
    node.create_subscription(TrackedPoints, '/fourd/tracks', tracks.append, 10)
    node.create_subscription(PoseStamped, '/camera/ground_truth/pose',
                             lambda msg: poses.append((time.monotonic(), msg)), 10)

    def moving_tracks() -> int:
        if not tracks:
            return 0
        v = np.array([[q.x, q.y, q.z] for q in tracks[-1].velocities]).reshape(-1, 3)
        return int((np.linalg.norm(v, axis=1) > 0.1).sum())

    assert spin_until(node, lambda: len(tracks) > 15 and moving_tracks() >= 3, timeout=90.0)
    # each screenshot is checked whole. A scene seen at an unlucky moment (the camera plays the
    # clip forwards and backwards: near a turn the moving tracks slow down, and the objects may
    # stand before a background of their own colours) or a page still filling in (software
    # WebGL on a loaded machine takes 10-20 s to draw the clouds in full: CI saw a blank or
    # pale view 6 s after opening the page) gets more screenshots of the same page, later in
    # the clip, for up to SCREENSHOTS_FOR_S
    with HeadlessPage(WIDTH, HEIGHT) as page, spinning(node):
        page.open(url)
        time.sleep(6.0)
        deadline = time.monotonic() + SCREENSHOTS_FOR_S
        for attempt in itertools.count(1):
            started = time.monotonic()
            shot = page.screenshot(OUT / 'viewer.png')
            failures = _failures(np.asarray(PILImage.open(shot).convert('RGB'), np.int32),
                                 empty, clip, poses, (started, time.monotonic()), eye, target)
            print(f'screenshot {attempt}: ' + ('; '.join(failures) or 'all checks pass'))
            if not failures or time.monotonic() > deadline:
                break
            shutil.copy(shot, OUT / 'viewer-failed.png')  # the last failed one, for a look
            time.sleep(2.0)
    node.destroy_node()
    assert not failures, failures


def _failures(img: np.ndarray, empty: np.ndarray, clip, poses: list,
              captured: tuple[float, float], eye: np.ndarray, target: np.ndarray) -> list[str]:
    """What a screenshot ``img`` (H x W x 3) taken within ``captured`` (start and end of the
    capture, monotonic s) fails to show, against the page before any data (``empty``) and the
    ground truth of the clip frames the camera sent just before (``poses``: (receipt time,
    ground-truth PoseStamped))."""
    failures = []
    # the clip frames the camera sent shortly before the capture (it plays the clip forwards
    # and backwards, so these are found by their ground-truth poses, not counted back)
    recent = [clip_index(clip, conv.pose_to_matrix(msg.pose)) for t, msg in poses
              if captured[0] - VIEW_LAG_S <= t <= captured[1]]
    if not recent:
        return ['no ground-truth pose arrived while the screenshot was taken']
    frame = recent[-1]
    # the 3D view (left of the control panel) is drawn: clouds where the empty scene had none
    scene = slice(0, int(WIDTH * 0.6))
    changed = np.abs(img[:, scene] - empty[:, scene]).sum(axis=2) > 60
    if changed.mean() <= 0.15:
        failures.append(f'only {changed.mean():.1%} of the view changed')
    if len(np.unique(img[:, scene].reshape(-1, 3)[changed.reshape(-1)], axis=0)) <= 200:
        failures.append('the view has 200 colours or fewer')
    # moving tracked points are drawn (magenta; their trails are paler)
    magenta = ((img[..., 0] >= 200) & (img[..., 2] >= 200)
               & (img[..., 1] <= MOVING_TRACK_GREEN_MAX))
    if magenta.sum() < 10:
        failures.append('no moving track drawn')
    # the moving objects' boxes and velocity arrows are drawn (yellow: none of the clip's pixels
    # has red and green >= 200 with blue <= 80; where they are is the colour check's below)
    boxes = ((img[..., 0] >= 200) & (img[..., 1] >= 180) & (img[..., 2] <= 90))
    if boxes.sum() < 20:
        failures.append('no moving object box drawn')
    # the moving objects are where their ground-truth projection says, in their own colours:
    # the object's pixels of the camera image (exact depth and pose), projected into the
    # browser's view, land on drawn points of the object's colour. The view lags the camera
    # by the processing time, so the best of the frames sent just before the capture counts.

    # the tracks are drawn over the clouds (a moving object carries many moving tracks): their
    # pixels show the tracks' colours, not the object's, and are left out of the comparison
    overlay = magenta | boxes | (np.abs(img - STATIC_TRACK_RGB).sum(axis=2) < 60)

    def colour_error(px: np.ndarray, true: np.ndarray) -> float:
        """Median colour difference of drawn and true colours where `px` is on the page and
        not under a track."""
        ok = (px[:, 0] >= 0) & (px[:, 0] < WIDTH) & (px[:, 1] >= 0) & (px[:, 1] < HEIGHT)
        ok[ok] = ~overlay[px[ok, 1], px[ok, 0]]
        if ok.sum() < 50:
            return np.inf
        return float(np.median(np.abs(img[px[ok, 1], px[ok, 0]] - true[ok]).sum(axis=1)))

    best, shifted = np.inf, np.inf
    for i in sorted(set(recent)):
        mask = np.isin(clip.instance[i], np.flatnonzero(clip.moving))
        if mask.sum() < 50:
            continue
        cam = unproject_depth(clip.depth[i], clip.K)[mask]
        world = transform_points(conv.T_LINK_FROM_OPTICAL @ clip.T_wc[i], cam)
        px = np.round(project(world, eye, target)).astype(int)
        true = clip.rgb[i][mask].astype(np.int32)
        error = colour_error(px, true)
        if error < best:  # the same pixels moved off the object, for comparison
            best = error
            shifted = float(np.median([colour_error(px + d, true) for d in SHIFTS]))
    white = float(np.median(np.abs(255 - clip.rgb[frame][clip.instance[frame] > 0]).sum(axis=1)))
    print(f'moving objects: colour error {best:.0f} (shifted {shifted:.0f}, empty page '
          f'{white:.0f})')
    # measured over 12 runs: error / empty page 0.11-0.25, error / shifted 0.39-0.63
    if not (best < 0.3 * white and best < 0.8 * shifted):
        failures.append(f'the moving objects are not drawn where they are: colour error '
                        f'{best:.0f}, moved 100-200 px off {shifted:.0f}, against the empty '
                        f'page {white:.0f}')
    return failures
