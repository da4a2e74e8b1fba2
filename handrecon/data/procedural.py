"""The procedural stand-in dataset: rendered one- and two-hand scenes with exact MANO labels.

Each sample is drawn independently from `np.random.default_rng([seed, index])`, so the dataset
is deterministic by seed, any sample can be regenerated alone, and an interrupted run resumes
by skipping the images already on disk. Scenes: named grasp types within joint limits, two-hand
interactions (apart, touching, clasped, overlapping), a forearm on each wrist, skin tones,
textured backgrounds, Lambert lighting and random cameras. Labels are written in the
InterHand2.6M format (world-frame MANO parameters, cameras with campos in mm and camrot), so
the InterHand2.6M reader reads the result.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from ..config import FieldError, check_fields
from ..hand_model.articulation import GRASPS, JointAxes, joint_axes, sample_hand_pose
from ..hand_model.constants import NUM_VERTS
from ..hand_model.mano import SIDES, HandModel
from ..hand_model.topology import boundary_loops
from .backgrounds import BACKGROUNDS

INTERACTIONS = ("apart", "touching", "clasped", "overlapping")
# Which side of a hand faces the camera. "any": a uniformly random orientation; the named views
# turn the hand so that side faces the camera (palm, back of the hand, thumb side, little-finger
# side, fingertips), tilted by up to `view_tilt` and turned about the view axis by `roll_range`.
VIEWS = ("any", "palm", "back", "thumb", "little", "fingertips")
SPLITS = ("train", "val", "test")
# The side of the image the left hand takes from the right one, as a sign on the camera's x
# axis (right in the image); "any" leaves it random.
LAYOUTS = {"any": 0.0, "facing": 1.0, "egocentric": -1.0}
# Albedo of skin from light to dark (linear-ish RGB in [0, 1]).
SKIN_TONES = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.92, 0.72, 0.60],
        [0.85, 0.64, 0.50],
        [0.76, 0.55, 0.42],
        [0.64, 0.45, 0.33],
        [0.52, 0.36, 0.26],
        [0.40, 0.27, 0.20],
        [0.29, 0.20, 0.15],
    ]
)


@dataclass
class ProceduralConfig:
    """How procedural scenes are drawn. Distances in metres, angles in radians."""

    image_size: tuple[int, int] = (256, 256)  # (H, W); >= 1 each
    single_hand_prob: float = 0.3  # in [0, 1]
    interaction_weights: tuple[float, float, float, float] = (0.3, 0.3, 0.2, 0.2)  # as INTERACTIONS; >= 0, not all 0
    grasps: tuple[str, ...] = tuple(GRASPS)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test; >= 0, not all 0 (normalised)
    focal_range: tuple[float, float] = (1.4, 2.4)  # focal length in units of the image width; 0 < lo <= hi
    fill_range: tuple[float, float] = (0.55, 0.9)  # fraction of the image the hands span; 0 < lo <= hi
    forearm_length: tuple[float, float] = (0.10, 0.22)  # 0 <= lo <= hi
    shape_std: float = 0.8  # >= 0
    jpeg_quality: int = 92  # in [1, 100]
    batch_size: int = 16  # >= 1
    backgrounds: tuple[str, ...] = field(default_factory=lambda: tuple(BACKGROUNDS))
    views: tuple[str, ...] = ("any",)  # of VIEWS, drawn uniformly per hand
    view_tilt: float = 0.4  # named views: largest tilt away from the named side, in [0, pi/2]
    roll_range: tuple[float, float] = (-math.pi, math.pi)  # named views: turn about the view axis; 0 = fingers up; lo <= hi
    # where the left hand lies beside the right one in the image, in apart, touching and
    # overlapping scenes: "any" direction, "facing" (on the image right, as a person facing the
    # camera holds them) or "egocentric" (on the image left, as seen from the person's own eyes)
    layout: str = "any"

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "image_size", "batch_size")
        for name, allowed in (("views", VIEWS), ("grasps", tuple(GRASPS)), ("backgrounds", tuple(BACKGROUNDS))):
            values = getattr(self, name)
            if not values or any(v not in allowed for v in values):
                raise FieldError(name, f"a non-empty list of {', '.join(allowed)}", values)
        if not 0 <= self.view_tilt <= math.pi / 2:
            raise FieldError("view_tilt", "in [0, pi/2]", self.view_tilt)
        check_fields(self, "lo <= hi", "roll_range")
        if self.layout not in LAYOUTS:
            raise FieldError("layout", f"one of {', '.join(LAYOUTS)}", self.layout)
        check_fields(self, "in [0, 1]", "single_hand_prob")
        check_fields(self, ">= 0", "interaction_weights", "split_fractions", "forearm_length", "shape_std")
        for name in ("interaction_weights", "split_fractions"):
            if not any(getattr(self, name)):
                raise FieldError(name, "weights with at least one > 0", getattr(self, name))
        check_fields(self, "> 0", "focal_range", "fill_range")
        check_fields(self, "lo <= hi", "focal_range", "fill_range", "forearm_length")
        check_fields(self, "in [1, 100]", "jpeg_quality")


@dataclass
class Scene:
    """Everything needed to render one sample and write its labels (world frame, metres)."""

    index: int
    split: str
    hand_type: str  # 'right', 'left' or 'interacting'
    interaction: str  # one of INTERACTIONS, or 'single'
    grasps: tuple[str, str]  # per hand ('' where absent)
    valid: np.ndarray  # (2,) bool, right then left
    pose: np.ndarray  # (2, 48) world axis-angle, hand pose relative to MANO's mean
    shape: np.ndarray  # (2, 10)
    transl: np.ndarray  # (2, 3)
    cam_rot: np.ndarray  # (3, 3) world -> camera rotation (InterHand2.6M camrot)
    cam_pos: np.ndarray  # (3,) camera centre in the world, metres (campos / 1000)
    focal: np.ndarray  # (2,) pixels
    princpt: np.ndarray  # (2,) pixels
    skin: np.ndarray  # (2, 3) albedo
    forearm: np.ndarray  # (2,) forearm length
    light_dir: np.ndarray  # (3,) camera frame, unit, pointing from the scene to the light
    ambient: float
    background: str
    background_seed: int


def assign_splits(num: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Deterministic split per sample: a seeded permutation cut by `fractions`."""
    rank = np.argsort(np.random.default_rng([seed, 2**31 - 1]).permutation(num))
    cut = np.cumsum(np.array(fractions) / np.sum(fractions)) * num
    return [SPLITS[i] for i in np.searchsorted(cut, rank, side="right")]


