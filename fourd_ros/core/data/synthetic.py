"""Procedural dynamic scenes rendered by analytic ray casting, with exact ground truth.

A scene is a textured box room that contains the camera, plus rigid objects (box, sphere, capped
cylinder) moving on smooth trajectories. Every pixel is rendered by casting one ray through its
centre and taking the nearest hit, so depth, instance ids, camera poses and object poses are exact
and mutually consistent; the 3D position at any time of any point seen in any frame follows from
the object poses (see ``SyntheticClip.points_at``).

Frames and units (as in ``fourd_ros.core.types``): OpenCV camera axes, metres, float seconds,
``T_wc`` camera-to-world 4x4 float64, world = the first camera, so ``T_wc[0]`` is the identity.
Scenes are sampled in a room frame (centre of the room, x right, y down = gravity, z forward) and
then re-expressed in the world frame.

Ray parameterisation: camera ray directions are ``K^-1 [u, v, 1]`` rotated to the world, i.e.
they have unit z in the camera frame, so the ray parameter of a hit is its camera depth z (rigid
transforms of the ray into an object frame preserve this parameter).

Entry points: ``generate_clip(SceneConfig(...))``; ``sample_scene`` + ``render_clip`` for custom
scenes. ``python -m fourd_ros.core.data.synthetic`` prints the generation time of a default clip.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
from scipy.spatial.transform import Rotation

from fourd_ros.core.data.textures import make_texture, sample_texture
from fourd_ros.core.geometry import finite_rows, invert_pose
from fourd_ros.core.jsonsafe import json_safe
from fourd_ros.core.types import Frame, GroundPlane

CAMERA_MOTIONS = ('smooth', 'static', 'rotation', 'ground')
SHAPES = ('box', 'sphere', 'cylinder')
# smallest ray parameter accepted as a hit (metres of camera depth)
_T_MIN = 1e-6
# camera keeps this distance from walls, floor and ceiling (metres)
_WALL_MARGIN = 0.5
# extra distance between the camera centre and an object's bounding sphere (metres)
_CAMERA_CLEARANCE = 0.3


@dataclass
class SceneConfig:
    """Parameters of a random clip; ranges are (low, high) of uniform draws.

    Attributes:
        frames: number of frames.
        width, height: image size in pixels.
        seed: random seed; the clip is a deterministic function of the whole config.
        fps: frame rate; frame i has stamp i / fps seconds.
        num_objects: inclusive range of the number of rigid objects.
        camera_motion: 'smooth' (translation + rotation), 'static', 'rotation' (pure
            rotation) or 'ground' (a ground robot's camera: 'smooth' on a plane at a fixed
            height above the floor, ``ground_height``, pitched down by ``ground_pitch_deg``,
            no roll, turning about the vertical only).
        hfov_deg: horizontal field of view range in degrees.
        room_size: width/depth range of the room in metres.
        room_height: height range of the room in metres.
        object_size: range of object extents (box sides, sphere/cylinder diameters, heights).
        object_speed: range of the linear speed of moving objects in m/s.
        object_angular_speed_deg: range of the angular speed of moving objects in deg/s.
        static_object_prob: probability that an object does not move at all.
        camera_speed: range of the linear camera speed in m/s ('smooth' only).
        camera_angular_speed_deg: maximum mean yaw rate of the camera in deg/s.
        num_textures: number of procedural textures per scene.
        texture_size: texture side length in texels.
        photo_texture_prob: probability that each scene texture is a crop of a real CC0 photo
            (``textures.photo_texture``) instead of a procedural pattern; 0 (default) draws no
            extra random numbers, so clips are identical to those without the option.
        ambient: ambient fraction of the lambertian shading (1 = no shading).
        rgb_noise_std: std of additive Gaussian pixel noise in 0..255 units (0 = none).
        ground_height: range of the camera's height above the floor ('ground' only), metres.
        ground_pitch_deg: range of its downward pitch ('ground' only), degrees.
    """

    frames: int = 24
    width: int = 256
    height: int = 192
    seed: int = 0
    fps: float = 10.0
    num_objects: tuple[int, int] = (1, 4)
    camera_motion: str = 'smooth'
    hfov_deg: tuple[float, float] = (50.0, 80.0)
    room_size: tuple[float, float] = (4.0, 8.0)
    room_height: tuple[float, float] = (2.5, 3.5)
    object_size: tuple[float, float] = (0.2, 1.0)
    object_speed: tuple[float, float] = (0.1, 1.0)
    object_angular_speed_deg: tuple[float, float] = (0.0, 90.0)
    static_object_prob: float = 0.25
    camera_speed: tuple[float, float] = (0.1, 0.6)
    camera_angular_speed_deg: float = 20.0
    num_textures: int = 8
    texture_size: int = 256
    photo_texture_prob: float = 0.0
    ambient: float = 0.55
    rgb_noise_std: float = 0.0
    ground_height: tuple[float, float] = (0.3, 1.0)
    ground_pitch_deg: tuple[float, float] = (5.0, 25.0)

    def __post_init__(self) -> None:
        if self.camera_motion not in CAMERA_MOTIONS:
            raise ValueError(f'camera_motion must be one of {CAMERA_MOTIONS}, '
                             f'got {self.camera_motion!r}')
        if self.frames < 1 or self.width < 2 or self.height < 2 or self.fps <= 0:
            raise ValueError('SceneConfig needs frames >= 1, width/height >= 2 and fps > 0')
        lo, hi = self.num_objects
        if not 0 <= lo <= hi:
            raise ValueError(f'num_objects must be a range 0 <= lo <= hi, got {self.num_objects}')
        if not 0.0 <= self.photo_texture_prob <= 1.0:
            raise ValueError('photo_texture_prob must be in [0, 1], '
                             f'got {self.photo_texture_prob}')
        if self.room_size[0] < 2 * _WALL_MARGIN + 1.0:
            raise ValueError('room_size must be at least 2 m')


# ---------------------------------------------------------------------------------------------
# scene description


def _vec(x: Any, n: int = 3) -> np.ndarray:
    a = np.asarray(x, np.float64).reshape(n)
    return a.copy()


@dataclass
class TextureBinding:
    """How a surface samples a texture.

    Attributes:
        texture: index into ``Scene.textures``.
        scale: metres of surface per texture tile.
        offset: (u, v) offset in tiles.
    """

    texture: int
    scale: float
    offset: tuple[float, float] = (0.0, 0.0)


@dataclass
class RigidObject:
    """A rigid primitive with an analytic trajectory (all vectors in the scene's frame).

    Pose at time t: rotation ``exp([omega] t) R0``, centre
    ``c0 + velocity t + amplitude sin(2 pi frequency t + phase)``.

    Attributes:
        shape: 'box' | 'sphere' | 'cylinder'.
        half_extents: object-frame half sizes in metres: box (hx, hy, hz); sphere (r, r, r);
            cylinder (r, h, r) with its axis along object y and caps at y = +-h.
        c0: centre parameter (metres).
        R0: 3x3 rotation at t = 0 (object-to-scene).
        velocity: linear velocity (m/s).
        amplitude: sinusoid amplitude per axis (metres).
        frequency: sinusoid frequency (Hz).
        phase: sinusoid phase (rad).
        omega: angular velocity in the scene frame (rad/s).
        texture: texture binding of the surface.
    """

    shape: str
    half_extents: np.ndarray
    c0: np.ndarray
    R0: np.ndarray = field(default_factory=lambda: np.eye(3))
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    amplitude: np.ndarray = field(default_factory=lambda: np.zeros(3))
    frequency: float = 0.0
    phase: float = 0.0
    omega: np.ndarray = field(default_factory=lambda: np.zeros(3))
    texture: TextureBinding = field(default_factory=lambda: TextureBinding(0, 1.0))

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f'shape must be one of {SHAPES}, got {self.shape!r}')
        self.half_extents = _vec(self.half_extents)
        self.c0 = _vec(self.c0)
        self.R0 = np.asarray(self.R0, np.float64).reshape(3, 3).copy()
        self.velocity = _vec(self.velocity)
        self.amplitude = _vec(self.amplitude)
        self.omega = _vec(self.omega)
        if isinstance(self.texture, dict):
            self.texture = TextureBinding(**self.texture)

    @property
    def moving(self) -> bool:
        """True when the object moves or rotates at all."""
        wobble = self.frequency != 0.0 and bool(np.any(self.amplitude != 0.0))
        return bool(np.any(self.velocity != 0.0) or np.any(self.omega != 0.0) or wobble)

    @property
    def bounding_radius(self) -> float:
        """Radius of a sphere around the centre that contains the object (metres)."""
        h = self.half_extents
        if self.shape == 'box':
            return float(np.linalg.norm(h))
        if self.shape == 'sphere':
            return float(h[0])
        return float(np.hypot(h[0], h[1]))

    def centre(self, t: float | np.ndarray) -> np.ndarray:
        """Centre at time(s) t: (3,) or (len(t), 3) metres."""
        t = np.asarray(t, np.float64)
        s = np.sin(2 * np.pi * self.frequency * t + self.phase)
        return self.c0 + self.velocity * t[..., None] + self.amplitude * s[..., None]

    def pose(self, t: float) -> np.ndarray:
        """4x4 object-to-scene pose at time t (seconds)."""
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec(self.omega * float(t)).as_matrix() @ self.R0
        T[:3, 3] = self.centre(float(t))
        return T

    def transformed(self, T: np.ndarray) -> RigidObject:
        """The same object expressed in another frame, given T = new-from-old (4x4)."""
        R, p = T[:3, :3], T[:3, 3]
        return dataclasses.replace(
            self, c0=R @ self.c0 + p, R0=R @ self.R0, velocity=R @ self.velocity,
            amplitude=R @ self.amplitude, omega=R @ self.omega)

    def to_dict(self) -> dict:
        return json_safe(dataclasses.asdict(self))


@dataclass
class Room:
    """The box the camera is inside.

    Attributes:
        T_wr: 4x4 pose of the room centre frame in the scene frame (room y points down).
        half_extents: room half sizes in metres.
        faces: 6 texture bindings for the faces -x, +x, -y (ceiling), +y (floor), -z, +z.
    """

    T_wr: np.ndarray
    half_extents: np.ndarray
    faces: list[TextureBinding]

    def __post_init__(self) -> None:
        self.T_wr = np.asarray(self.T_wr, np.float64).reshape(4, 4).copy()
        self.half_extents = _vec(self.half_extents)
        self.faces = [TextureBinding(**f) if isinstance(f, dict) else f for f in self.faces]
        if len(self.faces) != 6:
            raise ValueError(f'Room needs 6 face textures, got {len(self.faces)}')

    def to_dict(self) -> dict:
        return json_safe(dataclasses.asdict(self))


@dataclass
class Scene:
    """Room + objects + textures + light, all in one frame (the world frame after sampling).

    Attributes:
        room: the room.
        objects: rigid objects; object k (1-based instance id) is ``objects[k - 1]``.
        textures: S x S x 3 uint8 textures (may be empty for a geometry-only scene).
        light_dir: unit vector towards a distant light, scene frame.
        ambient: ambient fraction of the lambertian shading.
    """

    room: Room
    objects: list[RigidObject]
    textures: list[np.ndarray] = field(default_factory=list)
    light_dir: np.ndarray = field(default_factory=lambda: np.array([0.0, -1.0, 0.0]))
    ambient: float = 0.55

    def __post_init__(self) -> None:
        self.light_dir = _vec(self.light_dir)
        self.light_dir /= np.linalg.norm(self.light_dir)
        self._tex_f32: list[np.ndarray] | None = None

    def object_poses(self, t: float) -> np.ndarray:
        """(N+1) x 4 x 4 object-to-scene poses at time t; index 0 (background) = identity."""
        out = np.tile(np.eye(4), (len(self.objects) + 1, 1, 1))
        for k, obj in enumerate(self.objects, 1):
            out[k] = obj.pose(t)
        return out

    def to_dict(self) -> dict:
        """Geometry, trajectories and texture bindings (not the texture images)."""
        return {'room': self.room.to_dict(), 'objects': [o.to_dict() for o in self.objects],
                'light_dir': self.light_dir.tolist(), 'ambient': float(self.ambient)}

    @classmethod
    def from_dict(cls, d: dict, textures: list[np.ndarray] | None = None) -> Scene:
        return cls(room=Room(**d['room']), objects=[RigidObject(**o) for o in d['objects']],
                   textures=list(textures or []), light_dir=d['light_dir'],
                   ambient=float(d['ambient']))

    # -- ray casting -----------------------------------------------------------------------

    def trace(self, origin: np.ndarray, dirs: np.ndarray, t: float,
              poses: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest hit of rays from one origin at time t.

        Args:
            origin: (3,) ray origin, scene frame.
            dirs: N x 3 ray directions, scene frame (any length; the hit parameter is in units
                of the direction's length).
            t: time in seconds.
            poses: optional precomputed ``object_poses(t)``.

        Returns:
            (N ray parameters of the nearest hit, N int32 instance ids; 0 = room). Rays always
            hit the room when the origin is inside it.
        """
        if poses is None:
            poses = self.object_poses(t)
        o_r, d_r = _to_local(self.room.T_wr, origin, dirs)
        tt = _room_exit(o_r, d_r, self.room.half_extents)
        inst = np.zeros(len(dirs), np.int32)
        dd = np.einsum('ij,ij->i', dirs, dirs)
        for k, obj in enumerate(self.objects, 1):
            # cull with the bounding sphere so exact tests only run on candidate rays
            oc = origin - poses[k][:3, 3]
            b = dirs @ oc
            rb = obj.bounding_radius
            disc = b * b - dd * (oc @ oc - rb * rb)
            cand = np.flatnonzero((disc >= 0) & (-b + np.sqrt(np.maximum(disc, 0)) > 0))
            if cand.size == 0:
                continue
            o_l, d_l = _to_local(poses[k], origin, dirs[cand])
            tk = _intersect(obj.shape, obj.half_extents, o_l, d_l)
            closer = tk < tt[cand]
            sel = cand[closer]
            tt[sel] = tk[closer]
            inst[sel] = k
        return tt, inst

    def shade(self, origin: np.ndarray, dirs: np.ndarray, tt: np.ndarray, inst: np.ndarray,
              poses: np.ndarray) -> np.ndarray:
        """Colours of traced hits: N x 3 float32 in [0, 1] (textures x lambertian shading)."""
        if not self.textures:
            raise RuntimeError('Scene has no textures (geometry-only scene); cannot shade')
        if self._tex_f32 is None:
            self._tex_f32 = [t.astype(np.float32) / 255.0 for t in self.textures]
        out = np.zeros((len(dirs), 3), np.float32)
        for k in np.unique(inst):
            sel = np.flatnonzero(inst == k)
            T = self.room.T_wr if k == 0 else poses[k]
            o_l, d_l = _to_local(T, origin, dirs[sel])
            p = o_l + tt[sel, None] * d_l
            if k == 0:
                col, n = self._room_colour(p)
            else:
                col, n = self._object_colour(self.objects[k - 1], p)
            lam = np.clip((n @ T[:3, :3].T) @ self.light_dir, 0.0, None)
            shade = self.ambient + (1.0 - self.ambient) * lam
            out[sel] = col * shade[:, None].astype(np.float32)
        return out

    def _sample(self, b: TextureBinding, s: np.ndarray, t: np.ndarray,
                off: np.ndarray | float = 0.0) -> np.ndarray:
        tex = self._tex_f32[b.texture % len(self._tex_f32)]
        size = tex.shape[0]
        u = (s / b.scale + b.offset[0] + off) * size
        v = (t / b.scale + b.offset[1] + off * 0.61) * size
        return sample_texture(tex, u, v)

    def _room_colour(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        face, s, t, n = _box_surface(p, self.room.half_extents)
        col = np.empty((len(p), 3), np.float32)
        for f in np.unique(face):
            m = face == f
            col[m] = self._sample(self.room.faces[f], s[m], t[m])
        return col, -n  # the room is seen from inside

    def _object_colour(self, obj: RigidObject, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = obj.texture
        h = obj.half_extents
        if obj.shape == 'box':
            face, s, t, n = _box_surface(p, h)
            # different faces show different parts of the texture
            return self._sample(b, s, t, off=0.37 * face), n
        r = h[0]
        # whole number of tiles around the circumference, so the seam is invisible
        ring = 2 * np.pi * r
        b = dataclasses.replace(b, scale=ring / max(1, round(ring / b.scale)))
        theta = r * np.arctan2(p[:, 0], p[:, 2])
        if obj.shape == 'sphere':
            n = p / np.linalg.norm(p, axis=1, keepdims=True)
            phi = r * np.arcsin(np.clip(p[:, 1] / r, -1.0, 1.0))
            return self._sample(b, theta, phi), n
        rxz = np.hypot(p[:, 0], p[:, 2])
        cap = np.abs(np.abs(p[:, 1]) - h[1]) < np.abs(rxz - r)
        n = np.zeros_like(p)
        n[cap, 1] = np.sign(p[cap, 1])
        side = ~cap
        n[side, 0] = p[side, 0] / np.maximum(rxz[side], 1e-12)
        n[side, 2] = p[side, 2] / np.maximum(rxz[side], 1e-12)
        col = np.empty((len(p), 3), np.float32)
        if cap.any():
            col[cap] = self._sample(b, p[cap, 0], p[cap, 2], off=0.5)
        if side.any():
            col[side] = self._sample(b, theta[side], p[side, 1])
        return col, n


def _to_local(T: np.ndarray, origin: np.ndarray, dirs: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Rays from the scene frame into the frame posed by T (local-to-scene)."""
    R = T[:3, :3]
    return R.T @ (origin - T[:3, 3]), dirs @ R


def _room_exit(o: np.ndarray, d: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Exit parameter of rays starting inside the axis-aligned box [-h, h]."""
    with np.errstate(divide='ignore', invalid='ignore'):
        tf = np.where(d > 0, (h - o) / d, (-h - o) / d)
    tf[d == 0] = np.inf
    return tf.min(axis=1)


def _intersect(shape: str, h: np.ndarray, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Entry parameter of rays (one origin o outside the solid) into a primitive; inf = miss."""
    inf = np.full(len(d), np.inf)
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        if shape == 'box':
            t1 = (-h - o) / d
            t2 = (h - o) / d
            tn = np.minimum(t1, t2).max(axis=1)
            tf = np.maximum(t1, t2).min(axis=1)
            hit = (tn <= tf) & (tn > _T_MIN)
            return np.where(hit, tn, inf)
        if shape == 'sphere':
            a = np.einsum('ij,ij->i', d, d)
            b = d @ o
            disc = b * b - a * (o @ o - h[0] * h[0])
            t = (-b - np.sqrt(disc)) / a
            return np.where((disc >= 0) & (t > _T_MIN), t, inf)
        # capped cylinder, axis y
        r, hh = h[0], h[1]
        a = d[:, 0] ** 2 + d[:, 2] ** 2
        b = d[:, 0] * o[0] + d[:, 2] * o[2]
        c = o[0] ** 2 + o[2] ** 2 - r * r
        disc = b * b - a * c
        ts = (-b - np.sqrt(disc)) / a
        ys = o[1] + ts * d[:, 1]
        best = np.where((disc >= 0) & (a > 0) & (ts > _T_MIN) & (np.abs(ys) <= hh), ts, inf)
        for y_cap in (-hh, hh):
            tc = (y_cap - o[1]) / d[:, 1]
            xc = o[0] + tc * d[:, 0]
            zc = o[2] + tc * d[:, 2]
            ok = (tc > _T_MIN) & (xc * xc + zc * zc <= r * r)
            best = np.where(ok & (tc < best), tc, best)
        return best


def _box_surface(p: np.ndarray, h: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Face id (2 * axis + (sign > 0)), 2D face coordinates (metres) and outward normals."""
    ratio = np.abs(p) / h
    axis = ratio.argmax(axis=1)
    rows = np.arange(len(p))
    sign = np.where(p[rows, axis] >= 0, 1.0, -1.0)
    face = 2 * axis + (sign > 0)
    s = np.where(axis == 0, p[:, 2], p[:, 0])
    t = np.where(axis == 1, p[:, 2], p[:, 1])
    n = np.zeros_like(p)
    n[rows, axis] = sign
    return face, s, t, n


# ---------------------------------------------------------------------------------------------
# clip


@dataclass
class SyntheticClip:
    """A rendered clip with exact ground truth (F frames, N objects).

    Attributes:
        rgb: F x H x W x 3 uint8 RGB.
        depth: F x H x W float32 camera z in metres (> 0 everywhere).
        instance: F x H x W int32; 0 = room (static background), k >= 1 = object k.
        K: 3x3 float64 intrinsics shared by all frames.
        T_wc: F x 4 x 4 float64 camera-to-world; ``T_wc[0]`` = identity.
        stamps: F float64 seconds (frame / fps).
        T_wo: F x (N+1) x 4 x 4 float64 object-to-world per frame; index 0 = identity.
        moving: N+1 bool; True where the object moves (index 0, background, is False).
        fps: frame rate.
        seed: generator seed (None when unknown).
        scene: the world-frame scene when available (enables ``cast_rays`` and exact poses at
            fractional times); None for clips read from disk without ``scene.json``.
        info: free-form metadata (e.g. the generating config).
    """

    rgb: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    K: np.ndarray
    T_wc: np.ndarray
    stamps: np.ndarray
    T_wo: np.ndarray
    moving: np.ndarray
    fps: float
    seed: int | None = None
    scene: Scene | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def __iter__(self) -> Iterator[Frame]:
        return (self.frame(i) for i in range(len(self)))

    @property
    def height(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[2])

    @property
    def num_objects(self) -> int:
        return int(self.T_wo.shape[1] - 1)

    def frame(self, i: int) -> Frame:
        """Frame i as a ``fourd_ros.core.types.Frame`` (with GT depth, K and pose, and the
        floor for a 'ground' camera: what a robot knows of its camera's mounting)."""
        return Frame(stamp=float(self.stamps[i]), rgb=self.rgb[i], depth=self.depth[i],
                     K=self.K.copy(), T_wc_gt=self.T_wc[i].copy(), name=f'{i:06d}', index=i,
                     ground=self.ground_plane(i))

    def ground_plane(self, i: int) -> GroundPlane | None:
        """The floor under frame i's camera (up vector in the camera frame, height in metres)
        for clips of a 'ground' camera with their scene; None otherwise."""
        if self.scene is None or self.info.get('config', {}).get('camera_motion') != 'ground':
            return None
        room = self.scene.room
        T_rc = invert_pose(room.T_wr) @ self.T_wc[i]
        # room y points down and the floor is at y = +half height
        return GroundPlane(up=T_rc[:3, :3].T @ np.array([0.0, -1.0, 0.0]),
                           height=float(room.half_extents[1] - T_rc[1, 3]))

    def _rays_cam(self) -> np.ndarray:
        """H x W x 3 camera-frame rays K^-1 [u, v, 1] through the pixel centres (z = 1)."""
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64),
                           np.arange(self.height, dtype=np.float64))
        pix = np.stack([u, v, np.ones_like(u)], axis=-1)
        return pix @ np.linalg.inv(self.K).T

    def points_world(self, i: int) -> np.ndarray:
        """H x W x 3 float64 world positions of frame i's pixels at time t_i (metres)."""
        pc = self._rays_cam() * self.depth[i][..., None].astype(np.float64)
        T = self.T_wc[i]
        return pc @ T[:3, :3].T + T[:3, 3]

    def dynamic_mask(self, i: int) -> np.ndarray:
        """H x W bool: pixels of frame i that belong to a moving object."""
        return self.moving[self.instance[i]]

    def project(self, j: int, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points into camera j: (... x 2 pixel coordinates (u, v), ... z)."""
        T = invert_pose(self.T_wc[j])
        pc = points_world @ T[:3, :3].T + T[:3, 3]
        z = pc[..., 2]
        with np.errstate(divide='ignore', invalid='ignore'):
            uvw = pc @ self.K.T
            uv = uvw[..., :2] / z[..., None]
        return uv, z

    def object_poses_at(self, t: float) -> np.ndarray:
        """(N+1) x 4 x 4 object-to-world poses at time t (seconds).

        Exact from the scene's trajectories when ``scene`` is set; otherwise interpolated
        between the bracketing frames (linear translation, slerp rotation) and only defined
        within [stamps[0], stamps[-1]].
        """
        if self.scene is not None:
            return self.scene.object_poses(t)
        st = self.stamps
        if not st[0] - 1e-9 <= t <= st[-1] + 1e-9:
            raise ValueError(f'time {t} outside the clip [{st[0]}, {st[-1]}] and no scene')
        j = int(np.clip(np.searchsorted(st, t, side='right') - 1, 0, len(st) - 1))
        if j == len(st) - 1 or abs(t - st[j]) < 1e-12:
            return self.T_wo[j].copy()
        a = (t - st[j]) / (st[j + 1] - st[j])
        out = np.tile(np.eye(4), (self.num_objects + 1, 1, 1))
        for k in range(1, self.num_objects + 1):
            T0, T1 = self.T_wo[j, k], self.T_wo[j + 1, k]
            dR = Rotation.from_matrix(T1[:3, :3] @ T0[:3, :3].T).as_rotvec()
            out[k, :3, :3] = Rotation.from_rotvec(a * dR).as_matrix() @ T0[:3, :3]
            out[k, :3, 3] = (1 - a) * T0[:3, 3] + a * T1[:3, 3]
        return out

    def _move(self, i: int, poses_to: np.ndarray) -> np.ndarray:
        P = self.points_world(i)
        inst = self.instance[i]
        for k in range(1, self.num_objects + 1):
            if not self.moving[k]:
                continue
            m = inst == k
            if not m.any():
                continue
            M = poses_to[k] @ invert_pose(self.T_wo[i, k])
            P[m] = P[m] @ M[:3, :3].T + M[:3, 3]
        return P

    def positions_at_time(self, i: int, t: float) -> np.ndarray:
        """H x W x 3 world positions at time t (seconds) of the points seen in frame i."""
        return self._move(i, self.object_poses_at(t))

    def points_at(self, i: int, j: int, rel_tol: float = 0.01, abs_tol: float = 0.01,
                  exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Where the points seen in frame i are at time t_j, and whether frame j sees them.

        A point of instance k is visible in frame j when it projects inside image j in front of
        the camera, the instance rendered at the nearest pixel is k, and the rendered depth there
        agrees with the point's camera-j depth within ``rel_tol * z + abs_tol`` metres. With
        ``exact`` and a scene, the ray of camera j through the point's exact projection must
        also hit the point first (this removes the points just behind a silhouette that the
        depth tolerance lets through).

        Returns:
            (H x W x 3 float64 world positions at t_j, H x W bool visibility in frame j).
        """
        P = self._move(i, self.T_wo[j])
        uv, z = self.project(j, P)
        ok = finite_rows(uv) & (z > _T_MIN)
        ui = np.full(z.shape, -1, np.int64)
        vi = np.full(z.shape, -1, np.int64)
        ui[ok] = np.rint(uv[ok, 0]).astype(np.int64)
        vi[ok] = np.rint(uv[ok, 1]).astype(np.int64)
        ok &= (ui >= 0) & (ui < self.width) & (vi >= 0) & (vi < self.height)
        vis = np.zeros(z.shape, bool)
        d = self.depth[j][vi[ok], ui[ok]]
        same = self.instance[j][vi[ok], ui[ok]] == self.instance[i][ok]
        vis[ok] = same & (np.abs(d - z[ok]) <= rel_tol * z[ok] + abs_tol)
        if exact and self.scene is not None and vis.any():
            tt, inst, _ = self.cast_rays(j, uv[vis])
            zv = z[vis]
            # float32 depths put P_i within ~1e-7 z of the surface; grazing rays amplify it
            vis[vis] = (inst == self.instance[i][vis]) & (np.abs(tt - zv) <= 1e-4 * zv + 1e-6)
        return P, vis

    def cast_rays(self, i: int, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cast rays of camera i through arbitrary (sub)pixel coordinates at time t_i.

        Args:
            i: frame index.
            pixels: N x 2 float (u, v) pixel coordinates.

        Returns:
            (N depths (camera z, metres), N int32 instance ids, N x 3 world hit points).
        """
        if self.scene is None:
            raise RuntimeError('cast_rays needs the scene geometry (clip has no scene)')
        pixels = np.asarray(pixels, np.float64).reshape(-1, 2)
        pix = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1)
        T = self.T_wc[i]
        dirs = pix @ np.linalg.inv(self.K).T @ T[:3, :3].T
        tt, inst = self.scene.trace(T[:3, 3], dirs, float(self.stamps[i]))
        return tt, inst, T[:3, 3] + tt[:, None] * dirs


# ---------------------------------------------------------------------------------------------
# sampling


def _u(rng: np.random.Generator, r: tuple[float, float], size: int | None = None) -> Any:
    return rng.uniform(r[0], r[1], size)


def _euler_yxz(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """F x 3 x 3 rotations R_y(yaw) R_x(pitch) R_z(roll) (y = vertical, down)."""
    return Rotation.from_euler('YXZ', np.stack([yaw, pitch, roll], axis=1)).as_matrix()


def _sample_intrinsics(cfg: SceneConfig, rng: np.random.Generator) -> np.ndarray:
    hfov = np.deg2rad(_u(rng, cfg.hfov_deg))
    fx = 0.5 * cfg.width / np.tan(hfov / 2)
    fy = fx * rng.uniform(0.98, 1.02)
    cx = (cfg.width - 1) / 2 + rng.uniform(-0.03, 0.03) * cfg.width
    cy = (cfg.height - 1) / 2 + rng.uniform(-0.03, 0.03) * cfg.height
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)


def _sinusoid(rng: np.random.Generator, t: np.ndarray, amp: float, n: int = 1) -> np.ndarray:
    """Zero-at-t=0 sum of two low-frequency sinusoids per column: len(t) x n."""
    out = np.zeros((len(t), n))
    for _ in range(2):
        a = rng.uniform(0, amp, n)
        f = rng.uniform(0.1, 0.6, n)
        ph = rng.uniform(0, 2 * np.pi, n)
        out += a * (np.sin(2 * np.pi * f * t[:, None] + ph) - np.sin(ph))
    return out


def _sample_camera(cfg: SceneConfig, rng: np.random.Generator, half: np.ndarray,
                   stamps: np.ndarray) -> np.ndarray:
    """F x 4 x 4 camera-to-room poses inside the room (wall margin respected)."""
    lim = half - _WALL_MARGIN
    p0 = np.array([rng.uniform(-0.4, 0.4) * lim[0], 0.0, rng.uniform(-0.4, 0.4) * lim[2]])
    p0[1] = np.clip(half[1] - rng.uniform(1.2, 1.8), -lim[1], lim[1])
    yaw0 = rng.uniform(0, 2 * np.pi)
    pitch0 = np.deg2rad(rng.uniform(-10, 10))
    roll0 = np.deg2rad(rng.uniform(-3, 3))
    ground = cfg.camera_motion == 'ground'
    if ground:  # drawn after the other modes' draws: their clips stay as they were
        p0[1] = half[1] - _u(rng, cfg.ground_height)
        pitch0 = -np.deg2rad(_u(rng, cfg.ground_pitch_deg))
        roll0 = 0.0
    F = len(stamps)
    pos = np.tile(p0, (F, 1))
    yaw = np.full(F, yaw0)
    pitch = np.full(F, pitch0)
    roll = np.full(F, roll0)
    if cfg.camera_motion != 'static':
        rate = np.deg2rad(rng.uniform(-1, 1) * cfg.camera_angular_speed_deg)
        yaw = yaw + rate * stamps + _sinusoid(rng, stamps, np.deg2rad(10))[:, 0]
        if not ground:
            pitch = pitch + _sinusoid(rng, stamps, np.deg2rad(5))[:, 0]
            roll = roll + _sinusoid(rng, stamps, np.deg2rad(2))[:, 0]
    if cfg.camera_motion in ('smooth', 'ground'):
        heading = rng.uniform(0, 2 * np.pi)
        v = _u(rng, cfg.camera_speed) * np.array(
            [np.cos(heading), rng.uniform(-0.1, 0.1), np.sin(heading)])
        disp = v * stamps[:, None] + _sinusoid(rng, stamps, 0.15, 3)
        if ground:  # on the floor's plane
            disp[:, 1] = 0.0
        # shrink the displacement so that the whole path stays inside the margin box
        with np.errstate(divide='ignore', invalid='ignore'):
            room_left = np.where(disp > 0, (lim - p0) / disp, (-lim - p0) / disp)
        room_left[~np.isfinite(room_left) | (disp == 0)] = np.inf
        pos = p0 + min(1.0, float(room_left.min())) * disp
    T = np.tile(np.eye(4), (F, 1, 1))
    T[:, :3, :3] = _euler_yxz(yaw, pitch, roll)
    T[:, :3, 3] = pos
    return T


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()


def _sample_object(cfg: SceneConfig, rng: np.random.Generator, half: np.ndarray,
                   T_rc: np.ndarray, stamps: np.ndarray, others: list[RigidObject]
                   ) -> RigidObject | None:
    """A random object (room frame) in view at some frame, inside the room, away from the
    camera and not intersecting ``others`` at any frame; None when no placement was found."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    if shape == 'box':
        h = _u(rng, cfg.object_size, 3) / 2
    elif shape == 'sphere':
        h = np.full(3, _u(rng, cfg.object_size) / 2)
    else:
        r = _u(rng, cfg.object_size) / 2
        h = np.array([r, _u(rng, cfg.object_size) / 2, r])
    static = rng.random() < cfg.static_object_prob
    tex = TextureBinding(int(rng.integers(cfg.num_textures)), float(rng.uniform(0.3, 1.2)),
                         tuple(float(x) for x in rng.random(2)))
    obj = RigidObject(shape, h, np.zeros(3), _random_rotation(rng), texture=tex)
    rb = obj.bounding_radius
    for _ in range(150):
        f = int(rng.integers(len(stamps)))
        ray = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3), 1.0])
        p_ref = T_rc[f, :3, :3] @ (ray / np.linalg.norm(ray)) * rng.uniform(1.2, 4.0)
        p_ref += T_rc[f, :3, 3]
        if not static:
            dv = rng.normal(size=3) * np.array([1.0, 0.3, 1.0])
            obj.velocity = _u(rng, cfg.object_speed) * dv / np.linalg.norm(dv)
            obj.amplitude = rng.uniform(0, 0.25, 3) * (rng.random() < 0.6)
            obj.frequency = float(rng.uniform(0.3, 1.0))
            obj.phase = float(rng.uniform(0, 2 * np.pi))
            axis = rng.normal(size=3)
            w = np.deg2rad(_u(rng, cfg.object_angular_speed_deg))
            obj.omega = w * axis / np.linalg.norm(axis)
        obj.c0 = np.zeros(3)
        obj.c0 = p_ref - obj.centre(stamps[f])
        c = obj.centre(stamps)
        inside = np.all(np.abs(c) <= half - rb)
        clear = np.linalg.norm(c - T_rc[:, :3, 3], axis=1).min() >= rb + _CAMERA_CLEARANCE
        # bounding spheres never overlap, so objects never interpenetrate
        apart = all(np.linalg.norm(c - o.centre(stamps), axis=1).min() >= rb + o.bounding_radius
                    for o in others)
        if inside and clear and apart:
            return obj
    return None


def sample_scene(cfg: SceneConfig, rng: np.random.Generator
                 ) -> tuple[Scene, np.ndarray, np.ndarray]:
    """Sample a random scene and camera path.

    Returns:
        (world-frame scene, 3x3 intrinsics K, F x 4 x 4 camera-to-world poses with T_wc[0] = I).
    """
    stamps = np.arange(cfg.frames) / cfg.fps
    side = _u(rng, cfg.room_size, 2)
    half = np.array([side[0], _u(rng, cfg.room_height), side[1]]) / 2
    textures = [make_texture(rng, cfg.texture_size, photo_prob=cfg.photo_texture_prob)
                for _ in range(cfg.num_textures)]
    perm = rng.permutation(max(6, cfg.num_textures))[:6] % cfg.num_textures
    faces = [TextureBinding(int(perm[f]), float(rng.uniform(1.0, 3.0)),
                            tuple(float(x) for x in rng.random(2))) for f in range(6)]
    K = _sample_intrinsics(cfg, rng)
    T_rc = _sample_camera(cfg, rng, half, stamps)
    objects = []
    for _ in range(int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))):
        obj = _sample_object(cfg, rng, half, T_rc, stamps, objects)
        if obj is not None:
            objects.append(obj)
    light = np.array([rng.uniform(-0.5, 0.5), -1.0, rng.uniform(-0.5, 0.5)])
    # re-express everything in the first camera's frame
    T_wr = invert_pose(T_rc[0])
    R_wr = T_wr[:3, :3]
    scene = Scene(room=Room(T_wr, half, faces), objects=[o.transformed(T_wr) for o in objects],
                  textures=textures, light_dir=R_wr @ light, ambient=cfg.ambient)
    T_wc = T_wr @ T_rc
    T_wc[0] = np.eye(4)
    return scene, K, T_wc


