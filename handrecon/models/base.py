"""What every regressor shares: the output contract, the hand model it decodes with, and the
loss terms common to all of them.

A regressor maps a collated sample batch (`handrecon.data.sample`, images at `input_size`) to

============ ================ ===========================================================
key          shape            meaning
============ ================ ===========================================================
verts        (B, 1556, 3)     two-hand mesh, metres, camera frame of the input image; each
                              hand at the model's own estimate of its absolute position
joints3d     (B, 42, 3)       joints regressed from `verts` (InterWild order per hand)
joints2d     (B, 42, 2)       `joints3d` projected with the batch's focal / princpt, pixels
rel_trans    (B, 3)           left wrist minus right wrist from the relative-translation
                              branch: what the InterWild metrics (MRRPE, RRVE) read
mano_pose    (B, 2, 48)       axis-angle relative to MANO's mean hand, (right, left)
mano_shape   (B, 2, 10)       betas
============ ================ ===========================================================

plus architecture-specific entries used by its losses. `model.losses(out, batch)` returns the
weighted loss terms (a dict of scalars; their sum is what the trainer minimises).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..camera import project
from ..errors import UserError
from ..hand_model.mano import HandModel
from ..losses import ELEMENTWISE, hand_targets, masked_mean, root_relative_joints, root_relative_verts

OUTPUT_KEYS = ("verts", "joints3d", "joints2d", "rel_trans", "mano_pose", "mano_shape")


class HandRegressor(nn.Module):
    """Base class. The hand model is a private copy kept outside the module tree, so MANO's
    (licensed) arrays never enter a state dict or checkpoint; `.to()` moves it along."""

    def __init__(self, hand_model: HandModel, input_size: tuple[int, int], loss: str, loss_weights: dict[str, float]):
        super().__init__()
        self.__dict__["hand_model"] = copy.deepcopy(hand_model)
        self.input_size = tuple(input_size)
        if loss not in ELEMENTWISE:
            raise UserError(f"unknown loss '{loss}'; choose one of {sorted(ELEMENTWISE)}")
        self.elementwise = ELEMENTWISE[loss]
        unknown = sorted(set(loss_weights) - set(self.default_loss_weights()))
        if unknown:
            raise UserError(f"{type(self).__name__} has no loss term(s) {unknown}; its terms are {sorted(self.default_loss_weights())}")
        self.loss_weights = {**self.default_loss_weights(), **loss_weights}

    @staticmethod
    def default_loss_weights() -> dict[str, float]:
        raise NotImplementedError

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.hand_model._apply(fn)
        return self

    def mano(self, side: str, betas: torch.Tensor, orient: torch.Tensor, pose: torch.Tensor, transl: torch.Tensor | None = None):
        """One hand's MANO mesh in float32 even under autocast (skinning in half precision
        shifts vertices by millimetres)."""
        with torch.autocast(betas.device.type, enabled=False):
            transl = None if transl is None else transl.float()
            return self.hand_model.hand(side, betas.float(), orient.float(), pose.float(), transl)

    def check_input(self, batch: dict) -> None:
        size = tuple(batch["image"].shape[1:3])
        if size != self.input_size:
            raise ValueError(f"{type(self).__name__} reads {self.input_size} (H, W) images, got {size}")

    def assemble(
        self,
        verts_rel: tuple[torch.Tensor, torch.Tensor],
        roots: tuple[torch.Tensor, torch.Tensor],
        rel_trans: torch.Tensor,
        pose: torch.Tensor,
        shape: torch.Tensor,
        batch: dict,
    ) -> dict[str, torch.Tensor]:
        """The common outputs from per-hand root-relative meshes (B, 778, 3) and roots (B, 3)."""
        verts = torch.cat([verts_rel[0] + roots[0][:, None], verts_rel[1] + roots[1][:, None]], 1)
        joints = self.hand_model.regress_joints(verts)
        return {
            "verts": verts,
            "joints3d": joints,
            "joints2d": project(joints, batch["focal"].float(), batch["princpt"].float(), behind="clamp"),
            "rel_trans": rel_trans,
            "mano_pose": pose,
            "mano_shape": shape,
        }

    def common_losses(self, out: dict, targets: dict, prefix: str = "") -> dict[str, torch.Tensor]:
        """Root-relative joints / mesh joints / vertices, MANO parameters and the relative
        translation (unweighted; `weigh` applies the weights)."""
        err = self.elementwise
        joints_rel = root_relative_joints(out["joints3d"])
        verts_rel = root_relative_verts(out["verts"], out["joints3d"])
        terms = {
            "joints": masked_mean(err(joints_rel, targets["joints_rel"]), targets["joints_rel_mask"]),
            "mesh_joints": masked_mean(err(joints_rel, targets["mesh_joints_rel"]), targets["mesh_joints_mask"]),
            "verts": masked_mean(err(verts_rel, targets["verts_rel"]), targets["verts_mask"]),
            "mano_pose": masked_mean(err(out["mano_pose"], targets["mano_pose"]), targets["mano_mask"]),
            "mano_shape": masked_mean(err(out["mano_shape"], targets["mano_shape"]), targets["mano_mask"]),
            "rel_trans": masked_mean(err(out["rel_trans"], targets["rel_trans"]), targets["rel_trans_mask"]),
        }
        return {prefix + k: v for k, v in terms.items()}

    def targets(self, batch: dict) -> dict[str, torch.Tensor]:
        return hand_targets(batch, self.hand_model)

    def weigh(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted terms; a term's weight is looked up by its name without a stage prefix."""
        out = {}
        for name, value in terms.items():
            weight = self.loss_weights[name.rsplit("/", 1)[-1]]
            if weight:
                out[name] = value * weight
        return out