def _look_at(forward: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """World->camera rotation whose rows are the camera's x (right), y (down), z (forward)."""
    z = forward / np.linalg.norm(forward)
    tmp = rng.normal(size=3)
    y = tmp - (tmp @ z) * z
    y /= np.linalg.norm(y)
    return np.stack([np.cross(y, z), y, z])


class SceneSampler:
    """Draws scenes for one hand model (its joint axes define the grasp poses)."""

    def __init__(self, hand_model: HandModel, cfg: ProceduralConfig, seed: int, num: int):
        self.hand_model = hand_model
        self.cfg = cfg
        self.seed = seed
        self.num = num
        self.axes: dict[str, JointAxes] = {s: joint_axes(hand_model.layers[s]) for s in SIDES}
        self.means = {s: hand_model.layers[s].hand_mean.numpy().astype(np.float64) for s in SIDES}
        self.frames, self.view_axes = {}, {}
        for s in SIDES:
            self.frames[s], self.view_axes[s] = _hand_frame(hand_model.layers[s], self.axes[s])
        self.splits = assign_splits(num, cfg.split_fractions, seed)

    def _mesh(self, side: str, pose: np.ndarray, shape: np.ndarray, transl: np.ndarray):
        t = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]  # noqa: E731
        with torch.no_grad():
            out = self.hand_model.hand(side, betas=t(shape), global_orient=t(pose[:3]), hand_pose=t(pose[3:]), transl=t(transl))
        return out.vertices[0].double().numpy(), out.joints[0].double().numpy()

    def sample(self, index: int) -> Scene:
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, index])
        if rng.random() < cfg.single_hand_prob:
            valid = np.array([True, False]) if rng.random() < 0.5 else np.array([False, True])
            interaction = "single"
        else:
            valid = np.array([True, True])
            interaction = str(rng.choice(INTERACTIONS, p=np.array(cfg.interaction_weights) / sum(cfg.interaction_weights)))
        hand_type = "interacting" if valid.all() else SIDES[int(np.argmax(valid))]
        shape = np.clip(rng.normal(scale=cfg.shape_std, size=10), -2.5, 2.5)
        shapes = np.stack([shape, shape if rng.random() < 0.9 else np.clip(rng.normal(scale=cfg.shape_std, size=10), -2.5, 2.5)])
        grasps = [str(rng.choice(cfg.grasps)) for _ in SIDES]
        if interaction == "clasped":
            grasps = ["grasp", "grasp"]
        pose = np.zeros((2, 48))
        # the world is arbitrary: with named views the camera is drawn first and each hand is
        # turned to show the camera its view (only "any": the hands first, then the camera)
        named = set(cfg.views) != {"any"}
        views = [str(rng.choice(cfg.views)) for _ in SIDES] if named else ["any", "any"]
        cam_rot = Rotation.random(random_state=rng).as_matrix() if named else None
        for h, side in enumerate(SIDES):
            pose[h, 3:] = sample_hand_pose(rng, self.axes[side], self.means[side], grasps[h])
            if cam_rot is None:
                pose[h, :3] = Rotation.random(random_state=rng).as_rotvec()
            else:
                in_cam = self._view_rotation(rng, views[h], side)  # camera <- hand frame
                pose[h, :3] = Rotation.from_matrix(cam_rot.T @ in_cam @ self.frames[side].T).as_rotvec()
        if interaction == "clasped":
            # palms face each other, fingers opposite (a handshake-like clasp): the right hand's
            # frame turned half a revolution about MANO's finger axis (x)
            pose[1, :3] = (Rotation.from_rotvec(pose[0, :3]) * Rotation.from_rotvec([math.pi, 0, 0])).as_rotvec()
        at_origin = [self._mesh(s, pose[h], shapes[h], np.zeros(3)) for h, s in enumerate(SIDES)]
        if cam_rot is None:
            # a forearm pointing back at the camera would hide the scene behind its stump
            arms = [(j[0] - j[9]) / np.linalg.norm(j[0] - j[9]) for (_, j), ok in zip(at_origin, valid) if ok]
            for _ in range(1000):
                forward = rng.normal(size=3)
                forward /= np.linalg.norm(forward)
                if all(a @ forward > -0.3 for a in arms):
                    break
        else:
            forward = cam_rot[2]
        if cam_rot is None and cfg.layout != "any":
            cam_rot = _look_at(forward, rng)  # the layout needs the image's x axis
        transl = np.zeros((2, 3))
        if interaction != "single":
            towards = None if cfg.layout == "any" else cam_rot[0] * LAYOUTS[cfg.layout]
            transl[1] = self._left_offset(rng, interaction, at_origin, forward, towards)
        verts = [v + t for (v, _), t in zip(at_origin, transl)]
        pts = np.concatenate([v for v, ok in zip(verts, valid) if ok])
        centre = (pts.min(0) + pts.max(0)) / 2
        radius = np.linalg.norm(pts - centre, axis=1).max()
        h_img, w_img = cfg.image_size
        focal = rng.uniform(*cfg.focal_range) * w_img
        fill = rng.uniform(*cfg.fill_range)
        distance = max(focal * radius / (fill * min(h_img, w_img) / 2), 2.5 * radius)
        if cam_rot is None:
            cam_rot = _look_at(forward, rng)
        cam_pos = centre - forward * distance
        princpt = np.array([w_img, h_img]) / 2 - 0.5 + rng.uniform(-0.03, 0.03, size=2) * np.array([w_img, h_img])
        tone = rng.integers(len(SKIN_TONES))
        tones = [tone, tone if rng.random() < 0.85 else rng.integers(len(SKIN_TONES))]
        skin = np.clip(SKIN_TONES[tones] * rng.uniform(0.92, 1.08, size=(2, 3)), 0, 1)
        light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8), -1.0])  # towards the camera side
        return Scene(
            index=index,
            split=self.splits[index],
            hand_type=hand_type,
            interaction=interaction,
            grasps=tuple(g if ok else "" for g, ok in zip(grasps, valid)),
            valid=valid,
            pose=pose * valid[:, None],
            shape=shapes * valid[:, None],
            transl=transl * valid[:, None],
            cam_rot=cam_rot,
            cam_pos=cam_pos,
            focal=np.array([focal, focal]),
            princpt=princpt,
            skin=skin,
            forearm=rng.uniform(*cfg.forearm_length, size=2),
            light_dir=light / np.linalg.norm(light),
            ambient=float(rng.uniform(0.25, 0.5)),
            background=str(rng.choice(cfg.backgrounds)),
            background_seed=int(rng.integers(2**31)),
        )

    def _view_rotation(self, rng: np.random.Generator, view: str, side: str) -> np.ndarray:
        """Camera <- hand-frame rotation showing the camera `view` of the `side` hand.

        A named view turns its side of the hand to the camera with the fingers up in the image
        (camera frame x right, y down, z forward; the back of the hand up for "fingertips"),
        then the hand turns about the view axis by a roll from `roll_range` and tilts by up to
        `view_tilt` about an axis across the view; "any" is a uniformly random rotation. A draw
        that would point the forearm at the camera is drawn again.
        """
        if view != "any":
            rolled = Rotation.from_rotvec([0, 0, rng.uniform(*self.cfg.roll_range)]).as_matrix() @ self.view_axes[side][view]
        for _ in range(100):
            if view == "any":
                rot = Rotation.random(random_state=rng).as_matrix()
            else:
                axis = np.array([*rng.normal(size=2), 0.0])
                rot = Rotation.from_rotvec(axis / np.linalg.norm(axis) * rng.uniform(0, self.cfg.view_tilt)).as_matrix() @ rolled
            if -rot[2, 0] > -0.3:  # the forearm points along -x of the hand frame
                break
        return rot

    def _left_offset(self, rng, interaction: str, at_origin, forward: np.ndarray, towards: np.ndarray | None = None) -> np.ndarray:
        """Left-hand translation for a two-hand interaction, given both meshes at the origin.

        `towards` (a unit vector across the view) is the side the left hand's palm centre takes
        from the right one's, except in a clasp; None leaves the side random."""
        (right_v, right_j), (left_v, left_j) = at_origin
        palm = lambda j: j[[0, 5, 9, 13, 17]].mean(0)  # noqa: E731  wrist and the five knuckles
        base = palm(right_j) - palm(left_j)  # left palm centre onto the right palm centre
        if interaction == "clasped":
            normal = np.cross(right_j[5] - right_j[0], right_j[17] - right_j[0])
            normal /= np.linalg.norm(normal)
            side = 1.0 if (left_v.mean(0) - palm(left_j)) @ normal >= 0 else -1.0
            return base - side * normal * rng.uniform(0.03, 0.04)
        if interaction == "overlapping":
            # one hand behind the other along the view, with a small sideways shift
            lateral = rng.normal(size=3)
            lateral -= (lateral @ forward) * forward
            direction = forward * rng.choice([-1.0, 1.0]) + lateral / np.linalg.norm(lateral) * rng.uniform(0.0, 0.5)
            gap = rng.uniform(0.01, 0.04)
        else:
            direction = rng.normal(size=3)
            direction -= 0.7 * (direction @ forward) * forward  # mostly across the view
            gap = rng.uniform(0.0, 0.006) if interaction == "touching" else rng.uniform(0.03, 0.12)
        if towards is not None:
            direction += 2 * max(0.0, -(direction @ towards)) * towards  # mirrored onto the `towards` side
        direction /= np.linalg.norm(direction)
        return base + _distance_along(right_v, left_v + base, direction, gap) * direction


