"""What a sample's labels say about its hands: pose class, two-hand arrangement, view.

Pose classes come from MANO parameters. A finger joint's rotation is (flex * flex axis +
spread * spread axis) in the model's own anatomical axes (`articulation.joint_axes`), so the
15 flexion angles are read back exactly by projection. Each named grasp type of the pose prior
(`articulation.sample_angles`) is summarised by the mean and spread of its angles, drawn once
with a fixed seed; a hand takes the nearest class in that normalised distance, and ``relaxed``
when no class is near (MANO's mean hand, free poses). The prior is the single source of what
"fist" or "pinch" means, so the classifier follows it if it changes.

Arrangement and view come from the camera-frame mesh and joints: the gap between the two hand
meshes, whether the palms face each other, how much the hands cover each other in the image,
and the palm normal against the viewing ray.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from handrecon.hand_model.articulation import GRASPS, JointAxes, joint_axes, sample_angles
from handrecon.hand_model.constants import NUM_JOINTS, NUM_VERTS
from handrecon.hand_model.mano import SIDES, HandModel

POSE_CLASSES = ("open", "fist", "pointing", "pinch", "grasp", "relaxed")
ARRANGEMENTS = ("single", "apart", "touching", "clasped", "overlapping")
VIEWS = ("palm", "back", "side")

# our 21-joint order: wrist 0, thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20
_WRIST, _INDEX1, _MIDDLE1, _PINKY1 = 0, 5, 9, 17
_TIPS = (4, 8, 12, 16, 20)


@dataclass(frozen=True)
class Thresholds:
    """Decision limits (metres, cosines, normalised squared distance)."""

    relaxed_distance: float = 6.0  # mean squared z-score above which no grasp class fits
    touching_gap: float = 0.008  # closest vertex pair of the two hands
    clasped_gap: float = 0.02
    clasped_palms_cos: float = -0.5  # palm normals facing each other
    clasped_centres: float = 0.07  # palm centres this close
    overlap_fraction: float = 0.5  # image box overlap / smaller box for "one in front of the other"
    overlap_gap: float = 0.05
    view_cos: float = 0.45  # |palm normal . viewing ray| above this: palm or back view


@dataclass(frozen=True)
class _Prototype:
    mean: np.ndarray  # (15,)
    std: np.ndarray  # (15,)


def _prototypes(num: int = 256, seed: int = 0) -> dict[str, _Prototype]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in GRASPS:
        if name == "free":  # uniform over the joint limits: not a recognisable class
            continue
        flex = np.stack([sample_angles(rng, name)[0] for _ in range(num)])
        out[name] = _Prototype(flex.mean(0), np.maximum(flex.std(0), 0.08))
    return out


class PoseClassifier:
    """Hand pose class, arrangement and view of samples (see the module docstring).

    Built from a HandModel (joint axes, mean pose, palm side); pure functions of its inputs after that.
    """

    def __init__(self, hand_model: HandModel, thresholds: Thresholds = Thresholds()):
        self.thresholds = thresholds
        self.axes: dict[str, JointAxes] = {s: joint_axes(hand_model.layers[s]) for s in SIDES}
        self.means = {s: hand_model.layers[s].hand_mean.detach().double().numpy() for s in SIDES}
        self.prototypes = _prototypes()
        self.palm_sign = {s: self._palm_sign(hand_model, s) for s in SIDES}

    def _palm_sign(self, hand_model: HandModel, side: str) -> float:
        """+1 or -1 so that sign * (index1 - wrist) x (pinky1 - wrist) points out of the palm.

        The palmar side is where the fingertips go when the hand closes (flat -> fist)."""
        layer = hand_model.layers[side]
        flat = -layer.hand_mean[None]  # relative pose of the flat hand
        fist = torch.as_tensor(self.to_relative(side, self._fist_angles()), dtype=flat.dtype)[None]
        with torch.no_grad():
            zeros = dict(betas=torch.zeros(1, 10), global_orient=torch.zeros(1, 3))
            j_flat = hand_model.hand(side, hand_pose=flat, **zeros).joints[0].double().numpy()
            j_fist = hand_model.hand(side, hand_pose=fist, **zeros).joints[0].double().numpy()
        palmar = (j_fist[list(_TIPS[1:])] - j_flat[list(_TIPS[1:])]).mean(0)
        return 1.0 if self._raw_normal(j_flat) @ palmar > 0 else -1.0

    def _fist_angles(self) -> np.ndarray:
        return self.prototypes["fist"].mean

    def to_relative(self, side: str, flex: np.ndarray) -> np.ndarray:
        """(15,) flex angles -> (45,) MANO hand pose relative to the mean (no spread)."""
        return (flex[:, None] * self.axes[side].flex).reshape(45) - self.means[side]

    # ------------------------------------------------------------------------------ pose class
    def flex_angles(self, side: str, hand_pose: np.ndarray) -> np.ndarray:
        """(45,) or (48,) MANO pose relative to the mean -> (15,) flexion angles (radians)."""
        hand_pose = np.asarray(hand_pose, dtype=np.float64)[-45:]
        absolute = (hand_pose + self.means[side]).reshape(15, 3)
        return np.einsum("jd,jd->j", absolute, self.axes[side].flex)

    def distances(self, side: str, hand_pose: np.ndarray) -> dict[str, float]:
        """Mean squared z-score of the flexion angles to each grasp class."""
        flex = self.flex_angles(side, hand_pose)
        return {name: float((((flex - p.mean) / p.std) ** 2).mean()) for name, p in self.prototypes.items()}

    def pose_class(self, side: str, hand_pose: np.ndarray) -> str:
        """One of POSE_CLASSES for one hand's (48,) or (45,) MANO pose."""
        dist = self.distances(side, hand_pose)
        best = min(dist, key=dist.get)
        return best if dist[best] <= self.thresholds.relaxed_distance else "relaxed"

    # ------------------------------------------------------------------------------ geometry
    @staticmethod
    def _raw_normal(joints: np.ndarray) -> np.ndarray:
        n = np.cross(joints[_INDEX1] - joints[_WRIST], joints[_PINKY1] - joints[_WRIST])
        return n / max(np.linalg.norm(n), 1e-12)

    def palm_normal(self, side: str, joints21: np.ndarray) -> np.ndarray:
        """Unit normal pointing out of the palm, from one hand's (21, 3) joints."""
        return self.palm_sign[side] * self._raw_normal(np.asarray(joints21, dtype=np.float64))

    def view(self, side: str, joints21: np.ndarray) -> str:
        """``palm`` (the palm faces the camera), ``back`` or ``side``; camera-frame joints."""
        joints21 = np.asarray(joints21, dtype=np.float64)
        centre = joints21[[_WRIST, _INDEX1, _MIDDLE1, _PINKY1]].mean(0)
        ray = centre / max(np.linalg.norm(centre), 1e-12)
        cos = float(self.palm_normal(side, joints21) @ ray)
        if cos < -self.thresholds.view_cos:
            return "palm"
        return "back" if cos > self.thresholds.view_cos else "side"

    def arrangement(self, verts: np.ndarray, joints: np.ndarray, boxes: np.ndarray) -> str:
        """How two present hands relate: apart, touching, clasped or overlapping (one in front).

        verts (1556, 3) and joints (42, 3) in the camera frame, boxes (2, 4) x0 y0 x1 y1 pixels.
        """
        t = self.thresholds
        right, left = np.asarray(verts[:NUM_VERTS], np.float64), np.asarray(verts[NUM_VERTS:], np.float64)
        gap = float(cKDTree(right).query(left)[0].min())
        jr, jl = np.asarray(joints[:NUM_JOINTS], np.float64), np.asarray(joints[NUM_JOINTS:], np.float64)
        palms = [j[[_WRIST, _INDEX1, _MIDDLE1, _PINKY1]].mean(0) for j in (jr, jl)]
        facing = self.palm_normal("right", jr) @ self.palm_normal("left", jl) < t.clasped_palms_cos
        if facing and gap < t.clasped_gap and np.linalg.norm(palms[0] - palms[1]) < t.clasped_centres:
            return "clasped"
        if gap < t.touching_gap:
            return "touching"
        if gap < t.overlap_gap and box_overlap(boxes[0], boxes[1]) > t.overlap_fraction:
            return "overlapping"
        return "apart"


