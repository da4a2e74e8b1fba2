"""Anatomical joint axes of a MANO model and a prior over plausible hand poses.

MANO's joint rotations are axis-angle vectors in frames aligned with the model's rest pose, so
"bend this finger" means a different vector for every joint and for every model file. The axes
are derived from the loaded model itself (rest joints and the curl of MANO's mean pose), so the
same code serves licensed MANO files and the stand-in, and left hands by construction.

A pose is described by per-joint angles (radians): `flex` (15,) curls a joint towards the palm,
`spread` (15,) moves it sideways within the palm plane (positive: towards the little-finger
side, on either hand). `compose_pose` turns angles into MANO's
45-d axis-angle hand pose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .constants import MANO_PARENTS

# MANO joint ids per digit (proximal to distal).
DIGITS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12), "thumb": (13, 14, 15)}
FINGERS = ("index", "middle", "ring", "pinky")

# Joint limits in radians (flex min/max per level; spread max at the base joint).
FLEX_LIMITS = {"finger": ((-0.35, 1.6), (0.0, 1.9), (-0.1, 1.4)), "thumb": ((-0.4, 0.9), (-0.2, 1.0), (-0.3, 1.4))}
SPREAD_LIMIT = {"finger": 0.35, "thumb": 0.6}


@dataclass(frozen=True)
class JointAxes:
    """Unit axes per finger joint (15, 3) in the model's rest frame (MANO joint order 1..15)."""

    flex: np.ndarray
    spread: np.ndarray


def joint_axes(layer) -> JointAxes:
    """Axes of one smplx MANO layer (e.g. `HandModel.layers['right']`), from its rest pose.

    Flexion axis = bone direction x palmar direction; the palmar direction is where MANO's mean
    pose moves the fingertips (MANO's mean hand is a relaxed curl).
    """
    v = layer.v_template.detach().double().cpu().numpy()
    jreg = layer.J_regressor.detach().double().cpu().numpy()
    joints = jreg @ v
    mean = layer.hand_mean.detach().double().cpu().numpy()
    if np.abs(mean).sum() == 0:
        raise ValueError("joint_axes needs a layer built with flat_hand_mean=False (its mean pose defines 'palmar')")
    curled = _pose_joints(layer, mean)
    axes_flex, axes_spread = np.zeros((15, 3)), np.zeros((15, 3))
    for joint_ids in DIGITS.values():
        tip_move = curled[joint_ids[2]] - joints[joint_ids[2]]
        for jid in joint_ids:
            child = jid + 1 if jid not in (3, 6, 9, 12, 15) else None
            bone = (joints[child] - joints[jid]) if child else (joints[jid] - joints[MANO_PARENTS[jid]])
            bone /= np.linalg.norm(bone)
            palmar = tip_move - (tip_move @ bone) * bone
            palmar /= np.linalg.norm(palmar)
            # a small rotation t about axis a moves the bone by t (a x bone); a = bone x palmar
            # gives (bone x palmar) x bone = palmar, i.e. positive flex curls towards the palm
            flex = np.cross(bone, palmar)
            axes_flex[jid - 1] = flex / np.linalg.norm(flex)
            # palmar is a direction, not a rotation axis: flip it for a left hand so a spread
            # angle means the same anatomical motion on both hands
            axes_spread[jid - 1] = palmar if layer.is_rhand else -palmar
    return JointAxes(axes_flex, axes_spread)


def _pose_joints(layer, hand_pose_abs: np.ndarray) -> np.ndarray:
    """Rest-shape joints after applying an absolute hand pose (no global rotation)."""
    with torch.no_grad():
        full = torch.as_tensor(hand_pose_abs, dtype=layer.v_template.dtype)[None] - layer.hand_mean
        out = layer(betas=torch.zeros(1, layer.num_betas), global_orient=torch.zeros(1, 3), hand_pose=full)
        return (layer.J_regressor @ out.vertices[0]).double().numpy()