def _hand_frame(layer, axes: JointAxes) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A hand's frame in its model's coordinates, and each named view's camera <- frame rotation.

    The frame is the columns of a rotation matrix: x from the wrist to the middle knuckle (along
    the fingers), y out of the palm (the palmar direction of the finger bases, from
    `joint_axes`), z = x cross y (towards the thumb on one side, the little finger on the other).
    Rest shape; the pose of the fingers does not move it. A view's rotation turns the frame axis
    it names towards the camera (camera -z) and its "up" axis up in the image (camera -y).
    """
    joints = layer.J_regressor.detach().double().cpu().numpy() @ layer.v_template.detach().double().cpu().numpy()
    x = joints[4] - joints[0]  # MANO order: 0 wrist, 4 middle-finger base
    x /= np.linalg.norm(x)
    palmar = axes.spread[[0, 3, 6, 9]].mean(0) * (1 if layer.is_rhand else -1)  # finger bases
    y = palmar - (palmar @ x) * x
    y /= np.linalg.norm(y)
    frame = np.stack([x, y, np.cross(x, y)], axis=1)
    thumb = np.sign((joints[13] - joints[0]) @ frame[:, 2])  # 13: thumb base
    ex, ey, ez = np.eye(3)
    toward_up = {"palm": (ey, ex), "back": (-ey, ex), "thumb": (thumb * ez, ex), "little": (-thumb * ez, ex), "fingertips": (ex, -ey)}
    camera = np.stack([-ez, -ey, np.cross(-ez, -ey)], axis=1)  # where (toward, up, toward x up) go
    views = {name: camera @ np.stack([t, u, np.cross(t, u)], axis=1).T for name, (t, u) in toward_up.items()}
    return frame, views


def _distance_along(fixed: np.ndarray, moving: np.ndarray, direction: np.ndarray, gap: float, tol: float = 1e-6) -> float:
    """Where `moving` stops when brought in from far along -`direction` (unit) towards `fixed`,
    which it overlaps at s = 0: the largest s > 0 with `moving + s * direction` `gap` away from
    `fixed` (nearest vertices).

    Sphere tracing: the nearest-vertex distance changes by at most |ds| when s changes, so each
    step down by (distance - gap) stays outside the gap and the pair never passes through each
    other. Searching up from s = 0 instead stops inside the other hand wherever the vertices of
    the two overlapping meshes happen to lie `gap` apart. A gap smaller than the meshes' vertex
    spacing can let the vertices slip past each other (s reaches 0); the search is then made
    again with the gap doubled.
    """
    tree = cKDTree(fixed)
    reach = lambda points: np.linalg.norm(points - points.mean(0), axis=1).max()  # noqa: E731
    start = float(np.linalg.norm(fixed.mean(0) - moving.mean(0)) + reach(fixed) + reach(moving) + gap)  # bounding spheres apart
    while True:
        s = start
        while s > 0:
            step = float(tree.query(moving + s * direction)[0].min()) - gap
            if step <= tol:
                return s
            s -= step
        gap *= 2


# --- forearms ------------------------------------------------------------------------------------
def forearm_faces(loop: list[int], rings: int, first_vertex: int) -> np.ndarray:
    """Faces of a tube that starts at a hand's wrist loop and ends in a cap.

    Vertex layout of the tube: `rings` rings of len(loop) vertices, then the cap centre; ring 0
    is the wrist loop itself (indices in `loop`), the rest are numbered from `first_vertex`.
    Winding continues the hand's (boundary edges a->b of the hand become b->a here).
    """
    n = len(loop)
    ring = lambda r, i: loop[i % n] if r == 0 else first_vertex + (r - 1) * n + i % n  # noqa: E731
    faces = []
    for r in range(rings):
        for i in range(n):
            a, b = ring(r, i), ring(r, i + 1)
            c, d = ring(r + 1, i), ring(r + 1, i + 1)
            faces += [[b, a, c], [b, c, d]]
    cap = first_vertex + rings * n
    faces += [[ring(rings, i + 1), ring(rings, i), cap] for i in range(n)]
    return np.array(faces, dtype=np.int64)


def forearm_vertices(hand_verts: torch.Tensor, hand_joints: torch.Tensor, loop: list[int], length: torch.Tensor, rings: int) -> torch.Tensor:
    """(B, rings * len(loop) + 1, 3) vertices of the tube beyond the wrist loop (ring 0 excluded).

    The tube runs from the wrist away from the middle knuckle, widening by a quarter.
    """
    wrist_loop = hand_verts[:, loop]  # (B, n, 3)
    centre = wrist_loop.mean(1, keepdim=True)
    axis = hand_joints[:, 0] - hand_joints[:, 9]
    axis = (axis / axis.norm(dim=-1, keepdim=True))[:, None]
    out = []
    for r in range(1, rings + 1):
        t = r / rings
        out.append(centre + (wrist_loop - centre) * (1 + 0.25 * t) + axis * (length[:, None, None] * t))
    cap = centre + axis * (length[:, None, None] + 0.01)
    return torch.cat(out + [cap], dim=1)


def wrist_loop(hand_model: HandModel, side: str) -> list[int]:
    """The ordered wrist boundary loop of one hand's mesh."""
    loops = boundary_loops(getattr(hand_model, f"faces_{side}").numpy())
    if len(loops) != 1:
        raise ValueError(f"expected one boundary loop (the wrist) in the {side} MANO mesh, found {len(loops)}")
    return loops[0]


