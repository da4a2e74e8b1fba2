"""InterWild (Moon, CVPR 2023, facebookresearch/InterWild), network part by part with its
parameter names, so its released `snapshot_N.pth` loads (`handrecon.models.released_checkpoint`).

Stages (sizes are the defaults, InterWild's; `interwild_tiny` shrinks them). The input is the
raw image in [0, 1] (no mean/std normalisation), 512x384.

1. **Boxes** (`body_backbone`, `body_box_net`). The input resized (bilinear) to 256x192 goes
   through a ResNet-50; three deconvolutions bring it to a 64x48 map, a 1x1 convolution gives a
   2-channel (right, left) heatmap whose soft-argmax is each hand's box centre, and a per-hand MLP
   on the features at that centre gives its (w, h). Centre and size are in heatmap cells (cell x
   is input pixel x * W / 48, no half-cell offset).
2. **Crops** (`hand_roi_net`). Each box made square (side max(w, h) in body-input pixels) and
   scaled by `roi_scale` (2.0) is warped to 256x256 by bilinear sampling: crop pixel j samples the
   image at cx + (j - 256/2) * side / 256 (InterWild's affine warp). The left crop is mirrored so
   one right-hand network serves both hands. During training the crops come from the predicted
   boxes (detached), or from the ground-truth boxes with `roi_boxes: gt`.
3. **Hand network**: `hand_roi_net.backbone` (ResNet-50, 8x8x2048); `hand_position_net`, a 1x1
   convolution to 21 x 8 x (8x8) heatmaps, whose 3D soft-argmax is each joint's cell (x, y) and
   depth; `hand_rotation_net`: features (1x1 conv + BN + ReLU, 512) sampled at those joints plus
   their coordinates give 6D rotations (root + 15; the 6D code is the matrix's first two rows),
   the pooled features give betas and the translation in a virtual crop camera (focal 5000,
   principal point at the crop centre, depth = k * sigmoid(gamma), k = 5000 * 0.6 / 256).
4. **Mesh.** The left hand's outputs are mirrored back: axis-angle (a, b, c) -> (a, -b, -c),
   translation x -> -x, heatmap x -> (S - 1 - 32 x) / 32. MANO (mean-hand pose) gives each mesh;
   joints are the fixed MANO regressor plus five fingertip vertices (not learnable), the mesh is
   taken relative to its wrist. For the toolkit's `verts`, each wrist is moved from its crop's
   virtual camera to the real camera through its crop pixel.
5. **Relative translation** (`hand_trans_net`). Both hands' joints (detached) in input pixels,
   each hand's joint box x 1.2, their union made square; in it each joint is a 3D Gaussian
   (sigma 2.5 cells, peak 255) on a 64^3 grid. A 3x3 convolution (2 x 21 x 64 -> 64 channels,
   BN, ReLU) and ResNet-18's four stages (no stem: they read the 64x64 map directly) give an 8x8
   map; the features at the two wrists plus the wrists' cells give left-minus-right wrist.

Losses (InterWild's, L1): box centre/size (heatmap cells), joint heatmap positions and
projections (hand heatmap cells), root-relative 3D joints x10 (annotated and mesh-regressed),
MANO pose/shape where valid, relative translation. Not reproduced: InterWild's 2D-only (MSCOCO)
training path.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..camera import project, unproject
from ..config import FieldError, check_fields
from ..errors import UserError
from ..hand_model.constants import NUM_JOINTS
from ..hand_model.rotation import axis_angle_to_matrix, matrix_to_axis_angle, rot6d_to_matrix
from ..losses import ELEMENTWISE, masked_mean, root_relative_joints, root_relative_verts
from . import released_checkpoint
from .backbone import ResNet
from .base import HandRegressor
from .layers import identity_rot6d, sample_at, soft_argmax_2d, soft_argmax_3d, square_boxes

# mirror of an axis-angle through the x = 0 plane: (a, b, c) -> (a, -b, -c)
_MIRROR_AA = (1.0, -1.0, -1.0)


LOSS_RULES = ("interwild", "masked_mean")
INITS = ("interwild", "rest_pose")

# weights of the 'masked_mean' rules (the terms InterWild lacks there are off)
_MASKED_MEAN_WEIGHTS = {"verts": 0.0, "mesh_joints": 10.0, "mano_joint_img": 0.0}


def all_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """InterWild's normalisation: `err` with the entries where `mask` (broadcast) is False zeroed,
    averaged over all entries (invalid ones count in the denominator)."""
    mask = mask.to(err.dtype)
    while mask.dim() < err.dim():
        mask = mask.unsqueeze(-1)
    return (err * mask).mean()


def crop_cells(points: torch.Tensor, roi: torch.Tensor, size: int, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2, 21, 2) image pixels -> the hand heatmap cells of each hand's crop `roi` (B, 2, 4)
    and whether each joint falls inside the heatmap (InterWild's truncation, x, y in [0, cells))."""
    crop = torch.stack([image_to_crop(points[:, i], roi[:, i], size) for i in range(2)], 1) * cells / size
    return crop, ((crop >= 0) & (crop < cells)).all(-1)


