"""InterWild-style regressor (Moon, CVPR 2023): body-level image -> hand boxes -> per-hand crops
through one shared hand network -> MANO, plus a relative-translation branch between the hands.

Stages (sizes are the defaults; `interwild_tiny` shrinks them):

1. **Boxes.** The input (512x384) is resized to 256x192 for a body backbone; deconvolutions
   bring its features to stride 4, a 2-channel heatmap gives each hand's box centre by
   soft-argmax and an MLP on the features at that centre gives its size.
2. **Crops.** Square boxes (side = max(w, h) * `roi_scale`) are RoI-aligned from the full input
   to 256x256; the left crop is mirrored so one right-hand network serves both hands. During
   training the crops come from the predicted boxes (detached), as in InterWild, or from the
   ground-truth boxes with `roi_boxes: gt`.
3. **Hand network.** A shared backbone; a 1x1 convolution gives 21 x 8 x (8x8) joint heatmaps
   whose 3D soft-argmax is each joint's crop position and root-relative depth; features sampled at
   those joints give 6D rotations (root + 15), the global feature gives betas and a root
   translation in a virtual crop camera (focal 5000, depth = k * sigmoid(gamma)).
4. **Back to the image.** The left hand's outputs are mirrored back: axis-angle (a, b, c) ->
   (a, -b, -c), translation x -> -x, heatmap x -> W-1-x; MANO (left layer) gives its mesh. Each
   hand's wrist is moved from its crop's virtual camera to the real camera through its crop pixel
   (`layers.crop_root_to_camera`), so `verts` lie over the image.
5. **Relative translation.** Both hands' joints (detached) are placed in their union box as 3D
   Gaussian heatmaps; a small CNN plus a ResNet-18 reads them and the features at the two
   wrists give the left-minus-right wrist translation.

Losses (InterWild's, L1): box centre/size, joint heatmap positions and projections (in heatmap
cells), root-relative 3D joints x10 (annotated and mesh-regressed), MANO pose/shape where valid,
relative translation. Not reproduced: InterWild's learnable joint regressor (its joints come from
the MANO mesh here) and its 2D-only (MSCOCO) training path.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..camera import project
from ..config import FieldError, check_fields
from ..errors import UserError
from ..hand_model.constants import NUM_JOINTS
from ..hand_model.rotation import rot6d_to_axis_angle
from ..losses import ELEMENTWISE, masked_mean
from .backbone import Backbone
from .base import HandRegressor
from .layers import (
    conv_bn_relu,
    crop_images,
    crop_root_to_camera,
    crop_to_image,
    deconv_bn_relu,
    heatmap_to_crop,
    identity_rot6d,
    image_to_crop,
    mirror_x,
    mlp,
    normalize_image,
    sample_at,
    soft_argmax_2d,
    soft_argmax_3d,
    square_boxes,
)

# mirror of an axis-angle through the x = 0 plane: (a, b, c) -> (a, -b, -c)
_MIRROR_AA = (1.0, -1.0, -1.0)


@dataclass
class InterWildConfig:
    backbone: str = "resnet50"  # shared hand network (timm name)
    body_backbone: str = "resnet50"
    trans_backbone: str = "resnet18"
    pretrained: str = ""  # local timm weights file for `backbone` and `body_backbone` ('' = random init)
    trans_pretrained: str = ""  # local timm weights file for `trans_backbone`
    input_size: tuple[int, int] = (512, 384)  # (H, W) of the image the model reads
    body_size: tuple[int, int] = (256, 192)
    box_deconvs: int = 3  # x2 upsamplings of the body features for the box-centre heatmap; >= 0
    box_channels: int = 256
    hand_size: int = 256  # side of the hand crops
    heatmap_depth: int = 8
    rot_channels: int = 512
    roi_scale: float = 1.3  # crop side = box side * roi_scale
    roi_boxes: str = "pred"  # crops while training: 'pred' (detached predicted boxes) or 'gt'
    trans_heatmap: int = 64  # side of the Gaussian heatmap cube read by the relative-translation branch
    trans_channels: int = 64
    sigma: float = 2.5  # Gaussian std in heatmap cells
    virtual_focal: float = 5000.0
    camera_3d_size: float = 0.6  # metres spanned by the crop at the depth where gamma = 1
    depth_range: float = 0.3  # metres of root-relative depth covered by the heatmap depth axis
    loss: str = "l1"  # elementwise error: l1 or smooth_l1
    loss_weights: dict[str, float] = field(default_factory=dict)  # loss term -> weight >= 0 (0: off)

    def __post_init__(self) -> None:
        if self.roi_boxes not in ("pred", "gt"):
            raise FieldError("roi_boxes", "'pred' or 'gt'", self.roi_boxes)
        if self.loss not in ELEMENTWISE:
            raise FieldError("loss", f"one of {sorted(ELEMENTWISE)}", self.loss)
        ints = ("input_size", "body_size", "box_channels", "hand_size", "heatmap_depth", "rot_channels", "trans_heatmap", "trans_channels")
        check_fields(self, ">= 1", *ints)
        check_fields(self, "> 0", "roi_scale", "sigma", "virtual_focal", "camera_3d_size", "depth_range")
        check_fields(self, ">= 0", "box_deconvs", "loss_weights")


class InterWildNet(HandRegressor):
    def __init__(self, hand_model, cfg: InterWildConfig):
        super().__init__(hand_model, cfg.input_size, cfg.loss, cfg.loss_weights)
        self.cfg = cfg
        c = cfg
        # 1. boxes
        self.body_backbone = Backbone(c.body_backbone, c.pretrained)
        ups, ch = [], self.body_backbone.channels
        for _ in range(c.box_deconvs):
            ups.append(deconv_bn_relu(ch, c.box_channels))
            ch = c.box_channels
        self.box_features = nn.Sequential(*ups)
        self.box_center = nn.Conv2d(ch, 2, 1)
        self.box_size = nn.ModuleList([mlp([ch, c.box_channels, 2]) for _ in range(2)])
        # 3. hand network
        self.backbone = Backbone(c.backbone, c.pretrained)
        hc = self.backbone.channels
        if c.hand_size % self.backbone.stride:
            stride = self.backbone.stride
            raise UserError(f"hand_size must be a multiple of the stride of backbone '{c.backbone}' ({stride}), got {c.hand_size}")
        self.heatmap_cells = c.hand_size // self.backbone.stride  # side of the joint heatmaps
        self.position = nn.Conv2d(hc, NUM_JOINTS * c.heatmap_depth, 1)
        self.rot_conv = conv_bn_relu(hc, c.rot_channels, 1)
        joint_feat = NUM_JOINTS * (c.rot_channels + 3)
        self.root_pose = nn.Linear(joint_feat, 6)
        self.hand_pose = nn.Linear(joint_feat, 15 * 6)
        self.shape = nn.Linear(hc, 10)
        self.camera = nn.Linear(hc, 3)
        # 5. relative translation
        self.trans_in = conv_bn_relu(2 * NUM_JOINTS * c.trans_heatmap, c.trans_channels)
        self.trans_backbone = Backbone(c.trans_backbone, c.trans_pretrained, in_chans=c.trans_channels)
        self.trans_out = nn.Linear(2 * (self.trans_backbone.channels + 2), 3)
        self._init_outputs()

    def _init_outputs(self) -> None:
        """Small output layers starting at the rest pose, zero shape and zero relative offset."""
        for layer in (self.root_pose, self.hand_pose, self.shape, self.camera, self.trans_out):
            nn.init.normal_(layer.weight, std=1e-3)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.root_pose.bias.copy_(identity_rot6d(1))
            self.hand_pose.bias.copy_(identity_rot6d(15))

    @staticmethod
    def default_loss_weights() -> dict[str, float]:
        return {
            "box_centre": 1.0, "box_size": 1.0, "joint_img": 1.0, "joint_proj": 1.0, "joints": 10.0, "mesh_joints": 10.0,
            "verts": 0.0, "mano_pose": 1.0, "mano_shape": 1.0, "rel_trans": 1.0,
        }  # fmt: skip

    # ------------------------------------------------------------------------------ stages
    def predict_boxes(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised image -> (B, 2, 2) box centres and sizes as fractions of (W, H), and the
        (B, 2, 4) boxes in input pixels."""
        h, w = image.shape[-2:]
        feats = self.box_features(self.body_backbone(F.interpolate(image, self.cfg.body_size, mode="bilinear", align_corners=False)))
        fh, fw = feats.shape[-2:]
        cells = soft_argmax_2d(self.box_center(feats))  # (B, 2, 2)
        sizes = torch.stack([self.box_size[i](sample_at(feats, cells[:, i : i + 1].detach())[:, 0]) for i in range(2)], 1)
        centre = (cells + 0.5) / torch.tensor([fw, fh], device=cells.device, dtype=cells.dtype)
        scale = torch.tensor([w, h], device=cells.device, dtype=cells.dtype)
        centre_px = centre * scale - 0.5
        half = sizes.abs() * scale / 2
        return centre, sizes, torch.cat([centre_px - half, centre_px + half], -1)

    def hand_network(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        """(2B, 3, S, S) right-hand crops -> joint heatmap coordinates, MANO parameters, virtual translation."""
        c = self.cfg
        feats = self.backbone(crops)
        n, _, fh, fw = feats.shape
        if (fh, fw) != (self.heatmap_cells, self.heatmap_cells):
            raise ValueError(f"hand features are {fh}x{fw}, expected {self.heatmap_cells}: hand_size must be a multiple of the backbone stride")
        coords = soft_argmax_3d(self.position(feats).reshape(n, NUM_JOINTS, c.heatmap_depth, fh, fw))  # cells
        pooled = feats.mean((2, 3))
        joint_feats = torch.cat([sample_at(self.rot_conv(feats), coords[..., :2].detach()), coords.detach()], -1).flatten(1)
        cam = self.camera(pooled)
        k = c.virtual_focal * c.camera_3d_size / c.hand_size
        transl = torch.cat([cam[:, :2], k * torch.sigmoid(cam[:, 2:])], 1)
        return {
            "cells": fw,
            "coords": coords,
            "orient": rot6d_to_axis_angle(self.root_pose(joint_feats)),
            "pose": rot6d_to_axis_angle(self.hand_pose(joint_feats).reshape(n, 15, 6)).reshape(n, 45),
            "shape": self.shape(pooled),
            "transl": transl,
        }

    def relative_translation(self, joints_img: torch.Tensor, depth_cells: torch.Tensor) -> torch.Tensor:
        """(B, 2, 21, 2) joints in input pixels and (B, 2, 21) heatmap depths -> (B, 3) left - right wrist."""
        c = self.cfg
        b = joints_img.shape[0]
        t = c.trans_heatmap
        lo, hi = joints_img.flatten(1, 2).amin(1), joints_img.flatten(1, 2).amax(1)
        box = square_boxes(torch.cat([lo, hi], -1), 1.2, min_size=1.0)
        pts = image_to_crop(joints_img.flatten(1, 2), box, t).reshape(b, 2, NUM_JOINTS, 2)
        z = depth_cells * t / c.heatmap_depth
        grid = torch.arange(t, device=pts.device, dtype=pts.dtype)
        gx = torch.exp(-0.5 * ((grid - pts[..., 0, None]) / c.sigma) ** 2)  # (B, 2, 21, T)
        gy = torch.exp(-0.5 * ((grid - pts[..., 1, None]) / c.sigma) ** 2)
        gz = torch.exp(-0.5 * ((grid - z[..., None]) / c.sigma) ** 2)
        cube = gz[..., :, None, None] * gy[..., None, :, None] * gx[..., None, None, :]  # (B, 2, 21, T, T, T)
        feats = self.trans_in(cube.reshape(b, 2 * NUM_JOINTS * t, t, t))
        feats = self.trans_backbone(F.interpolate(feats, scale_factor=4, mode="bilinear", align_corners=False))
        fh = feats.shape[-1]
        wrists = pts[:, :, 0]  # (B, 2, 2) in cube cells
        wrist_cells = (wrists + 0.5) * fh / t - 0.5
        wf = torch.cat([sample_at(feats, wrist_cells), wrists / t], -1)
        return self.trans_out(wf.flatten(1))

    # ------------------------------------------------------------------------------ forward
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        c = self.cfg
        self.check_input(batch)
        image = normalize_image(batch["image"], self.backbone.mean, self.backbone.std)
        b = image.shape[0]
        focal, princpt = batch["focal"].float(), batch["princpt"].float()
        centre, sizes, boxes = self.predict_boxes(image)
        roi = boxes.detach()
        if self.training and c.roi_boxes == "gt" or "roi_boxes" in batch:
            gt = batch.get("roi_boxes", batch["boxes"]).float()
            has = (gt[..., 2] > gt[..., 0]) & (gt[..., 3] > gt[..., 1])
            roi = torch.where(has[..., None], gt, roi)
        roi = square_boxes(roi, c.roi_scale)  # (B, 2, 4)
        flat_roi = roi.transpose(0, 1).reshape(2 * b, 4)  # right crops, then left crops
        crop_index = torch.arange(2 * b, device=image.device)
        flip = crop_index >= b
        hands = self.hand_network(crop_images(image, flat_roi, c.hand_size, crop_index % b, flip))

        # mirror the left hand back
        cells = hands["cells"]
        mirror = torch.tensor(_MIRROR_AA, device=image.device)
        coords = torch.where(flip[:, None, None], mirror_x(hands["coords"], cells), hands["coords"])
        orient = torch.where(flip[:, None], hands["orient"] * mirror, hands["orient"])
        pose = torch.where(flip[:, None], (hands["pose"].reshape(-1, 15, 3) * mirror).reshape(-1, 45), hands["pose"])
        transl = torch.where(flip[:, None], hands["transl"] * mirror.new_tensor([-1.0, 1.0, 1.0]), hands["transl"])

        verts_rel, roots, proj, joints_img = [], [], [], []
        coords = coords.reshape(2, b, NUM_JOINTS, 3).transpose(0, 1)  # (B, 2, 21, 3) heatmap cells
        virtual_focal = torch.full_like(focal, c.virtual_focal)
        virtual_princpt = torch.full_like(focal, (c.hand_size - 1) / 2.0)
        for i, side in enumerate(("right", "left")):
            sl = slice(i * b, (i + 1) * b)
            out = self.mano(side, hands["shape"][sl], orient[sl], pose[sl], transl[sl])
            wrist = out.joints[:, 0]
            verts_rel.append(out.vertices - wrist[:, None])
            roots.append(crop_root_to_camera(wrist, roi[:, i], c.hand_size, c.virtual_focal, focal, princpt))
            proj.append(project(out.joints, virtual_focal, virtual_princpt, behind="clamp"))
            joints_img.append(crop_to_image(heatmap_to_crop(coords[:, i, :, :2].detach(), cells, c.hand_size), roi[:, i], c.hand_size))
        rel_trans = self.relative_translation(torch.stack(joints_img, 1), coords[..., 2].detach())

        result = self.assemble(
            (verts_rel[0], verts_rel[1]),
            (roots[0], roots[1]),
            rel_trans,
            torch.stack([torch.cat([orient[:b], pose[:b]], 1), torch.cat([orient[b:], pose[b:]], 1)], 1),
            torch.stack([hands["shape"][:b], hands["shape"][b:]], 1),
            batch,
        )
        result.update(boxes=boxes, box_centre=centre, box_size=sizes.abs(), roi=roi, joint_img=coords, joint_proj=torch.stack(proj, 1))
        return result

    # ------------------------------------------------------------------------------ losses
    def losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        c = self.cfg
        err = self.elementwise
        targets = self.targets(batch)
        terms = self.common_losses(out, targets)
        b = out["verts"].shape[0]

        # boxes, in cells of the box heatmap (InterWild's units)
        gt_boxes = batch["boxes"].float()
        has_box = (gt_boxes[..., 2] > gt_boxes[..., 0]) & (gt_boxes[..., 3] > gt_boxes[..., 1])
        h, w = self.input_size
        scale = gt_boxes.new_tensor([w, h])
        gt_centre = ((gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2 + 0.5) / scale
        gt_size = (gt_boxes[..., 2:] - gt_boxes[..., :2]) / scale
        cells = gt_boxes.new_tensor([c.body_size[1], c.body_size[0]]) / 2.0 ** (5 - c.box_deconvs)
        terms["box_centre"] = masked_mean(err(out["box_centre"] * cells, gt_centre * cells), has_box)
        terms["box_size"] = masked_mean(err(out["box_size"] * cells, gt_size * cells), has_box)

        # joint heatmap positions and projections, in hand heatmap cells of each crop; x, y count
        # wherever the 2D label is valid, depth only where the 3D label is (InterWild's is_3D)
        valid = batch["joints2d_valid"].bool().reshape(b, 2, NUM_JOINTS)
        gt2d = batch["joints2d"].float().reshape(b, 2, NUM_JOINTS, 2)
        crop_gt = torch.stack([image_to_crop(gt2d[:, i], out["roi"][:, i], c.hand_size) for i in range(2)], 1)
        hm = self.heatmap_cells
        gt_rel = targets["joints_rel"].reshape(b, 2, NUM_JOINTS, 3)
        gt_depth = (gt_rel[..., 2] / c.depth_range + 0.5) * c.heatmap_depth
        gt_img = torch.cat([(crop_gt + 0.5) * hm / c.hand_size - 0.5, gt_depth[..., None]], -1)
        inside = ((crop_gt >= -0.5) & (crop_gt <= c.hand_size - 0.5)).all(-1)
        has_depth = targets["joints_rel_mask"].reshape(b, 2, NUM_JOINTS)
        img_mask = torch.stack([valid & inside, valid & inside, has_depth & inside], -1)
        terms["joint_img"] = masked_mean(err(out["joint_img"], gt_img), img_mask)
        terms["joint_proj"] = masked_mean(err(out["joint_proj"] * hm / c.hand_size, crop_gt * hm / c.hand_size), valid)
        return self.weigh(terms)