# --- rendering -----------------------------------------------------------------------------------
PART_LABELS = {"background": 0, "right": 1, "left": 2, "forearm": 3}
_FOREARM_RINGS = 4


@dataclass
class SceneMeshes:
    """Fixed topology of a rendered scene: right hand, left hand, right forearm, left forearm."""

    faces: torch.Tensor  # (F, 3)
    face_part: torch.Tensor  # (F,) PART_LABELS value of each face
    loops: dict[str, list[int]]

    @classmethod
    def build(cls, hand_model: HandModel) -> "SceneMeshes":
        n = hand_model.faces_right.shape[0]
        loops = {s: wrist_loop(hand_model, s) for s in SIDES}
        tube = _FOREARM_RINGS * len(loops["right"]) + 1
        base = 2 * NUM_VERTS
        parts = [hand_model.faces_two_hand]
        for h, side in enumerate(SIDES):
            loop = [v + NUM_VERTS * h for v in loops[side]]
            f = torch.as_tensor(forearm_faces(loop, _FOREARM_RINGS, base + h * tube))
            parts.append(f)
        faces = torch.cat(parts)
        face_part = torch.cat(
            [torch.full((n,), 1), torch.full((n,), 2), torch.full((faces.shape[0] - 2 * n,), PART_LABELS["forearm"])]
        )
        return cls(faces=faces, face_part=face_part, loops=loops)


