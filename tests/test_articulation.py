"""Joint axes derived from a MANO model, and the grasp-type pose prior."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from handrecon.hand_model.articulation import (
    DIGITS,
    FLEX_LIMITS,
    GRASPS,
    SPREAD_LIMIT,
    joint_axes,
    sample_angles,
    sample_hand_pose,
)

TIPS = {"thumb": 4, "index": 8, "middle": 12, "ring": 16, "pinky": 20}  # in our 21-joint order


def _joints(hand_model, side, hand_pose):
    out = hand_model.hand(
        side,
        betas=torch.zeros(1, 10),
        global_orient=torch.zeros(1, 3),
        hand_pose=torch.as_tensor(hand_pose, dtype=torch.float32)[None],
    )
    return out.joints[0].numpy()


def test_flexion_curls_towards_the_palm(hand_model):
    layer = hand_model.layers["right"]
    axes = joint_axes(layer)
    mean = layer.hand_mean.numpy()
    flat = _joints(hand_model, "right", -mean)  # absolute pose zero: the flat template
    for name in ("index", "middle", "ring", "pinky"):
        pose = np.zeros(45)
        for jid in DIGITS[name]:
            pose[3 * (jid - 1) : 3 * jid] = 0.6 * axes.flex[jid - 1]
        bent = _joints(hand_model, "right", pose - mean)
        tip = TIPS[name]
        # the stand-in's right palm faces -y: a curl moves the tip that way and nearer the wrist
        assert bent[tip, 1] < flat[tip, 1] - 0.02
        assert np.linalg.norm(bent[tip] - bent[0]) < np.linalg.norm(flat[tip] - flat[0]) - 0.01


@pytest.mark.parametrize("grasp", sorted(GRASPS))
def test_sampled_angles_stay_within_limits(grasp):
    rng = np.random.default_rng(1)
    for _ in range(100):
        flex, spread = sample_angles(rng, grasp)
        for name, ids in DIGITS.items():
            kind = "thumb" if name == "thumb" else "finger"
            for level, jid in enumerate(ids):
                lo, hi = FLEX_LIMITS[kind][level]
                assert lo - 1e-9 <= flex[jid - 1] <= hi + 1e-9
                assert abs(spread[jid - 1]) <= (SPREAD_LIMIT[kind] if level == 0 else 0.0) + 1e-9


def test_grasp_types_differ_as_named(hand_model):
    layer = hand_model.layers["right"]
    axes, mean = joint_axes(layer), layer.hand_mean.numpy()
    rng = np.random.default_rng(0)

    def reach(grasp):
        j = _joints(hand_model, "right", sample_hand_pose(rng, axes, mean, grasp))
        return {name: np.linalg.norm(j[t] - j[0]) for name, t in TIPS.items()}

    opened, fist, point = reach("open"), reach("fist"), reach("pointing")
    for name in ("index", "middle", "ring", "pinky"):
        assert fist[name] < 0.6 * opened[name]
    assert point["index"] > 0.9 * opened["index"] and point["middle"] < 0.6 * opened["middle"]
    with pytest.raises(ValueError, match="choose one of"):
        sample_angles(rng, "wave")


def test_left_axes_mirror_right(hand_model):
    right = joint_axes(hand_model.layers["right"])
    left = joint_axes(hand_model.layers["left"])
    mirror = np.array([1.0, -1.0, -1.0])  # axis-angle vectors mirror as (a, -b, -c)
    np.testing.assert_allclose(left.flex, right.flex * mirror, atol=1e-6)
    np.testing.assert_allclose(left.spread, right.spread * mirror, atol=1e-6)