@dataclass
class InterWildConfig:
    backbone: str = "resnet50"  # hand backbone: resnet18/34/50/101/152 or resnet_tiny (handrecon.models.backbone.RESNETS)
    body_backbone: str = "resnet50"
    trans_backbone: str = "resnet18"  # its four stages (no stem) read the relative-translation heatmaps
    pretrained: str = ""  # local torchvision/timm ResNet weights file for `backbone` and `body_backbone` ('' = random init)
    trans_pretrained: str = ""  # local torchvision/timm ResNet weights file for `trans_backbone`
    input_size: tuple[int, int] = (512, 384)  # (H, W) of the image the model reads
    body_size: tuple[int, int] = (256, 192)
    box_deconvs: int = 3  # x2 upsamplings of the body features for the box-centre heatmap; >= 0
    box_channels: int = 256
    hand_size: int = 256  # side of the hand crops
    heatmap_depth: int = 8
    rot_channels: int = 512
    roi_scale: float = 2.0  # crop side = square box side * roi_scale (InterWild: 2.0)
    roi_boxes: str = "pred"  # crops while training: 'pred' (detached predicted boxes, InterWild) or 'gt'
    trans_heatmap: int = 64  # side of the Gaussian heatmap cube read by the relative-translation branch
    trans_channels: int = 64  # channels of its 3x3 convolution = the stem width of `trans_backbone`
    sigma: float = 2.5  # Gaussian std in heatmap cells
    virtual_focal: float = 5000.0
    camera_3d_size: float = 0.6  # metres spanned by the crop at the depth where gamma = 1
    depth_range: float = 0.3  # metres of root-relative depth covered by the heatmap depth axis
    loss: str = "l1"  # elementwise error: l1 or smooth_l1
    # 'interwild': InterWild's terms (main/model.py): rotation-matrix pose L1, mesh L1 x10, the
    # position net vs the ground-truth MANO joints, every term a mean over all entries with the
    # invalid / out-of-crop ones zeroed. 'masked_mean': the earlier rules, each term averaged over
    # its valid entries only, pose L1 on axis-angle, mesh-joint L1 x10 instead of the mesh term.
    loss_rules: str = "interwild"
    loss_weights: dict[str, float] = field(default_factory=dict)  # loss term -> weight >= 0 (0: off)
    # starting weights of the heads (the ResNets are their own: `pretrained` or random).
    # 'interwild': InterWild's init_weights (main/model.py): conv and deconv weights N(0, 0.001),
    # linear N(0, 0.01), zero biases, batch norms 1 / 0. 'rest_pose': torch's default layer init
    # with the output layers N(0, 0.001) and identity 6D rotation biases, so training from scratch
    # starts at the rest pose with zero shape and offset (steadier for small models trained briefly)
    init: str = "interwild"

    def __post_init__(self) -> None:
        if self.roi_boxes not in ("pred", "gt"):
            raise FieldError("roi_boxes", "'pred' or 'gt'", self.roi_boxes)
        if self.loss not in ELEMENTWISE:
            raise FieldError("loss", f"one of {sorted(ELEMENTWISE)}", self.loss)
        if self.loss_rules not in LOSS_RULES:
            raise FieldError("loss_rules", f"one of {list(LOSS_RULES)}", self.loss_rules)
        if self.init not in INITS:
            raise FieldError("init", f"one of {list(INITS)}", self.init)
        ints = ("input_size", "body_size", "box_channels", "hand_size", "heatmap_depth", "rot_channels", "trans_heatmap", "trans_channels")
        check_fields(self, ">= 1", *ints)
        check_fields(self, "> 0", "roi_scale", "sigma", "virtual_focal", "camera_3d_size", "depth_range")
        check_fields(self, ">= 0", "box_deconvs", "loss_weights")