def render_clip(scene: Scene, K: np.ndarray, T_wc: np.ndarray, stamps: np.ndarray,
                width: int, height: int, fps: float | None = None, seed: int | None = None,
                rgb_noise_std: float = 0.0, info: dict | None = None) -> SyntheticClip:
    """Render a clip of a world-frame scene.

    Args:
        scene: scene in the world frame (with textures).
        K: 3x3 intrinsics.
        T_wc: F x 4 x 4 camera-to-world poses (the camera must be inside the room).
        stamps: F times in seconds.
        width, height: image size in pixels.
        fps: frame rate stored in the clip (default: from the stamps, else 10).
        seed: seed of the pixel noise and stored in the clip.
        rgb_noise_std: std of additive Gaussian pixel noise in 0..255 units.
        info: metadata stored in the clip.
    """
    K = np.asarray(K, np.float64)
    T_wc = np.asarray(T_wc, np.float64)
    stamps = np.asarray(stamps, np.float64)
    F = len(stamps)
    if fps is None:
        fps = float(1.0 / np.median(np.diff(stamps))) if F > 1 else 10.0
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays_c = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1) @ np.linalg.inv(K).T
    rgb = np.empty((F, height, width, 3), np.uint8)
    depth = np.empty((F, height, width), np.float32)
    instance = np.empty((F, height, width), np.int32)
    T_wo = np.empty((F, len(scene.objects) + 1, 4, 4))
    noise_rng = np.random.default_rng([0 if seed is None else seed, 7919])
    for f in range(F):
        poses = scene.object_poses(stamps[f])
        origin = T_wc[f, :3, 3]
        dirs = rays_c @ T_wc[f, :3, :3].T
        tt, inst = scene.trace(origin, dirs, stamps[f], poses)
        col = scene.shade(origin, dirs, tt, inst, poses) * 255.0
        if rgb_noise_std > 0:
            col += noise_rng.normal(0.0, rgb_noise_std, col.shape).astype(np.float32)
        rgb[f] = np.clip(np.rint(col), 0, 255).astype(np.uint8).reshape(height, width, 3)
        depth[f] = tt.reshape(height, width)
        instance[f] = inst.reshape(height, width)
        T_wo[f] = poses
    moving = np.array([False] + [o.moving for o in scene.objects])
    return SyntheticClip(rgb=rgb, depth=depth, instance=instance, K=K, T_wc=T_wc, stamps=stamps,
                         T_wo=T_wo, moving=moving, fps=float(fps), seed=seed, scene=scene,
                         info=dict(info or {}))


def generate_clip(cfg: SceneConfig) -> SyntheticClip:
    """Sample and render a random clip; a deterministic function of ``cfg``."""
    rng = np.random.default_rng(cfg.seed)
    scene, K, T_wc = sample_scene(cfg, rng)
    stamps = np.arange(cfg.frames) / cfg.fps
    info = {'config': json_safe(dataclasses.asdict(cfg))}
    return render_clip(scene, K, T_wc, stamps, cfg.width, cfg.height, fps=cfg.fps, seed=cfg.seed,
                       rgb_noise_std=cfg.rgb_noise_std, info=info)


if __name__ == '__main__':
    t0 = time.perf_counter()
    clip = generate_clip(SceneConfig(frames=24, width=256, height=192, seed=0))
    dt = time.perf_counter() - t0
    print(f'24-frame 256x192 clip with {clip.num_objects} objects: {dt:.2f} s')