def box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area over the smaller box's area (boxes x0 y0 x1 y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(max(w, 0) * max(h, 0) / smaller) if smaller > 0 else 0.0


@dataclass(frozen=True)
class HandFacts:
    """What the labels say about one sample's hands (None: that hand is absent)."""

    poses: tuple[str | None, str | None]  # per hand (right, left): POSE_CLASSES
    views: tuple[str | None, str | None]  # VIEWS
    arrangement: str  # ARRANGEMENTS


def hand_facts(sample: dict, classifier: PoseClassifier) -> HandFacts:
    """Pose class, view and arrangement of a sample dict (handrecon.data.sample layout)."""
    present = [bool(sample["mano_valid"][h]) or bool(np.asarray(sample["joints_valid"])[21 * h : 21 * h + 21].any()) for h in range(2)]
    poses, views = [], []
    for h, side in enumerate(SIDES):
        if not present[h]:
            poses.append(None)
            views.append(None)
            continue
        poses.append(classifier.pose_class(side, sample["mano_pose"][h]) if sample["mano_valid"][h] else "relaxed")
        views.append(classifier.view(side, sample["joints3d"][21 * h : 21 * h + 21]))
    if all(present) and all(np.asarray(sample["mesh_valid"])):
        arrangement = classifier.arrangement(sample["verts"], sample["joints3d"], sample["boxes"])
    elif all(present):
        arrangement = "apart"
    else:
        arrangement = "single"
    return HandFacts(tuple(poses), tuple(views), arrangement)


__all__ = ["ARRANGEMENTS", "POSE_CLASSES", "VIEWS", "HandFacts", "PoseClassifier", "Thresholds", "box_overlap", "hand_facts"]
