"""The batched label step: what one MANO forward gives, for a whole collated batch at once.

Sources built with ``labels="mano"`` (the training loader: readers, shards) leave every label that
comes from running MANO pending in the sample (`handrecon.data.sample`): the mesh of each hand
with MANO parameters (``mesh_pending``) and, for shards, whose joints are MANO's too, its joints
and box (``joints_pending``). Samples carry the camera-frame MANO parameters, which augmentation
maps exactly (rolls, flips, swapped hands), so `labels_from_mano` computes on the training device,
after augmentation and collation, what the per-sample path would have computed before it:

=============== ==================================================================================
label           pending hand h, from one `HandModel` forward over the batch (both sides)
=============== ==================================================================================
verts           the MANO mesh of (mano_pose, mano_shape, mano_transl)[h]        (mesh_pending)
joints3d        its 21 joints regressed from the mesh                           (joints_pending)
joints_valid    True for the 21 joints (and joints2d_valid)                     (joints_pending)
joints2d        joints3d projected with the batch's focal / princpt              (joints_pending)
boxes           the readers' rule on those 2D joints, clipped to the image,    (joints_pending)
                zeros when it has no area (as augmentation leaves a hand warped out of view)
=============== ==================================================================================

Everything else is kept as the sample had it: annotated joints (a hand whose joints come from
its annotation never has joints_pending, whether or not it has MANO), meshes of datasets without
MANO (HIC), and every hand of a sample built with ``labels="full"``. Labels derived from these
in the losses (mesh joints, root-relative targets) are computed from the batch as before.
"""
from __future__ import annotations

import torch

from ..camera import project
from ..hand_model.constants import NUM_JOINTS, NUM_VERTS
from ..hand_model.mano import HandModel
from .readers.common import boxes_from_points

__all__ = ["PENDING_KEYS", "labels_from_mano", "pending"]

#: The per-hand flags of labels left to `labels_from_mano`.
PENDING_KEYS = ("mesh_pending", "joints_pending")


def pending(batch: dict) -> bool:
    """Whether any sample of a collated batch has a label left to `labels_from_mano`."""
    return any(key in batch and bool(torch.as_tensor(batch[key]).any()) for key in PENDING_KEYS)


@torch.no_grad()
def labels_from_mano(batch: dict, hand_model: HandModel) -> dict:
    """A new batch dict whose pending labels (see the module doc) are filled, flags cleared.

    `batch`: a collated sample batch (tensors), on any device; MANO runs in float32 (never
    under autocast) on `hand_model`'s device and the results move to the batch's. A batch with
    nothing pending (or without the flags) is returned as it is.
    """
    if not pending(batch):
        return batch
    like = hand_model.layers["right"].shapedirs
    device = batch["mano_pose"].device
    mano = batch["mano_valid"].bool()
    mesh_p = batch["mesh_pending"].bool() & mano
    joints_p = batch["joints_pending"].bool() & mano
    pose, shape, transl = (batch[k].to(like.device, like.dtype) for k in ("mano_pose", "mano_shape", "mano_transl"))
    hands = [{"betas": shape[:, h], "global_orient": pose[:, h, :3], "hand_pose": pose[:, h, 3:], "transl": transl[:, h]} for h in range(2)]
    with torch.autocast(like.device.type, enabled=False):
        out = hand_model(*hands)
    verts, joints = out.vertices.to(device), out.joints.to(device)

    filled = dict(batch)
    vmask = mesh_p.repeat_interleave(NUM_VERTS, 1)[..., None]
    filled["verts"] = torch.where(vmask, verts.to(batch["verts"].dtype), batch["verts"])
    jmask = joints_p.repeat_interleave(NUM_JOINTS, 1)
    filled["joints3d"] = torch.where(jmask[..., None], joints.to(batch["joints3d"].dtype), batch["joints3d"])
    filled["joints_valid"] = batch["joints_valid"].bool() | jmask
    filled["joints2d_valid"] = batch["joints2d_valid"].bool() | jmask
    uv = project(joints, batch["focal"].to(joints.dtype), batch["princpt"].to(joints.dtype))
    filled["joints2d"] = torch.where(jmask[..., None], uv.to(batch["joints2d"].dtype), batch["joints2d"])
    b = uv.shape[0]
    size = batch["image_size"].to(device)[:, None].expand(b, 2, 2)
    boxes = boxes_from_points(uv.double().reshape(b, 2, NUM_JOINTS, 2), torch.ones(b, 2, NUM_JOINTS, dtype=torch.bool, device=device), size)
    has_area = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    boxes = torch.where(has_area[..., None], boxes, 0.0).to(batch["boxes"].dtype)
    filled["boxes"] = torch.where(joints_p[..., None], boxes, batch["boxes"])
    for key in PENDING_KEYS:
        filled[key] = torch.zeros_like(batch[key])
    return filled