def compose_pose(axes: JointAxes, flex: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """(..., 15) flex and spread angles -> (..., 45) absolute axis-angle hand pose."""
    aa = flex[..., None] * axes.flex + spread[..., None] * axes.spread
    return aa.reshape(*flex.shape[:-1], 45)


def clamp_to_limits(flex: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip angles to FLEX_LIMITS / SPREAD_LIMIT; spread only at each digit's base joint."""
    flex, spread = flex.copy(), spread.copy()
    for name, ids in DIGITS.items():
        kind = "thumb" if name == "thumb" else "finger"
        for level, jid in enumerate(ids):
            lo, hi = FLEX_LIMITS[kind][level]
            flex[..., jid - 1] = np.clip(flex[..., jid - 1], lo, hi)
            lim = SPREAD_LIMIT[kind] if level == 0 else 0.0
            spread[..., jid - 1] = np.clip(spread[..., jid - 1], -lim, lim)
    return flex, spread


# --- named grasp types ------------------------------------------------------------------------
def _levels(rng: np.random.Generator, ranges: tuple[tuple[float, float], ...]) -> np.ndarray:
    return np.array([rng.uniform(lo, hi) for lo, hi in ranges])


def _set(flex: np.ndarray, digit: str, values: np.ndarray) -> None:
    for jid, value in zip(DIGITS[digit], values):
        flex[jid - 1] = value


_OPEN = ((-0.1, 0.25), (0.0, 0.25), (0.0, 0.2))
_CURLED = ((1.2, 1.55), (1.4, 1.85), (0.7, 1.2))


def _open(rng):
    flex = np.zeros(15)
    for f in FINGERS:
        _set(flex, f, _levels(rng, _OPEN))
    _set(flex, "thumb", _levels(rng, ((-0.2, 0.2), (0.0, 0.3), (0.0, 0.3))))
    return flex


def _fist(rng):
    flex = np.zeros(15)
    for f in FINGERS:
        _set(flex, f, _levels(rng, _CURLED))
    _set(flex, "thumb", _levels(rng, ((0.4, 0.8), (0.5, 0.9), (0.5, 1.0))))
    return flex


def _pointing(rng):
    flex = _fist(rng)
    _set(flex, "index", _levels(rng, _OPEN))
    return flex


def _pinch(rng):
    flex = _levels(rng, ((0.1, 0.5),) * 15)
    _set(flex, "index", _levels(rng, ((0.5, 0.8), (0.6, 1.0), (0.3, 0.6))))
    _set(flex, "thumb", _levels(rng, ((0.4, 0.7), (0.3, 0.6), (0.2, 0.5))))
    return flex


def _grasp(rng):
    flex = np.zeros(15)
    for f in FINGERS:
        _set(flex, f, _levels(rng, ((0.6, 1.0), (0.7, 1.2), (0.3, 0.7))))
    _set(flex, "thumb", _levels(rng, ((0.3, 0.7), (0.2, 0.5), (0.2, 0.6))))
    return flex


def _free(rng):
    flex = np.zeros(15)
    for name, ids in DIGITS.items():
        kind = "thumb" if name == "thumb" else "finger"
        _set(flex, name, _levels(rng, FLEX_LIMITS[kind]))
    return flex


GRASPS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "open": _open,
    "fist": _fist,
    "pointing": _pointing,
    "pinch": _pinch,
    "grasp": _grasp,
    "free": _free,
}


def sample_angles(rng: np.random.Generator, grasp: str) -> tuple[np.ndarray, np.ndarray]:
    """Flex and spread angles (15,) each for a named grasp type, within the joint limits."""
    if grasp not in GRASPS:
        raise ValueError(f"unknown grasp {grasp!r}; choose one of {sorted(GRASPS)}")
    flex = GRASPS[grasp](rng)
    spread = np.zeros(15)
    for name, ids in DIGITS.items():
        kind = "thumb" if name == "thumb" else "finger"
        spread[ids[0] - 1] = rng.uniform(-0.5, 0.5) * SPREAD_LIMIT[kind]
    return clamp_to_limits(flex, spread)


def sample_hand_pose(rng: np.random.Generator, axes: JointAxes, hands_mean: np.ndarray, grasp: str) -> np.ndarray:
    """A (45,) MANO hand pose relative to the mean (flat_hand_mean=False convention)."""
    flex, spread = sample_angles(rng, grasp)
    return compose_pose(axes, flex, spread) - hands_mean