def _stack(scenes: list[Scene], name: str) -> torch.Tensor:
    return torch.as_tensor(np.stack([getattr(s, name) for s in scenes]), dtype=torch.float32)


def render_scenes(scenes: list[Scene], hand_model: HandModel, meshes: SceneMeshes, image_size: tuple[int, int]) -> dict:
    """Render a batch of scenes.

    Returns dict: image (B, H, W, 3) float in [0, 1], parts (B, H, W) uint8 PART_LABELS,
    verts_cam (B, 1556, 3) hand meshes in the camera frame (an absent hand's too, though it is
    not drawn), joints_cam (B, 42, 3), joints_world (B, 42, 3), all metres.
    """
    from ..render import render_mesh  # the renderer is only needed here
    from .backgrounds import random_background

    pose, shape, transl = _stack(scenes, "pose"), _stack(scenes, "shape"), _stack(scenes, "transl")
    cam_rot, cam_pos = _stack(scenes, "cam_rot"), _stack(scenes, "cam_pos")
    valid = torch.as_tensor(np.stack([s.valid for s in scenes]))
    to_cam = lambda x: (x - cam_pos[:, None]) @ cam_rot.transpose(1, 2)  # noqa: E731
    hands, forearms, joints = [], [], []
    with torch.no_grad():
        for h, side in enumerate(SIDES):
            out = hand_model.hand(side, betas=shape[:, h], global_orient=pose[:, h, :3], hand_pose=pose[:, h, 3:], transl=transl[:, h])
            length = _stack(scenes, "forearm")[:, h]
            hands.append(out.vertices)
            forearms.append(forearm_vertices(out.vertices, out.joints, meshes.loops[side], length, _FOREARM_RINGS))
            joints.append(out.joints)
        verts = to_cam(torch.cat(hands + forearms, dim=1))
        # an absent hand and its forearm are left out of the picture
        tube = forearms[0].shape[1]
        drawn = torch.cat([valid.repeat_interleave(NUM_VERTS, dim=1), valid.repeat_interleave(tube, dim=1)], dim=1)
        skin = _stack(scenes, "skin")
        colours = torch.cat(
            [skin[:, 0:1].expand(-1, NUM_VERTS, -1), skin[:, 1:2].expand(-1, NUM_VERTS, -1), skin[:, 0:1].expand(-1, tube, -1), skin[:, 1:2].expand(-1, tube, -1)],
            dim=1,
        )
        h_img, w_img = image_size
        background = torch.stack([random_background(s.background, h_img, w_img, s.background_seed) for s in scenes])
        ambient = torch.tensor([s.ambient for s in scenes])[:, None, None, None]
        out = render_mesh(
            verts,
            meshes.faces,
            _stack(scenes, "focal"),
            _stack(scenes, "princpt"),
            image_size,
            vertex_colors=colours,
            background=background,
            light_dir=_stack(scenes, "light_dir"),
            ambient=ambient,
            diffuse=1.0 - ambient,
            valid=drawn,
        )
        parts = torch.where(out["mask"], meshes.face_part[out["face_idx"].clamp(min=0)], 0).to(torch.uint8)
        joints_world = torch.cat(joints, dim=1)
    return {
        "image": out["image"],
        "parts": parts,
        "verts_cam": verts[:, : 2 * NUM_VERTS],
        "joints_cam": to_cam(joints_world),
        "joints_world": joints_world,
    }