def rot6d_rows_to_axis_angle(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) InterWild's 6D code (the rotation matrix's first two rows) -> (..., 3) axis-angle."""
    return matrix_to_axis_angle(rot6d_to_matrix(x).transpose(-1, -2))


def affine_crops(image: torch.Tensor, boxes: torch.Tensor, size: int, image_index: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images, (N, 4) boxes -> (N, C, size, size): crop pixel (j, i) samples the
    image bilinearly (zeros outside) at (cx + (j - size/2) (x1 - x0) / size, cy + (i - size/2)
    (y1 - y0) / size), pixel centres at integer coordinates; `flip` mirrors the chosen crops."""
    h, w = image.shape[-2:]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = boxes[:, 2:] - boxes[:, :2] + 1e-8
    steps = torch.arange(size, device=image.device, dtype=image.dtype) - size / 2
    xs = centre[:, :1] + steps * side[:, :1] / size  # (N, size)
    ys = centre[:, 1:] + steps * side[:, 1:] / size
    gx = (2 * xs / (w - 1) - 1)[:, None, :].expand(-1, size, -1)
    gy = (2 * ys / (h - 1) - 1)[:, :, None].expand(-1, -1, size)
    crops = F.grid_sample(image[image_index], torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=True)
    return torch.where(flip[:, None, None, None], crops.flip(-1), crops)


def crop_to_image(points: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, K, 2) crop pixels -> image pixels of the (N, 4) boxes (the inverse of the crop warp)."""
    centre = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    side = boxes[:, None, 2:] - boxes[:, None, :2] + 1e-8
    return centre + (points - size / 2) * side / size


def image_to_crop(points: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, K, 2) image pixels -> crop pixels of the (N, 4) boxes."""
    centre = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    side = boxes[:, None, 2:] - boxes[:, None, :2] + 1e-8
    return (points - centre) * size / side + size / 2


