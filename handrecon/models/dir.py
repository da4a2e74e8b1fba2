"""DIR-style regressor (Ren et al., ICCV 2023, "Decoupled Iterative Refinement"): one two-hand
crop, per-hand MANO and weak-perspective cameras, refined in stages that exchange information
between the hands.

1. A backbone (ResNet-50 on 256x256) gives a feature map; its pooled feature regresses per hand
   a 6D root rotation, 45 PCA pose coefficients, 10 betas and a weak-perspective camera
   (s, tx, ty: pixel = ((s X + t) + 1) S / 2 - 0.5 for root-relative X), plus the left-minus-right
   wrist offset in units of 0.15 m.
2. Each refinement stage builds one token per joint and hand from the image features sampled
   at the joint's current projection and its current 3D position; a graph convolution over the
   hand skeleton mixes the joints of each hand; cross-hand attention lets each hand's tokens
   attend to the other hand's; pooled tokens predict residual updates of every parameter.
3. A weak-perspective camera is turned into a translation of the real camera of the crop
   (depth = 2 f / (s S), the wrist back-projected through its pixel), so `verts` lie over the image.

Losses (DIR's, smooth-L1): root-relative 3D joints and vertices x10, 2D joints, MANO pose (as
axis-angle) and shape where valid, the offset, and mesh edge lengths; every stage is supervised
(`stage{k}/` terms; the initial regression is stage 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..camera import unproject
from ..config import FieldError, check_fields
from ..hand_model.constants import NUM_JOINTS, SKELETON_21
from ..hand_model.rotation import rot6d_to_axis_angle
from ..losses import ELEMENTWISE, edge_length_error, masked_mean, mesh_edges
from .backbone import Backbone
from .base import HandRegressor
from .layers import identity_rot6d, mlp, normalize_image, sample_at


@dataclass
class DIRConfig:
    backbone: str = "resnet50"
    pretrained: str = ""  # local timm weights file for the backbone ('' = random init)
    input_size: tuple[int, int] = (256, 256)  # square, >= 1
    pca_components: int = 45  # in [1, 45]
    refine_stages: int = 2  # >= 0 (0: the initial regression only)
    hidden: int = 256  # a multiple of `heads`
    heads: int = 4
    offset_scale: float = 0.15  # metres per unit of the predicted offset
    init_scale: float = 5.0  # weak-perspective scale at initialisation (normalised crop units per metre)
    loss: str = "smooth_l1"  # elementwise error: l1 or smooth_l1
    loss_weights: dict[str, float] = field(default_factory=dict)  # loss term -> weight >= 0 (0: off)

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "input_size", "hidden", "heads")
        if self.input_size[0] != self.input_size[1]:
            raise FieldError("input_size", "square for the weak-perspective camera", self.input_size)
        if self.loss not in ELEMENTWISE:
            raise FieldError("loss", f"one of {sorted(ELEMENTWISE)}", self.loss)
        check_fields(self, "in [1, 45]", "pca_components")
        check_fields(self, ">= 0", "refine_stages", "loss_weights")
        check_fields(self, "> 0", "offset_scale", "init_scale")
        if self.hidden % self.heads:
            raise FieldError("hidden", f"a multiple of heads ({self.heads})", self.hidden)


def skeleton_adjacency() -> torch.Tensor:
    """(21, 21) symmetric-normalised adjacency of the hand skeleton with self loops."""
    a = torch.eye(NUM_JOINTS)
    for i, j in SKELETON_21:
        a[i, j] = a[j, i] = 1.0
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


class GraphConv(nn.Module):
    """x' = relu(norm(A x W)) + x over the 21 joints of a hand."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("adjacency", skeleton_adjacency(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.norm(self.adjacency @ self.linear(x)))