# --- writing the dataset -------------------------------------------------------------------------
#: what the same config and seed draw; raised when that changes (2: hands brought to their gap from far)
SAMPLER_VERSION = 2
_STATE = "procedural.json"  # what the folder holds: seed, count, config hash; refuses mixing


def file_name(scene: Scene) -> str:
    """Image path below images/<split>/, in InterHand2.6M's Capture/seq/cam/image layout."""
    return f"Capture0/{scene.interaction}/cam{scene.index:06d}/image{scene.index:06d}.jpg"


def _label_path(out: Path, index: int) -> Path:
    return out / "labels" / f"{index:06d}.json"


def _scene_label(scene: Scene, joints_world: np.ndarray, parts: np.ndarray, image_size: tuple[int, int]) -> dict:
    """Per-sample record (JSON-able): everything the InterHand2.6M annotation files need."""
    hands = np.argwhere((parts == PART_LABELS["right"]) | (parts == PART_LABELS["left"]))
    if len(hands):
        (y0, x0), (y1, x1) = hands.min(0), hands.max(0)
        bbox = [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]
    else:  # hands fully outside the image: a box is meaningless but must exist
        bbox = [0.0, 0.0, float(image_size[1]), float(image_size[0])]
    return {
        "index": scene.index,
        "split": scene.split,
        "file_name": file_name(scene),
        "hand_type": scene.hand_type,
        "interaction": scene.interaction,
        "grasps": list(scene.grasps),
        "valid": scene.valid.tolist(),
        "mano": [
            {"pose": scene.pose[h].tolist(), "shape": scene.shape[h].tolist(), "trans": scene.transl[h].tolist()} if scene.valid[h] else None
            for h in range(2)
        ],
        "joints_world_mm": (joints_world * 1000).tolist(),  # our order, right first
        "campos_mm": (scene.cam_pos * 1000).tolist(),
        "camrot": scene.cam_rot.tolist(),
        "focal": scene.focal.tolist(),
        "princpt": scene.princpt.tolist(),
        "skin": scene.skin.tolist(),
        "background": scene.background,
        "bbox": bbox,
    }