def _conv(cin: int, cout: int, kernel: int, bn_relu: bool) -> nn.Sequential:
    """Conv2d with bias (+ BN + ReLU): InterWild's `make_conv_layers` layout (indices 0, 1)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2)]
    if bn_relu:
        layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class BoxNet(nn.Module):
    """Body features -> (B, 2, 2) box centres and sizes in heatmap cells (right, left), the
    (B, 2) confidences (softmaxed heatmap at the centre) and the heatmap size (h, w)."""

    def __init__(self, cin: int, channels: int, deconvs: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(deconvs):
            layers += [nn.ConvTranspose2d(cin, channels, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            cin = channels
        self.deconv = nn.Sequential(*layers)
        self.bbox_center = _conv(cin, 2, 1, bn_relu=False)
        self.rhand_size = nn.Sequential(nn.Linear(cin, cin), nn.ReLU(inplace=True), nn.Linear(cin, 2))
        self.lhand_size = nn.Sequential(nn.Linear(cin, cin), nn.ReLU(inplace=True), nn.Linear(cin, 2))

    def forward(self, feats: torch.Tensor):
        feats = self.deconv(feats)
        hm = self.bbox_center(feats)
        b, _, fh, fw = hm.shape
        centre = soft_argmax_2d(hm)  # (B, 2, 2)
        at = sample_at(feats, centre.detach())  # (B, 2, C)
        size = torch.stack([self.rhand_size(at[:, 0]), self.lhand_size(at[:, 1])], 1)
        prob = hm.reshape(b, 2, fh * fw).softmax(-1).reshape(b, 2, fh, fw)
        conf = torch.stack([sample_at(prob[:, i : i + 1], centre[:, i : i + 1])[:, 0, 0] for i in range(2)], 1)
        return centre, size, conf, (fh, fw)


class HandRoI(nn.Module):
    def __init__(self, backbone: ResNet):
        super().__init__()
        self.backbone = backbone


class PositionNet(nn.Module):
    """Hand features -> (N, 21, 3) joint (x, y, depth) in heatmap cells."""

    def __init__(self, cin: int, depth: int):
        super().__init__()
        self.depth = depth
        self.conv = _conv(cin, NUM_JOINTS * depth, 1, bn_relu=False)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        n, _, h, w = feats.shape
        return soft_argmax_3d(self.conv(feats).reshape(n, NUM_JOINTS, self.depth, h, w))


class RotationNet(nn.Module):
    """Hand features and joint cells -> root pose (N, 3), hand pose (N, 45) axis-angle, betas
    (N, 10), root translation (N, 3) in the virtual crop camera."""

    def __init__(self, cin: int, channels: int, depth_scale: float):
        super().__init__()
        self.depth_scale = depth_scale
        self.conv = _conv(cin, channels, 1, bn_relu=True)
        joint_feat = NUM_JOINTS * (channels + 3)
        self.root_pose_out = nn.Sequential(nn.Linear(joint_feat, 6))
        self.pose_out = nn.Sequential(nn.Linear(joint_feat, 15 * 6))
        self.shape_out = nn.Sequential(nn.Linear(cin, 10))
        self.cam_out = nn.Sequential(nn.Linear(cin, 3))

    def forward(self, feats: torch.Tensor, joints: torch.Tensor):
        n = feats.shape[0]
        pooled = feats.mean((2, 3))
        shape = self.shape_out(pooled)
        cam = self.cam_out(pooled)
        transl = torch.cat([cam[:, :2], self.depth_scale * torch.sigmoid(cam[:, 2:])], 1)
        jf = torch.cat([sample_at(self.conv(feats), joints[..., :2]), joints], -1).reshape(n, -1)
        root = rot6d_rows_to_axis_angle(self.root_pose_out(jf))
        pose = rot6d_rows_to_axis_angle(self.pose_out(jf).reshape(n, 15, 6)).reshape(n, 45)
        return root, pose, shape, transl


class TransNet(nn.Module):
    """Both hands' joints in input pixels (x, y) and heatmap depth cells -> (B, 3) left - right wrist."""

    def __init__(self, backbone: ResNet, cube: int, channels: int, depth: int, sigma: float):
        super().__init__()
        self.cube, self.depth, self.sigma = cube, depth, sigma
        self.backbone = backbone
        # the ResNet's stem is never run here; kept (frozen) so the parameters match InterWild's
        for p in (*backbone.conv1.parameters(), *backbone.bn1.parameters()):
            p.requires_grad_(False)
        self.conv = _conv(2 * NUM_JOINTS * cube, channels, 3, bn_relu=True)
        self.fc = nn.Sequential(nn.Linear(2 * (backbone.channels + 2), 3))

    def heatmaps(self, right: torch.Tensor, left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 21, 3) per hand -> (B, 2 x 21 x T, T, T) Gaussian cubes and the (B, 2, 21, 3) cube cells."""
        t = self.cube
        joints = torch.stack([right, left], 1)  # (B, 2, 21, 3)
        lo, hi = joints[..., :2].amin(2), joints[..., :2].amax(2)  # (B, 2, 2)
        centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.2
        lo, hi = (centre - half).amin(1), (centre + half).amax(1)  # union (B, 2)
        centre = (lo + hi) / 2
        side = (hi - lo).amax(-1, keepdim=True)  # square, same centre
        xy = (joints[..., :2] - centre[:, None, None]) * t / (side[:, None, None] + 1e-8) + t / 2
        z = joints[..., 2:] / self.depth * t
        cells = torch.cat([xy, z], -1)
        grid = torch.arange(t, device=cells.device, dtype=cells.dtype)
        g = torch.exp(-0.5 * ((grid - cells[..., None]) / self.sigma) ** 2)  # (B, 2, 21, 3, T)
        cube = 255 * g[..., 2, :, None, None] * g[..., 1, None, :, None] * g[..., 0, None, None, :]
        return cube.reshape(joints.shape[0], 2 * NUM_JOINTS * t, t, t), cells

    def forward(self, right: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
        cube, cells = self.heatmaps(right, left)
        feats = self.backbone(self.conv(cube), late=True)
        wrists = cells[:, :, 0, :2] * feats.shape[-1] / self.cube  # (B, 2, 2) feature cells
        wf = torch.cat([sample_at(feats, wrists), wrists], -1)
        return self.fc(wf.flatten(1))


class InterWildNet(HandRegressor):
    """InterWild's `Model`: parameters under InterWild's names (body_backbone, body_box_net,
    hand_roi_net.backbone, hand_position_net, hand_rotation_net, hand_trans_net)."""

    released_format = released_checkpoint.INTERWILD

    def __init__(self, hand_model, cfg: InterWildConfig):
        rules = _MASKED_MEAN_WEIGHTS if cfg.loss_rules == "masked_mean" else {}
        super().__init__(hand_model, cfg.input_size, cfg.loss, {**rules, **cfg.loss_weights})
        self.cfg = cfg
        c = cfg
        self.body_backbone = ResNet(c.body_backbone, c.pretrained)
        self.body_box_net = BoxNet(self.body_backbone.channels, c.box_channels, c.box_deconvs)
        self.hand_roi_net = HandRoI(ResNet(c.backbone, c.pretrained))
        hc = self.backbone.channels
        if c.hand_size % self.backbone.stride:
            stride = self.backbone.stride
            raise UserError(f"hand_size must be a multiple of the stride of backbone '{c.backbone}' ({stride}), got {c.hand_size}")
        self.heatmap_cells = c.hand_size // self.backbone.stride  # side of the joint heatmaps
        self.hand_position_net = PositionNet(hc, c.heatmap_depth)
        self.hand_rotation_net = RotationNet(hc, c.rot_channels, c.virtual_focal * c.camera_3d_size / c.hand_size)
        trans_backbone = ResNet(c.trans_backbone, c.trans_pretrained, stem=c.trans_channels)
        self.hand_trans_net = TransNet(trans_backbone, c.trans_heatmap, c.trans_channels, c.heatmap_depth, c.sigma)
        if c.init == "interwild":
            self._init_heads()
        else:
            self._init_outputs()

    @property
    def backbone(self) -> ResNet:
        return self.hand_roi_net.backbone

    def _init_heads(self) -> None:
        """InterWild's init_weights on every layer outside the ResNets."""
        in_resnets = {id(m) for r in self.modules() if isinstance(r, ResNet) for m in r.modules()}
        for m in self.modules():
            if id(m) in in_resnets:
                continue
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(m.weight, std=0.01 if isinstance(m, nn.Linear) else 0.001)
                if m.bias is not None and not isinstance(m, nn.ConvTranspose2d):
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _init_outputs(self) -> None:
        """`init: rest_pose`: training from scratch starts at the rest pose, zero shape and zero
        relative offset: small output layers, identity 6D biases."""
        r = self.hand_rotation_net
        for seq in (r.root_pose_out, r.pose_out, r.shape_out, r.cam_out, self.hand_trans_net.fc):
            nn.init.normal_(seq[0].weight, std=1e-3)
            nn.init.zeros_(seq[0].bias)
        with torch.no_grad():
            r.root_pose_out[0].bias.copy_(identity_rot6d(1))
            r.pose_out[0].bias.copy_(identity_rot6d(15))

    @staticmethod
    def default_loss_weights() -> dict[str, float]:
        return {
            "box_centre": 1.0, "box_size": 1.0, "joint_img": 1.0, "mano_joint_img": 1.0, "joint_proj": 1.0, "joints": 10.0,
            "mesh_joints": 0.0, "verts": 10.0, "mano_pose": 1.0, "mano_shape": 1.0, "rel_trans": 1.0,
        }  # fmt: skip

    # ------------------------------------------------------------------------------ stages
    def predict_boxes(self, image: torch.Tensor):
        """[0, 1] image -> box centres and sizes (B, 2, 2) as fractions of the box heatmap (W, H),
        confidences (B, 2), the (B, 2, 4) boxes in input pixels and the (B, 2, 4) crop boxes
        (square in body-input pixels, x `roi_scale`)."""
        c = self.cfg
        h, w = image.shape[-2:]
        body = F.interpolate(image, c.body_size, mode="bilinear", align_corners=False)
        centre, size, conf, (fh, fw) = self.body_box_net(self.body_backbone(body))
        hm = centre.new_tensor([fw, fh])
        to_body = centre.new_tensor([c.body_size[1], c.body_size[0]]) / hm
        to_image = centre.new_tensor([w / c.body_size[1], h / c.body_size[0]])
        centre_px, size_px = centre * to_body * to_image, size * to_body * to_image
        boxes = torch.cat([centre_px - size_px / 2, centre_px + size_px / 2], -1)
        side = (size * to_body).amax(-1, keepdim=True) * c.roi_scale  # square in body pixels, as InterWild
        half = side * to_image / 2
        roi = torch.cat([centre_px - half, centre_px + half], -1)
        return centre / hm, size / hm, conf, boxes, roi

    # ------------------------------------------------------------------------------ forward
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        c = self.cfg
        self.check_input(batch)
        image = batch["image"]
        image = image.permute(0, 3, 1, 2).float() / 255.0 if image.dtype == torch.uint8 else image.float()
        b, s = image.shape[0], c.hand_size
        focal, princpt = batch["focal"].float(), batch["princpt"].float()
        centre, sizes, conf, boxes, roi = self.predict_boxes(image)
        roi = roi.detach()
        if self.training and c.roi_boxes == "gt" or "roi_boxes" in batch:
            gt = batch.get("roi_boxes", batch["boxes"]).float()
            has = (gt[..., 2] > gt[..., 0]) & (gt[..., 3] > gt[..., 1])
            roi = torch.where(has[..., None], square_boxes(gt, c.roi_scale), roi)
        flat_roi = roi.transpose(0, 1).reshape(2 * b, 4)  # right crops, then left crops
        index = torch.arange(2 * b, device=image.device)
        flip = index >= b
        with torch.no_grad():
            crops = affine_crops(image, flat_roi, s, index % b, flip)
        feats = self.backbone(crops)
        n, _, fh, fw = feats.shape
        if (fh, fw) != (self.heatmap_cells, self.heatmap_cells):
            raise ValueError(f"hand features are {fh}x{fw}, expected {self.heatmap_cells}: hand_size must be a multiple of the backbone stride")
        coords = self.hand_position_net(feats)  # (2B, 21, 3) cells
        orient, pose, shape, transl = self.hand_rotation_net(feats, coords.detach())

        # mirror the left hand back
        cell = s / fw  # crop pixels per heatmap cell
        mirror = torch.tensor(_MIRROR_AA, device=image.device)
        coords = torch.where(flip[:, None, None], torch.cat([(s - 1 - coords[..., :1] * cell) / cell, coords[..., 1:]], -1), coords)
        orient = torch.where(flip[:, None], orient * mirror, orient)
        pose = torch.where(flip[:, None], (pose.reshape(-1, 15, 3) * mirror).reshape(-1, 45), pose)
        transl = torch.where(flip[:, None], transl * mirror.new_tensor([-1.0, 1.0, 1.0]), transl)

        coords = coords.reshape(2, b, NUM_JOINTS, 3).transpose(0, 1)  # (B, 2, 21, 3) heatmap cells
        verts_rel, roots, proj, joints_img = [], [], [], []
        for i, side in enumerate(("right", "left")):
            sl = slice(i * b, (i + 1) * b)
            out = self.mano(side, shape[sl], orient[sl], pose[sl])
            wrist = out.joints[:, :1]
            verts_rel.append(out.vertices - wrist)
            joint_cam = out.joints - wrist + transl[sl, None]  # virtual crop camera
            uv = joint_cam[..., :2] / (joint_cam[..., 2:] + 1e-4) * c.virtual_focal + s / 2
            proj.append(uv / cell)
            roots.append(self._virtual_to_camera(transl[sl], roi[:, i], focal, princpt))
            joints_img.append(crop_to_image(coords[:, i, :, :2].detach() * cell, roi[:, i], s))
        joints_img = torch.stack(joints_img, 1)  # (B, 2, 21, 2) input pixels
        depth = coords[..., 2:].detach()
        rel_trans = self.hand_trans_net(torch.cat([joints_img[:, 0], depth[:, 0]], -1), torch.cat([joints_img[:, 1], depth[:, 1]], -1))

        result = self.assemble(
            (verts_rel[0], verts_rel[1]),
            (roots[0], roots[1]),
            rel_trans,
            torch.stack([torch.cat([orient[:b], pose[:b]], 1), torch.cat([orient[b:], pose[b:]], 1)], 1),
            torch.stack([shape[:b], shape[b:]], 1),
            batch,
        )
        result.update(
            boxes=boxes, box_centre=centre, box_size=sizes, box_conf=conf, roi=roi, joint_img=coords, joints_img=joints_img,
            joint_proj=torch.stack(proj, 1), virtual_transl=torch.stack([transl[:b], transl[b:]], 1),
        )  # fmt: skip
        return result

    def _virtual_to_camera(self, root: torch.Tensor, boxes: torch.Tensor, focal: torch.Tensor, princpt: torch.Tensor) -> torch.Tensor:
        """A wrist (B, 3) in its crop's virtual camera -> the real camera: back-projected through
        its image pixel at the depth scaled by the real crop focal (focal S / side) over the virtual one."""
        c = self.cfg
        s = c.hand_size
        uv = root[:, None, :2] / root[:, None, 2:] * c.virtual_focal + s / 2
        pix = crop_to_image(uv, boxes, s)[:, 0]
        side = boxes[:, 2] - boxes[:, 0]
        depth = root[:, 2] * focal.mean(-1) * s / side / c.virtual_focal
        return unproject(pix[:, None], depth[:, None], focal, princpt)[:, 0]

    # ------------------------------------------------------------------------------ losses
    def losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        if self.cfg.loss_rules == "interwild":
            return self.interwild_losses(out, batch)
        return self.masked_mean_losses(out, batch)

    def interwild_losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        """InterWild's terms (main/model.py, common/nets/loss.py), each the mean over all entries
        of the elementwise error with invalid entries zeroed; weights from `loss_weights`."""
        c = self.cfg
        err = self.elementwise
        t = self.targets(batch)
        b = out["verts"].shape[0]
        joints_rel = root_relative_joints(out["joints3d"])
        verts_rel = root_relative_verts(out["verts"], out["joints3d"])
        pose = axis_angle_to_matrix(out["mano_pose"].reshape(b, 2, 16, 3))
        gt_pose = axis_angle_to_matrix(t["mano_pose"].reshape(b, 2, 16, 3))
        terms = {
            "joints": all_mean(err(joints_rel, t["joints_rel"]), t["joints_rel_mask"]),
            "mesh_joints": all_mean(err(joints_rel, t["mesh_joints_rel"]), t["mesh_joints_mask"]),
            "verts": all_mean(err(verts_rel, t["verts_rel"]), t["verts_mask"]),
            "mano_pose": all_mean(err(pose, gt_pose), t["mano_mask"]),
            "mano_shape": all_mean(err(out["mano_shape"], t["mano_shape"]), t["mano_mask"]),
            "rel_trans": all_mean(err(out["rel_trans"], t["rel_trans"]), t["rel_trans_mask"]),
        }
        # boxes in box-heatmap cells; InterWild has a right and a left term, each a mean over (B, 2)
        gt_boxes = batch["boxes"].float()
        has_box = (gt_boxes[..., 2] > gt_boxes[..., 0]) & (gt_boxes[..., 3] > gt_boxes[..., 1])
        h, w = self.input_size
        scale = gt_boxes.new_tensor([w, h])
        cells = gt_boxes.new_tensor([c.body_size[1], c.body_size[0]]) / 2.0 ** (5 - c.box_deconvs)
        gt_centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2 / scale
        gt_size = (gt_boxes[..., 2:] - gt_boxes[..., :2]) / scale
        for name, pred, gt in (("box_centre", out["box_centre"], gt_centre), ("box_size", out["box_size"], gt_size)):
            e = err(pred * cells, gt * cells) * has_box[..., None].to(pred.dtype)
            terms[name] = e.mean((0, 2)).sum()
        # heatmap-space terms: a joint counts where its label is valid and it lies inside its crop's
        # heatmap (joint_trunc); depth only for 3D labels (is_3D)
        hm = self.heatmap_cells
        valid = batch["joints2d_valid"].bool().reshape(b, 2, NUM_JOINTS)
        gt_cells, inside = crop_cells(batch["joints2d"].float().reshape(b, 2, NUM_JOINTS, 2), out["roi"], c.hand_size, hm)
        trunc = valid & inside
        gt_depth = (t["joints_rel"].reshape(b, 2, NUM_JOINTS, 3)[..., 2:] / c.depth_range + 0.5) * c.heatmap_depth
        has_depth = t["joints_rel_mask"].reshape(b, 2, NUM_JOINTS)
        img_mask = torch.stack([trunc, trunc, trunc & has_depth], -1)
        terms["joint_img"] = all_mean(err(out["joint_img"], torch.cat([gt_cells, gt_depth], -1)), img_mask)
        terms["joint_proj"] = all_mean(err(out["joint_proj"], gt_cells), trunc)
        # the position net against the joints of the ground-truth MANO fit (mano_joint_img / mano_joint_trunc)
        mesh_joints = self.hand_model.regress_joints(batch["verts"].float())
        mano_2d = project(mesh_joints, batch["focal"].float(), batch["princpt"].float(), behind="clamp")
        mano_cells, mano_inside = crop_cells(mano_2d.reshape(b, 2, NUM_JOINTS, 2), out["roi"], c.hand_size, hm)
        mano_depth = (t["mesh_joints_rel"].reshape(b, 2, NUM_JOINTS, 3)[..., 2:] / c.depth_range + 0.5) * c.heatmap_depth
        mano_trunc = t["mesh_joints_mask"].reshape(b, 2, NUM_JOINTS) & mano_inside
        terms["mano_joint_img"] = all_mean(err(out["joint_img"], torch.cat([mano_cells, mano_depth], -1)), mano_trunc)
        return self.weigh(terms)

    def masked_mean_losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        """The 'masked_mean' rules: each term averaged over its valid entries."""
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
        gt_centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2 / scale
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
        gt_cells = crop_gt * hm / c.hand_size
        gt_img = torch.cat([gt_cells, gt_depth[..., None]], -1)
        inside = ((gt_cells >= 0) & (gt_cells < hm)).all(-1)
        has_depth = targets["joints_rel_mask"].reshape(b, 2, NUM_JOINTS)
        img_mask = torch.stack([valid & inside, valid & inside, has_depth & inside], -1)
        terms["joint_img"] = masked_mean(err(out["joint_img"], gt_img), img_mask)
        terms["joint_proj"] = masked_mean(err(out["joint_proj"], gt_cells), valid)
        return self.weigh(terms)
