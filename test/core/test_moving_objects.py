"""Moving objects in the core (issue 15): the object tracker on exact rigid motions, the shared
segmentation, and the rgbd backend's objects scored against synthetic ground truth
(docs/measurements.md, "Moving objects")."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fourd_ros.core.backends.factory import make_backend
from fourd_ros.core.backends.rgbd import RgbdBackend
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine
from fourd_ros.core.engine.objects import (ObjectConfig, ObjectTracker, depth_edges,
                                           label_moving_segments, rigid_scene_flow)
from fourd_ros.core.eval.moving_objects import score_objects
from fourd_ros.core.geometry import make_pose, transform_points
from shared_data import SEVEN_SCENES, needs_7scenes

H, W = 60, 80


def _scene(offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points of a wall at z = 3 with two boxes (segments 1, 2) in front, shifted."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    points = np.stack([(u - W / 2) / 40, (v - H / 2) / 40, np.full(u.shape, 3.0)], axis=-1)
    segments = np.zeros((H, W), np.uint16)
    segments[10:30, 10:30] = 1
    segments[35:55, 45:75] = 2
    points[segments > 0, 2] = 2.0
    points[segments == 1] += offset
    return points.astype(np.float32), segments


def test_objects_get_the_exact_rigid_motion_and_keep_their_ids() -> None:
    dt = 0.1
    # object 2 turns about its own centre (it stays where it is: its centroid does not move)
    R = Rotation.from_rotvec([0.0, 0.2, 0.0]).as_matrix()
    centre = _scene(np.zeros(3))[0][35:55, 45:75].reshape(-1, 3).astype(np.float64).mean(0)
    turn = make_pose(R, centre - R @ centre)
    # reported from their second frame, whatever their path (object 2 turns in place)
    tracker = ObjectTracker(ObjectConfig(min_points=20, min_share=0.0, min_age=2,
                                         min_straightness=0.0))
    seen = []
    for i in range(6):
        points, segments = _scene(np.array([0.02 * i, 0.0, 0.0]))
        motions = np.stack([np.eye(4), make_pose(np.eye(3), [0.02, 0.0, 0.0]), turn])
        if i == 3:  # object 2 missed for a frame: it keeps its id
            segments[segments == 2] = 0
        flow = rigid_scene_flow(points, segments, motions, dt, segments > 0)
        snap = tracker.step(i * dt, points, segments, flow, np.ones((H, W), np.float32))
        seen.append({o.id: o for o in snap.objects})
    assert list(seen[0]) == []  # reported from their second frame (min_age)
    assert list(seen[1]) == [1, 2] and list(seen[3]) == [1] and list(seen[5]) == [1, 2]
    box, turning = seen[5][1], seen[5][2]
    assert np.allclose(box.velocity, [0.2, 0.0, 0.0], atol=1e-4)
    assert np.allclose(box.angular_velocity, 0.0, atol=1e-4)
    assert np.allclose(turning.angular_velocity, [0.0, 2.0, 0.0], atol=1e-3)
    assert np.allclose(turning.motion, turn, atol=1e-5)
    # the velocity is the centroid's: the motion moves the centroid by it in dt
    moved = transform_points(turning.motion, turning.centroid[None])[0]
    assert np.allclose(moved - turning.centroid, turning.velocity * dt, atol=1e-5)
    assert np.allclose(np.sort(box.box_size)[1:], [0.475, 0.475], atol=0.03)
    assert box.confidence > 0.99
    # an object gone for longer than max_missed gets a new id, never an old one
    empty = np.zeros((H, W), np.uint16)
    points, segments = _scene(np.zeros(3))
    for i in range(6, 13):
        tracker.step(i * dt, points, empty, np.zeros((H, W, 3), np.float32),
                     np.ones((H, W), np.float32))
    for i in range(13, 15):
        snap = tracker.step(i * dt, points, segments, np.zeros((H, W, 3), np.float32),
                            np.ones((H, W), np.float32))
    assert sorted(o.id for o in snap.objects) == [3, 4]
    assert set(np.unique(snap.id_mask())) == {0, 3, 4}


def test_objects_are_reported_once_they_travel_not_while_they_jitter_in_place() -> None:
    tracker = ObjectTracker(ObjectConfig(min_points=20, min_share=0.0))
    rng = np.random.default_rng(0)
    reported: dict[int, list[int]] = {1: [], 2: []}
    for i in range(12):
        # segment 1 travels 2 cm per frame; segment 2 (a static surface mistaken for an
        # object) jitters by 2 cm about where it is
        points, segments = _scene(np.array([0.02 * i, 0.0, 0.0]))
        points[segments == 2] += rng.normal(0.0, 0.02, 3).astype(np.float32)
        flow = np.zeros((H, W, 3), np.float32)
        flow[segments == 1] = (0.2, 0.0, 0.0)
        flow[segments == 2] = rng.normal(0.0, 0.2, 3)
        snap = tracker.step(i * 0.1, points, segments, flow, np.ones((H, W), np.float32))
        ids = snap.id_mask()
        for label in (1, 2):
            if int(ids[segments == label][0]) in {o.id for o in snap.objects}:
                reported[label].append(i)
    assert reported[1] == list(range(2, 12))  # from its third frame (min_age)
    # (two random steps may line up by chance; once more steps are known they do not)
    assert len(reported[2]) <= 1 and not [i for i in reported[2] if i > 3]
    # both are in the motion mask all along (moving segments, reported or not)
    assert (snap.id_mask()[segments > 0] > 0).all()


def test_an_object_that_turns_sharply_stays_reported() -> None:
    # segment 1 travels 2 cm per frame for 10 frames, then turns by 135 degrees: over the
    # window around the turn its net displacement falls to 0.38 of its path (a jittering
    # surface's range)
    turn = np.radians(135.0)
    step = 0.02 * np.array([np.cos(turn), 0.0, np.sin(turn)])
    path = [np.array([0.02 * i, 0.0, 0.0]) for i in range(10)]
    path += [path[-1] + k * step for k in range(1, 7)]
    reported = {}
    for keep in (0.3, 0.5):
        tracker = ObjectTracker(ObjectConfig(min_points=20, min_share=0.0,
                                             keep_straightness=keep))
        reported[keep] = []
        for i, offset in enumerate(path):
            points, segments = _scene(offset)
            segments[segments == 2] = 0
            flow = np.zeros((H, W, 3), np.float32)
            flow[segments == 1] = (path[min(i + 1, len(path) - 1)] - offset) / 0.1
            if tracker.step(i * 0.1, points, segments, flow,
                            np.ones((H, W), np.float32)).objects:
                reported[keep].append(i)
    # reported from its third frame on, through the turn (it was reported for a whole window)
    assert reported[0.3] == list(range(2, len(path)))
    # held to the entry bar after the turn, it drops out for a few frames
    assert len(reported[0.5]) < len(path) - 2


def test_moving_segments_split_at_depth_jumps_and_drop_small_parts() -> None:
    dynamic = np.zeros((H, W), bool)
    dynamic[10:40, 10:60] = True
    dynamic[50:53, 5:8] = True  # 9 pixels: too small
    depth = np.full((H, W), 3.0, np.float32)
    depth[10:40, 35:60] = 2.0  # a nearer object touching the first in the image
    labels = label_moving_segments(dynamic, depth, min_pixels=20)
    assert labels.dtype == np.uint16 and labels.max() == 2
    assert labels[20, 15] != labels[20, 50] and labels[51, 6] == 0
    assert labels[20, 15] > 0 and labels[20, 50] > 0


def _disc_in_front_of_a_wall():
    """A textured disc 2 m away (radius 12 px) in front of a wall at 3 m, seen by a
    segment tracker: (tracker, frame, disc mask, surfaces, pixel columns, pixel rows)."""
    from fourd_ros.core.backends.rgbd.latent import RgbdView
    from fourd_ros.core.backends.rgbd.segment_motion import SegmentMotionTracker, _surfaces
    from fourd_ros.core.geometry import unproject_depth
    K = np.array([[40.0, 0.0, W / 2], [0.0, 40.0, H / 2], [0.0, 0.0, 1.0]])
    v, u = np.mgrid[0:H, 0:W]
    disc = (u - 30) ** 2 + (v - 30) ** 2 <= 12 ** 2
    depth = np.where(disc, 2.0, 3.0).astype(np.float32)
    gray = (127 + 60 * np.sin(u / 3.0) * np.cos(v / 4.0)).astype(np.uint8)
    view = RgbdView(gray, depth, np.eye(4), unproject_depth(depth, K).astype(np.float32),
                    np.zeros((H, W), bool))
    return SegmentMotionTracker(K, W, H), view, disc, _surfaces(depth, depth_edges(depth)), u, v


def test_a_segment_grows_over_its_object_but_not_over_a_wall() -> None:
    """A slow object shows its motion only at its silhouette: the segment of that crescent
    grows over the rest of the object's surface (no depth jump inside, the motion explains
    it); a segment on a wall, a surface many times its size, does not grow."""
    tracker, view, disc, surfaces, u, _ = _disc_in_front_of_a_wall()
    motions = [np.eye(4), make_pose(np.eye(3), [0.001, 0.0, 0.0])]
    crescent = (disc & (u >= 34)).astype(np.uint16)
    grown = tracker._grown(view, view, crescent, motions, surfaces)
    assert (grown[disc] == 1).mean() > 0.9 and not grown[~disc].any()
    patch = np.zeros((H, W), np.uint16)
    patch[45:55, 60:70] = 1
    assert np.array_equal(tracker._grown(view, view, patch, motions, surfaces), patch)


def test_only_segments_that_stand_out_in_depth_are_published() -> None:
    """A segment is published when its outline, or that of the surface it lies on, lies
    behind it somewhere (an object in front of its background); a patch of the wall, whose
    surroundings are the wall itself or the nearer disc, is not."""
    tracker, view, disc, surfaces, u, v = _disc_in_front_of_a_wall()
    labels = np.zeros((H, W), np.uint16)
    labels[disc & (u >= 34)] = 1  # part of the disc, along its edge
    labels[45:55, 60:70] = 2  # a patch of the wall
    labels[~disc & (u >= 40) & (u <= 46) & (v >= 22) & (v <= 38)] = 3  # wall beside the disc
    published = tracker._outlined(view, labels, surfaces)
    assert np.array_equal(published == 1, labels == 1)
    assert not (published >= 2).any()
    inner = ((u - 30) ** 2 + (v - 30) ** 2 <= 25).astype(np.uint16)  # outline on the disc
    assert np.array_equal(tracker._outlined(view, inner, surfaces), inner)


# per seed as measured (docs/measurements.md): mask IoU, worst object's median velocity error,
# worst object's id consistency, share of frames with a false object. Development seeds 0, 2,
# 5, 11 were tuned on; held-out seeds 100 and 102-105 never were. Floors: IoU - 0.05, velocity
# error + 0.05, consistency - 0.1, false frames + 0.1 (deterministic: reruns give the same).
# Each reference is the best build's: session 19's comparison with the frame 3 back (figures
# here) left the velocity error of seeds 0, 5, 100 and 102 at 0.119, 0.096, 0.163 and 0.074,
# the false frames of seed 5 at 0.022, and seed 0's id consistency at 0.850 (0.944 before;
# the object that leaves the view and comes back, with a new id since objects are not
# re-identified, is now matched on 3 frames after its return instead of 1).
MEASURED = {0: (0.830, 0.104, 0.944, 0.0), 2: (0.936, 0.080, 1.0, 0.0),
            5: (0.899, 0.096, 1.0, 0.0), 11: (0.903, 0.053, 1.0, 0.0),
            100: (0.937, 0.126, 1.0, 0.0), 102: (0.910, 0.070, 1.0, 0.0),
            103: (0.945, 0.062, 1.0, 0.0), 104: (0.894, 0.134, 1.0, 0.0),
            105: (0.883, 0.014, 1.0, 0.0)}


@pytest.mark.slow
@pytest.mark.parametrize('seed', sorted(MEASURED))
def test_rgbd_objects_against_ground_truth(seed: int) -> None:
    clip = generate_clip(SceneConfig(frames=48, width=256, height=192, seed=seed, fps=30.0,
                                     num_objects=(3, 5)))
    s = score_objects(StreamingEngine(RgbdBackend(), EngineConfig(width=0)), clip).result()
    print(f'seed {seed}: ' + ', '.join(f'{k} {v:.3f}' for k, v in s.items()))
    iou, velocity, consistency, false_frames = MEASURED[seed]
    # issue 15's scene-flow and object-velocity bars hold on every clip
    assert s['flow_moving_rel_median'] <= 0.2
    assert s['flow_static_median_m_s'] < 0.01
    assert s['object_velocity_rel_median_worst'] <= 0.2
    assert s['mask_iou'] >= iou - 0.05
    assert s['object_velocity_rel_median_worst'] <= velocity + 0.05
    assert s['id_consistency_worst'] >= consistency - 0.1
    assert s['frames_with_false_object'] <= false_frames + 0.1


# the learned backend's objects, as measured (docs/measurements.md, "Moving objects"; not yet
# at issue 15's bars): mask IoU, scene-flow error of moving points and frames with a false
# object on the DDS test's scene (seed 2, 160x120) and development seed 5. Floors: IoU - 0.05,
# flow error + 0.1 (3.0 and 6.2 before session 18's lateral scene flow), false frames + 0.1.
LEARNED_MEASURED = {(2, 160, 120, 30): (0.503, 0.634, 0.107),
                    (5, 256, 192, 48): (0.563, 0.713, 0.043)}


@pytest.mark.slow
@pytest.mark.parametrize('clip_key', sorted(LEARNED_MEASURED))
def test_learned_objects_against_ground_truth(clip_key: tuple[int, int, int, int]) -> None:
    seed, width, height, frames = clip_key
    objects = {} if frames == 30 else {'num_objects': (3, 5)}
    clip = generate_clip(SceneConfig(frames=frames, width=width, height=height, seed=seed,
                                     fps=30.0, **objects))
    engine = StreamingEngine(make_backend('learned', device='cpu'), EngineConfig(width=0))
    s = score_objects(engine, clip).result()
    print(f'learned, seed {seed} {width}x{height}: '
          + ', '.join(f'{k} {v:.3f}' for k, v in s.items()))
    iou, flow_error, false_frames = LEARNED_MEASURED[clip_key]
    assert s['mask_iou'] >= iou - 0.05
    assert s['flow_moving_rel_median'] <= flow_error + 0.1
    assert s['frames_with_false_object'] <= false_frames + 0.1


@pytest.mark.slow
@needs_7scenes
def test_static_room_has_few_objects() -> None:
    from fourd_ros.core.data.readers.seven_scenes import SevenScenesReader
    engine = StreamingEngine(RgbdBackend(), EngineConfig(width=320))
    frames = with_objects = 0
    for frame in SevenScenesReader(SEVEN_SCENES):
        engine.process(frame)
        frames += 1
        with_objects += bool(engine.object_snapshot().objects)
    print(f'7-Scenes: {with_objects} of {frames} frames with an object')
    # measured 14 of 400 (session 28; 11 in sessions 19-24, 12 before session 19, 20 before
    # session 16, 7 before session 17's segment growth; issue 15 asks for at most 5 %): the
    # dynamic mask drops parts that
    # staying still explains, and a static surface that depth noise or a pose error makes
    # look like moving jitters in place and is not reported
    assert with_objects <= 0.05 * frames


def test_an_object_that_comes_back_gets_its_id_again() -> None:
    """An object followed long enough to be sure of it (reported over a whole path window) that
    leaves the view and comes back near where it was, within `reid_s`, keeps its id; one of
    another size there, or one coming back later, gets a new id."""
    config = ObjectConfig(min_points=20, min_share=0.0)
    empty = np.zeros((H, W), np.uint16)
    ones = np.ones((H, W), np.float32)

    def follow(tracker: ObjectTracker, start: int, frames: int) -> list:
        snaps = []
        for i in range(start, start + frames):
            points, segments = _scene(np.array([0.02 * i, 0.0, 0.0]))
            segments[segments == 2] = 0
            flow = np.zeros((H, W, 3), np.float32)
            flow[segments == 1] = (0.2, 0.0, 0.0)
            snaps.append(tracker.step(i * 0.1, points, segments, flow, ones))
        return snaps

    def away(tracker: ObjectTracker, start: int, frames: int) -> None:
        points = _scene(np.zeros(3))[0]
        for i in range(start, start + frames):
            tracker.step(i * 0.1, points, empty, np.zeros((H, W, 3), np.float32), ones)

    tracker = ObjectTracker(config)
    first = follow(tracker, 0, 10)
    assert [o.id for o in first[-1].objects] == [1]
    away(tracker, 10, 8)  # gone for longer than max_missed (5 frames): no longer followed
    back = follow(tracker, 18, 2)
    assert [o.id for o in back[0].objects] == [1]  # reported again at once, under its id
    # the same, but it comes back after reid_s
    tracker = ObjectTracker(ObjectConfig(min_points=20, min_share=0.0, reid_s=0.5))
    follow(tracker, 0, 10)
    away(tracker, 10, 8)
    assert {int(i) for i in np.unique(follow(tracker, 18, 1)[0].id_mask())} == {0, 2}
    # an object followed only briefly is not re-identified
    tracker = ObjectTracker(config)
    follow(tracker, 0, 4)
    away(tracker, 4, 8)
    assert {int(i) for i in np.unique(follow(tracker, 12, 1)[0].id_mask())} == {0, 2}
    # something three times the size where it left is another object
    tracker = ObjectTracker(config)
    follow(tracker, 0, 10)
    away(tracker, 10, 8)
    points, segments = _scene(np.array([0.36, 0.0, 0.0]))
    segments[segments == 2] = 0
    segments[5:55, 5:60] = np.where(segments[5:55, 5:60] == 0, 1, 1)
    points[segments == 1, 2] = 2.0
    snap = tracker.step(1.8, points, segments, np.zeros((H, W, 3), np.float32), ones)
    assert {int(i) for i in np.unique(snap.id_mask())} == {0, 2}