def _record(label: dict, image_size: tuple[int, int]):
    from .readers.common import ManoParams
    from .readers.interhand import (
        InterHandCamera,
        InterHandFrame,
        InterHandRecord,
        to_ih26m_order,
    )

    index = label["index"]
    valid = np.repeat(np.array(label["valid"], dtype=bool), 21)
    joint_valid = to_ih26m_order(valid.astype(int))
    mano = {
        side: None if m is None else ManoParams(np.array(m["pose"]), np.array(m["shape"]), np.array(m["trans"]))
        for side, m in zip(SIDES, label["mano"])
    }
    return InterHandRecord(
        annot_id=index,
        image_id=index,
        file_name=label["file_name"],
        width=image_size[1],
        height=image_size[0],
        capture=0,
        camera=f"{index:06d}",
        frame_idx=index,
        hand_type=label["hand_type"],
        joint_valid=joint_valid,
        cam=InterHandCamera(np.array(label["campos_mm"]), np.array(label["camrot"]), np.array(label["focal"]), np.array(label["princpt"])),
        frame=InterHandFrame(
            world_coord=to_ih26m_order(np.array(label["joints_world_mm"])),
            joint_valid=joint_valid,
            mano=mano,
            hand_type=label["hand_type"],
            hand_type_valid=True,
        ),
        bbox=np.array(label["bbox"]),
        seq_name=label["interaction"],
        extra={"procedural": {k: label[k] for k in ("interaction", "grasps", "skin", "background")}},
    )