class RefineStage(nn.Module):
    """Joint tokens -> per-hand graph convolutions -> cross-hand attention -> parameter updates."""

    def __init__(self, feat_dim: int, hidden: int, heads: int, num_params: int):
        super().__init__()
        self.token = nn.Linear(feat_dim + 5, hidden)  # image feature, 3D joint, 2D joint (normalised)
        self.hand_embed = nn.Parameter(torch.zeros(2, 1, hidden))
        self.graph = nn.Sequential(GraphConv(hidden), GraphConv(hidden))
        self.cross = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(hidden)
        self.update = mlp([NUM_JOINTS * hidden, hidden, num_params])
        self.offset = mlp([2 * NUM_JOINTS * hidden, hidden, 3])
        for head in (self.update[-1], self.offset[-1]):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, feats: torch.Tensor, joints3d: torch.Tensor, joints2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, C, h, w); joints3d (B, 2, 21, 3) root-relative; joints2d (B, 2, 21, 2) in
        feature cells -> per-hand parameter deltas (B, 2, P) and an offset delta (B, 3)."""
        b = feats.shape[0]
        cells = torch.tensor(feats.shape[-1], device=feats.device, dtype=joints2d.dtype)
        sampled = sample_at(feats, joints2d.flatten(1, 2)).reshape(b, 2, NUM_JOINTS, -1)
        tokens = self.token(torch.cat([sampled, joints3d, joints2d / cells], -1)) + self.hand_embed
        tokens = self.graph(tokens.flatten(0, 1)).reshape(b, 2, NUM_JOINTS, -1)
        right, left = tokens[:, 0], tokens[:, 1]
        # each hand queries the other one (one shared attention, the hand embedding tells them apart)
        queries = torch.cat([right, left])
        keys = torch.cat([left, right])
        attended, _ = self.cross(queries, keys, keys, need_weights=False)
        tokens = self.cross_norm(queries + attended).reshape(2, b, NUM_JOINTS, -1).transpose(0, 1)
        return self.update(tokens.flatten(2)), self.offset(tokens.flatten(1))


class DIRNet(HandRegressor):
    def __init__(self, hand_model, cfg: DIRConfig):
        super().__init__(hand_model, cfg.input_size, cfg.loss, cfg.loss_weights)
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone, cfg.pretrained)
        c = self.backbone.channels
        self.sizes = (6, cfg.pca_components, 10, 3)  # root 6D, PCA pose, betas, camera (log s, tx, ty)
        num = sum(self.sizes)
        self.initial = mlp([c, cfg.hidden * 2, 2 * num + 3])
        self.feat_proj = nn.Conv2d(c, cfg.hidden, 1)
        self.stages = nn.ModuleList(RefineStage(cfg.hidden, cfg.hidden, cfg.heads, num) for _ in range(cfg.refine_stages))
        self.register_buffer("edges", mesh_edges(self.hand_model.faces_right), persistent=False)
        head = self.initial[-1]
        nn.init.normal_(head.weight, std=1e-3)
        with torch.no_grad():
            bias = torch.zeros(num)
            bias[:6] = identity_rot6d(1)
            bias[-3] = torch.log(torch.tensor(cfg.init_scale))
            head.bias.copy_(torch.cat([bias, bias, torch.zeros(3)]))

    @staticmethod
    def default_loss_weights() -> dict[str, float]:
        return {
            "joints": 10.0, "mesh_joints": 0.0, "verts": 10.0, "joints2d": 1.0, "mano_pose": 1.0, "mano_shape": 1.0,
            "rel_trans": 1.0, "edges": 1.0,
        }  # fmt: skip

    def decode(self, params: torch.Tensor, offset: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """(B, 2, P) parameters and (B, 3) offset -> the common outputs plus joints in crop cells."""
        size = self.input_size[0]
        focal, princpt = batch["focal"].float(), batch["princpt"].float()
        root6d, pca, betas, cam = params.split(self.sizes, -1)
        orient = rot6d_to_axis_angle(root6d)  # (B, 2, 3)
        verts_rel, roots, poses = [], [], []
        for i, side in enumerate(("right", "left")):
            layer = self.hand_model.layers[side]
            pose = pca[:, i] @ layer.pca_basis[: self.cfg.pca_components]
            out = self.mano(side, betas[:, i], orient[:, i], pose)
            verts_rel.append(out.vertices - out.joints[:, :1])
            scale = cam[:, i, 0].exp()
            wrist_px = (cam[:, i, 1:] + 1) * size / 2 - 0.5
            roots.append(unproject(wrist_px[:, None], (2 * focal.mean(-1) / (scale * size))[:, None], focal, princpt)[:, 0])
            poses.append(torch.cat([orient[:, i], pose], -1))
        result = self.assemble(
            (verts_rel[0], verts_rel[1]), (roots[0], roots[1]), offset * self.cfg.offset_scale, torch.stack(poses, 1), betas, batch
        )
        result["cam"] = cam
        return result

    def weak_perspective(self, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Root-relative joints (B, 2, 21, 3) and their weak-perspective pixels (B, 2, 21, 2)."""
        b = out["joints3d"].shape[0]
        size = self.input_size[0]
        joints = out["joints3d"].reshape(b, 2, NUM_JOINTS, 3)
        rel = joints - joints[:, :, :1]
        cam = out["cam"]
        px = (cam[..., None, :1].exp() * rel[..., :2] + cam[..., None, 1:] + 1) * size / 2 - 0.5
        return rel, px

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        self.check_input(batch)
        image = normalize_image(batch["image"], self.backbone.mean, self.backbone.std)
        b = image.shape[0]
        feats = self.backbone(image)
        raw = self.initial(feats.mean((2, 3)))
        params, offset = raw[:, :-3].reshape(b, 2, -1), raw[:, -3:]
        out = self.decode(params, offset, batch)
        stages = [out]
        tokens_map = self.feat_proj(feats)
        cells_per_px = feats.shape[-1] / self.input_size[0]
        for stage in self.stages:
            rel, px = self.weak_perspective(out)
            d_params, d_offset = stage(tokens_map, rel, (px + 0.5) * cells_per_px - 0.5)
            params, offset = params + d_params, offset + d_offset
            out = self.decode(params, offset, batch)
            stages.append(out)
        result = dict(out)
        result["stages"] = stages
        return result

    def losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        targets = self.targets(batch)
        b = out["verts"].shape[0]
        size = self.input_size[0]
        gt2d = batch["joints2d"].float().reshape(b, 2, NUM_JOINTS, 2) / size
        valid2d = batch["joints2d_valid"].bool().reshape(b, 2, NUM_JOINTS)
        mesh_valid = batch["mesh_valid"].bool()
        gt_verts = batch["verts"].float().reshape(b, 2, -1, 3)
        terms: dict[str, torch.Tensor] = {}
        for k, stage in enumerate(out["stages"]):
            prefix = f"stage{k}/"
            terms.update(self.common_losses(stage, targets, prefix))
            _, px = self.weak_perspective(stage)
            terms[prefix + "joints2d"] = masked_mean(self.elementwise(px / size, gt2d), valid2d)
            pred_verts = stage["verts"].reshape(b, 2, -1, 3)
            edge_err = torch.stack([edge_length_error(pred_verts[:, i], gt_verts[:, i], self.edges) for i in range(2)], 1)
            terms[prefix + "edges"] = masked_mean(edge_err, mesh_valid)
        return self.weigh(terms)
