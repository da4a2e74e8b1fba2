"""Loss terms of the regressors as pure functions of predictions, targets and validity masks.

Every term is a masked mean: entries whose label is absent (validity False) contribute nothing,
and a batch with no valid entry gives exactly 0 (with a gradient of 0), never NaN.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .hand_model.constants import NUM_JOINTS, NUM_VERTS

WRISTS = (0, NUM_JOINTS)  # wrist index of the right and left hand in the 42 joints


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs()


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float = 0.01) -> torch.Tensor:
    """Elementwise smooth-L1 (Huber / beta); beta in the target's units (default 1 cm for metres)."""
    return F.smooth_l1_loss(pred, target, reduction="none", beta=beta)


ELEMENTWISE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"l1": l1, "smooth_l1": smooth_l1}


def masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `err` over the entries where `mask` (broadcast to err's shape) is True; 0 when none."""
    mask = mask.to(err.dtype)
    while mask.dim() < err.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(err)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


def root_relative_joints(joints: torch.Tensor) -> torch.Tensor:
    """(B, 42, 3) -> each hand's joints minus its own wrist."""
    b = joints.shape[0]
    hands = joints.reshape(b, 2, NUM_JOINTS, 3)
    return (hands - hands[:, :, :1]).reshape(b, 2 * NUM_JOINTS, 3)


def root_relative_verts(verts: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
    """(B, 1556, 3) two-hand mesh minus each hand's wrist from (B, 42, 3) joints."""
    b = verts.shape[0]
    wrists = joints[:, list(WRISTS)]  # (B, 2, 3)
    return (verts.reshape(b, 2, NUM_VERTS, 3) - wrists[:, :, None]).reshape(b, 2 * NUM_VERTS, 3)


def relative_translation(joints: torch.Tensor) -> torch.Tensor:
    """(B, 42, 3) -> (B, 3) left wrist minus right wrist (the InterWild convention)."""
    return joints[:, WRISTS[1]] - joints[:, WRISTS[0]]


def hand_targets(batch: dict, hand_model) -> dict[str, torch.Tensor]:
    """Root-relative 3D targets and their masks from a collated sample batch.

    Joints are relative to their annotated wrist (valid only where the joint and its wrist are);
    mesh vertices and mesh joints are relative to the wrist regressed from the ground-truth mesh,
    as the metrics align them.
    """
    joints, valid = batch["joints3d"].float(), batch["joints_valid"].bool()
    b = joints.shape[0]
    wrist_valid = valid[:, list(WRISTS)]  # (B, 2)
    joints_mask = valid & wrist_valid.repeat_interleave(NUM_JOINTS, 1)
    mesh_joints = hand_model.regress_joints(batch["verts"].float())
    mesh_valid = batch["mesh_valid"].bool()
    return {
        "joints_rel": root_relative_joints(joints),
        "joints_rel_mask": joints_mask,
        "verts_rel": root_relative_verts(batch["verts"].float(), mesh_joints),
        "verts_mask": mesh_valid.repeat_interleave(NUM_VERTS, 1),
        "mesh_joints_rel": root_relative_joints(mesh_joints),
        "mesh_joints_mask": mesh_valid.repeat_interleave(NUM_JOINTS, 1),
        "rel_trans": relative_translation(joints),
        "rel_trans_mask": wrist_valid.all(1),
        "mano_pose": batch["mano_pose"].float().reshape(b, 2, 48),
        "mano_shape": batch["mano_shape"].float().reshape(b, 2, 10),
        "mano_mask": batch["mano_valid"].bool(),
    }