def generate(
    hand_model: HandModel, cfg: ProceduralConfig, out_dir: str | Path, num: int, seed: int, progress: bool = True
) -> dict:
    """Render `num` scenes into `out_dir` in InterHand2.6M format; resumable.

    Samples are rendered in fixed blocks of `cfg.batch_size` consecutive indices. Per sample,
    the part-label PNG (masks/...), then the JPEG image, then a small label JSON are written
    atomically; the label JSON marks the sample done. A rerun skips blocks whose samples are
    all done (a partly done block is redone, with identical results) and rewrites the
    annotation files from all labels. A folder made with another seed, count
    or config is refused. Returns stats (counts per split, images/s of this run).
    """
    import time

    from tqdm import tqdm

    from ..config import config_hash, config_to_dict
    from ..errors import UserError
    from ..io import atomic_save_image, atomic_write_json
    from .readers.interhand import image_path, write_interhand_split

    out = Path(out_dir)
    state = {"seed": seed, "num": num, "config_hash": config_hash(cfg), "sampler": SAMPLER_VERSION, "config": config_to_dict(cfg)}
    state_file = out / _STATE
    if state_file.exists():
        old = json.loads(state_file.read_text())
        keys = ("seed", "num", "config_hash", "sampler")
        if {k: old.get(k) for k in keys} != {k: state[k] for k in keys}:
            raise UserError(
                f"{out} holds a procedural dataset made with seed={old.get('seed')} num={old.get('num')} "
                f"config {old.get('config_hash')} sampler version {old.get('sampler')}; this run asks for seed={seed} num={num} "
                f"config {state['config_hash']} sampler version {SAMPLER_VERSION}. Use another --out folder (or delete this one)."
            )
    else:
        atomic_write_json(state_file, state, indent=1)

    sampler = SceneSampler(hand_model, cfg, seed, num)
    meshes = SceneMeshes.build(hand_model)
    # Work in fixed blocks of consecutive indices, so the pixels of a sample never depend on which
    # other samples shared its batch (float sums differ with batch size) or where a run stopped.
    blocks = [range(b, min(b + cfg.batch_size, num)) for b in range(0, num, cfg.batch_size)]
    todo = [blk for blk in blocks if not all(_label_path(out, i).exists() for i in blk)]
    start = time.perf_counter()
    done = num - sum(len(blk) for blk in todo)
    bar = tqdm(total=num, initial=done, desc="procedural", unit="img", disable=not progress)
    for blk in todo:
        scenes = [sampler.sample(i) for i in blk]
        rendered = render_scenes(scenes, hand_model, meshes, cfg.image_size)
        for k, scene in enumerate(scenes):
            noise = torch.randn(rendered["image"][k].shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + scene.index))
            image = ((rendered["image"][k] + 0.012 * noise).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()  # sensor noise
            name = file_name(scene)
            parts = rendered["parts"][k].numpy()
            atomic_save_image(out / "masks" / scene.split / name.replace(".jpg", ".png"), parts)
            atomic_save_image(image_path(out, scene.split, name), image, quality=cfg.jpeg_quality)
            label = _scene_label(scene, rendered["joints_world"][k].double().numpy(), parts, cfg.image_size)
            atomic_write_json(_label_path(out, scene.index), label)
        bar.update(len(scenes))
    bar.close()
    elapsed = time.perf_counter() - start

    labels = [json.loads(_label_path(out, i).read_text()) for i in range(num)]
    counts = {}
    for split in SPLITS:
        records = [_record(lab, cfg.image_size) for lab in labels if lab["split"] == split]
        counts[split] = len(records)
        write_interhand_split(out, split, records)
    rendered_now = sum(len(blk) for blk in todo)
    return {"counts": counts, "rendered": rendered_now, "seconds": elapsed, "images_per_s": rendered_now / elapsed if todo else None}
