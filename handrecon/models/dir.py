"""DIR (Ren et al., ICCV 2023, "Decoupled Iterative Refinement", PengfeiRen96/DIR), network part
by part under its parameter names, so its released checkpoint loads (`handrecon.models.released_checkpoint`).

Sizes are the defaults, DIR's (`dir_tiny` shrinks them). The input is one 256x256 two-hand crop,
ImageNet-normalised RGB.

1. **Backbone** (`backbone`): a ResNet-50 whose four stage outputs c1..c4 (64, 32, 16, 8 cells) feed
   the rest; it keeps torchvision's classifier `fc` (never run), as DIR's does.
2. **Initial regression** (`init_regressor`): per hand a spatial attention map over c4 (3x3 conv,
   BN, ReLU, 1x1 conv, sigmoid) pools the features; a linear layer gives the hand's 64 parameters:
   a 6D root rotation, 45 PCA pose coefficients, 10 betas and a weak-perspective camera (s, tx, ty);
   the globally pooled c4 gives the right-minus-left root offset in units of 0.15 m.
3. **Two refinement stages** (`decoder`), on 16x16 and then 32x32 feature-pyramid features (c4
   upsampled and fused with c3, then with c2, by hourglass residual blocks). In each stage
   (`projecter_4`, `projecter_3`), per hand, the features sampled at the current 2D joints plus an
   embedding of the current 3D joints go through a 4-layer graph convolution over the skeleton
   (`gcn_left` / `gcn_right`, per-joint weights, learnt edge weights); a shared embedding of each
   hand's joints in the two-hand frame is added; a transformer over all 42 joints
   (`interaction`, DIR's STE: 4 blocks built, blocks 1-3 run) mixes the hands; `regressor`
   re-regresses all parameters and the offset from the joint features and the previous (detached)
   parameters; the joint features are projected back onto the image along the 20 bones (each
   cell within `distance` cells of a bone takes its end points' features, weighted by proximity)
   and fused (`fusion`) into the features of the next stage.
4. **Dense heads**: from the last features, `seg` (3 classes: background, right, left) and `dense`
   (3 channels, the mesh-surface code) at 32x32.

Each hand's MANO (6D root, 45 PCA components of the mean-hand pose space) goes through the hand
model (smplx) in the conventions of DIR's manopth layer, converted exactly:
- the root 6D code is manopth's *robust* one (both given directions weighed equally);
- PCA coefficients times MANO's `hands_components` plus `hands_mean` is the axis-angle pose; the
  hand model adds the mean itself (`flat_hand_mean=False`, required);
- the 21 joints are MANO's 16 posed skeleton joints plus fingertip vertices 745, 317, 444
  (right) / 445 (left), 556, 673, in the toolkit's order (manopth's is the same); meshes and
  joints are taken relative to joint `root_joint` (0 wrist, as the released model; 9 middle MCP);
- the left layer's shapedirs sign fix is the hand model's (applied on the same condition).

Weak-perspective 2D: uv = s * xy + t in [-1, 1] crop units; pixel = (uv + 1) * S / 2 (DIR's labels).

Outputs: every stage (`stages`: initial, refinement 1, refinement 2) carries DIR's quantities,
right hand first: `mano_para` (B, 2, 64), `joint_xyz` (B, 2, 21, 3) and `mesh_xyz` (B, 2, 778, 3)
relative to the root joint, `joint_uv` / `mesh_uv` (B, 2, *, 2), `offset` (B, 3). The toolkit's
common outputs come from the last stage: each hand's root is placed in the camera of the input
image through its weak-perspective camera (root pixel (t + 1) S / 2, depth 2 f / (|s| S), at most
10 m);
`rel_trans` (left wrist minus right wrist) is DIR's offset: -0.15 offset for the wrist root, and
moved from the root joints to the wrists along the predicted hands otherwise.

Losses (DIR's, `loss_weights` names): Huber (delta 0.01) on 2D joints/mesh (`joint_uv`, `mesh_uv`),
3D joints/mesh relative to the root joint divided by 0.15 (`joint_xyz`, `mesh_xyz`), the offset
(`offset`), each x10; mesh edge lengths x1 (`edge`) and face normals x0.1 (`normal`) on the same
/0.15 meshes; every stage is supervised (`stage{k}/` terms). On the seg and dense maps, (B, H, W)
labels and (B, H, W, 3) in [0, 1] at the input size, taken from the batch (`seg`, `dense`) or
rendered from its ground-truth meshes (`dense_targets: render`, the dense one only with
`dense_colors`) and downsampled to the heads' size (nearest / bilinear, as DIR): cross-entropy
(class weights 0.1, 0.45, 0.45) x0.1, Lovasz-softmax on the raw logits x0.1 and dense Huber x1.
No MANO-parameter loss. Entries without a label are left out of each mean (DIR's data labels every
entry, where this is DIR's mean).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from ..camera import project, unproject
from ..config import FieldError, check_fields
from ..errors import UserError
from ..hand_model.constants import NUM_JOINTS, NUM_VERTS, SKELETON_21
from ..hand_model.rotation import matrix_to_axis_angle
from ..losses import hand_targets, masked_mean
from . import released_checkpoint
from .backbone import ResNet
from .base import HandRegressor
from .layers import normalize_image

# manopth's fingertip vertices (thumb, index, middle, ring, pinky) per side; the toolkit's joint
# regressor uses 445 for the right middle tip too
DIR_TIPS = {"right": (745, 317, 444, 556, 673), "left": (745, 317, 445, 556, 673)}
# row i of DIR's 21 joints is row DIR_JOINT_ORDER[i] of [16 MANO skeleton joints; 5 tips]
DIR_JOINT_ORDER = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
PARAMS = 6 + 45 + 10 + 3  # root 6D, PCA pose, betas, weak-perspective camera
BONES_PARENT = tuple(a for a, _ in SKELETON_21)
BONES_CHILD = tuple(b for _, b in SKELETON_21)
SEG_CLASS_WEIGHTS = (0.1, 0.45, 0.45)  # background, right, left
MAX_DEPTH = 10.0  # metres: a weak-perspective scale near 0 (an untrained model) places its hand no farther


@dataclass
class DIRConfig:
    backbone: str = "resnet50"  # resnet18/34/50/101/152 or resnet_tiny (handrecon.models.backbone.RESNETS)
    pretrained: str = ""  # local torchvision/timm ResNet weights file for the backbone ('' = random init)
    input_size: tuple[int, int] = (256, 256)  # square, a multiple of 32
    root_joint: int = 0  # joint the meshes and the offset are relative to: 0 wrist (released model), 9 middle MCP
    decoder_channels: int = 256  # fDim: channels of the refinement features; even
    joint_embed: int = 128  # emd_dim: per-joint features in the graph convolution and the transformer
    joint_dim: int = 64  # per-joint features after the transformer (re-regression, bone projection)
    gcn_layers: int = 4
    ste_depth: int = 4  # transformer blocks built; DIR runs blocks 1..depth-1
    ste_heads: int = 4  # divides joint_embed
    ste_mlp_ratio: float = 2.0
    distances: tuple[float, float] = (1.0, 2.0)  # bone-projection radius in cells, per refinement stage
    coord_scale: float = 0.15  # metres per unit of the normalised 3D coordinates and of the offset
    # targets of the seg / dense heads when a batch has no `seg` / `dense` maps: 'render' draws them
    # from the batch's ground-truth meshes at the input size (as DIR's prepare_data.py renders its
    # masks), 'none' leaves those terms out
    dense_targets: str = "render"
    # per-vertex colour code (778, 3) in [0, 1] for the rendered dense target: a .npy file, e.g.
    # IntagHand's misc/v_color.pkl saved with numpy; '' renders no dense target (seg only)
    dense_colors: str = ""
    loss_weights: dict[str, float] = field(default_factory=dict)  # loss term -> weight >= 0 (0: off)

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "input_size", "decoder_channels", "joint_embed", "joint_dim", "gcn_layers", "ste_heads")
        check_fields(self, ">= 2", "ste_depth")
        check_fields(self, "> 0", "ste_mlp_ratio", "distances", "coord_scale")
        check_fields(self, ">= 0", "loss_weights")
        if self.input_size[0] != self.input_size[1] or self.input_size[0] % 32:
            raise FieldError("input_size", "square and a multiple of 32", self.input_size)
        if self.root_joint not in (0, 9):
            raise FieldError("root_joint", "0 (wrist) or 9 (middle MCP)", self.root_joint)
        if self.joint_embed % self.ste_heads:
            raise FieldError("joint_embed", f"a multiple of ste_heads ({self.ste_heads})", self.joint_embed)
        if self.dense_targets not in ("render", "none"):
            raise FieldError("dense_targets", "'render' or 'none'", self.dense_targets)
        if self.decoder_channels % 2:
            raise FieldError("decoder_channels", "even (its blocks halve it)", self.decoder_channels)


def robust_rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(B, 6) -> (B, 3, 3), manopth's `robust_compute_rotation_matrix_from_ortho6d`: the two given
    directions, normalised, are made orthogonal symmetrically about their bisector; columns (x, y, z)."""
    a = F.normalize(x[:, :3], dim=-1, eps=1e-8)
    b = F.normalize(x[:, 3:], dim=-1, eps=1e-8)
    middle, orth = F.normalize(a + b, dim=-1, eps=1e-8), F.normalize(a - b, dim=-1, eps=1e-8)
    a, b = F.normalize(middle + orth, dim=-1, eps=1e-8), F.normalize(middle - orth, dim=-1, eps=1e-8)
    c = F.normalize(torch.linalg.cross(a, b, dim=-1), dim=-1, eps=1e-8)
    return torch.stack([a, b, c], dim=-1)


def _dir_conv_init(module: nn.Module, linear_std: float) -> None:
    """DIR's init_weights: Conv2d weights N(0, sqrt(2 / (k*k*out))), BatchNorm2d 1 / 0, Linear
    weights N(0, linear_std); biases keep torch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, linear_std)


def _embed(cin: int, cout: int) -> nn.Sequential:
    """1x1 Conv1d, BN, ReLU, 1x1 Conv1d over (B, C, joints)."""
    return nn.Sequential(nn.Conv1d(cin, cout, 1), nn.BatchNorm1d(cout), nn.ReLU(), nn.Conv1d(cout, cout, 1))


class Conv(nn.Module):
    """A biased convolution under the name `conv` (DIR's hourglass `Conv`, no BN or ReLU)."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=(kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Residual(nn.Module):
    """Pre-activation bottleneck (BN, ReLU, 1x1 to out/2, BN, ReLU, 3x3, BN, ReLU, 1x1 to out) plus
    the input, through a 1x1 `skip_layer` when the widths differ (built either way, as DIR's)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), Conv(cin, mid, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(mid), Conv(mid, mid, 3)
        self.bn3, self.conv3 = nn.BatchNorm2d(mid), Conv(mid, cout, 1)
        self.skip_layer = Conv(cin, cout, 1)
        self.need_skip = cin != cout
        self.skip_layer.requires_grad_(self.need_skip)  # unused at equal widths: frozen (DDP)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (self.skip_layer(x) if self.need_skip else x)


def skeleton_edge_mask() -> torch.Tensor:
    """(21, 21) bool: the skeleton's bones, both directions, no self loops."""
    mask = torch.zeros(NUM_JOINTS, NUM_JOINTS, dtype=torch.bool)
    for a, b in SKELETON_21:
        mask[a, b] = mask[b, a] = True
    return mask


class PGraphConv(nn.Module):
    """Graph convolution with per-joint weights: out_j = x_j W0_j + sum_k A_jk x_k W1_k + bias,
    A = the softmax over each joint's neighbours of learnt edge weights `e_1` (self weights `e_0`
    softmax to 1 over a single entry)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mask = skeleton_edge_mask()
        self.register_buffer("neighbours", mask, persistent=False)
        self.W = nn.Parameter(torch.empty(2, NUM_JOINTS, cin, cout))
        nn.init.xavier_uniform_(self.W, gain=1.414)
        self.e_0 = nn.Parameter(torch.ones(1, NUM_JOINTS))  # softmaxed over one entry: has no effect
        self.e_1 = nn.Parameter(torch.ones(1, int(mask.sum())))
        self.bias = nn.Parameter(torch.empty(cout).uniform_(-1 / math.sqrt(NUM_JOINTS), 1 / math.sqrt(NUM_JOINTS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own = torch.einsum("bjc,jco->bjo", x, self.W[0])
        other = torch.einsum("bjc,jco->bjo", x, self.W[1])
        logits = torch.full(self.neighbours.shape, float("-inf"), device=x.device, dtype=self.e_1.dtype)
        adjacency = logits.masked_scatter(self.neighbours, self.e_1[0]).softmax(1)
        return own + adjacency.to(x.dtype) @ other + self.bias


class GraphConvBlock(nn.Module):
    """PGraphConv, BatchNorm over channels, ReLU."""

    def __init__(self, dim: int):
        super().__init__()
        self.gconv = PGraphConv(dim, dim)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.gconv(x).transpose(1, 2)).transpose(1, 2))


class GraphConvStack(nn.Module):
    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.gconv_layers = nn.Sequential(*[GraphConvBlock(dim) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gconv_layers(x)


class ImgFeature2JointFeature(nn.Module):
    """Image features bilinearly sampled at the (detached) joints, uv in [-1, 1] (grid_sample's
    align_corners=False convention, zeros outside) -> (B, J, out) through a 1x1 Conv1d embedding."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.filters = _embed(cin, cout)

    def forward(self, feats: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        sampled = F.grid_sample(feats, uv.detach()[:, None], align_corners=False)[:, :, 0]  # (B, C, J)
        return self.filters(sampled).transpose(1, 2)


class STE(nn.Module):
    """DIR's joint transformer: a learnt position embedding, `depth` timm ViT blocks of which blocks
    1..depth-1 run (block 0 is built, unused, as in DIR), each followed by `spatial_norm`; then
    LayerNorm + Linear to `out_dim`."""

    def __init__(self, tokens: int, dim: int, out_dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.spatial_pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        norm = functools.partial(nn.LayerNorm, eps=1e-6)
        self.STEblocks = nn.ModuleList(Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth))
        self.spatial_norm = norm(dim)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.spatial_pos_embed
        for block in list(self.STEblocks)[1:]:
            x = self.spatial_norm(block(x))
        return self.head(x)


class RegressorOffset(nn.Module):
    """Joint features (B, J, C) per hand and the previous parameters -> new parameters and offset."""

    def __init__(self, feat_dim: int):
        super().__init__()
        self.mano_left = nn.Linear(feat_dim + PARAMS, PARAMS)
        self.mano_right = nn.Linear(feat_dim + PARAMS, PARAMS)
        self.offset = nn.Linear(2 * feat_dim + 3, 3)

    def forward(self, left, right, para_left, para_right, offset):
        b = left.shape[0]
        left, right = left.reshape(b, -1), right.reshape(b, -1)
        new_offset = self.offset(torch.cat([left, right, offset], -1))
        new_left = self.mano_left(torch.cat([left, para_left.detach()], -1))
        new_right = self.mano_right(torch.cat([right, para_right.detach()], -1))
        return new_left, new_right, new_offset


class Joint2BoneFeature(nn.Module):
    """One refinement stage (see the module docstring, step 3)."""

    def __init__(self, img_dim: int, embed: int, joint_dim: int, size: int, distance: float, cfg: DIRConfig):
        super().__init__()
        self.gcn_left, self.gcn_right = GraphConvStack(embed, cfg.gcn_layers), GraphConvStack(embed, cfg.gcn_layers)
        self.img2joint_left, self.img2joint_right = ImgFeature2JointFeature(img_dim, embed), ImgFeature2JointFeature(img_dim, embed)
        self.pos_emb_left, self.pos_emb_right, self.global_pos_emb = _embed(3, embed), _embed(3, embed), _embed(3, embed)
        self.interaction = STE(2 * NUM_JOINTS, embed, joint_dim, cfg.ste_depth, cfg.ste_heads, cfg.ste_mlp_ratio)
        self.proj_feat_emb = _embed(joint_dim, joint_dim)
        bones = len(BONES_PARENT)
        self.fusion = nn.Sequential(
            nn.Conv2d(joint_dim * bones * 2, img_dim, 3, 1, 1), nn.BatchNorm2d(img_dim), nn.ReLU(), nn.Conv2d(img_dim, img_dim, 1)
        )
        self.regressor = RegressorOffset(NUM_JOINTS * joint_dim)
        centres = torch.arange(size, dtype=torch.float32) + 0.5
        rows, cols = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("img_gird", torch.stack([cols, rows], -1).reshape(size * size, 2), persistent=False)  # DIR's name
        self.register_buffer("parent", torch.tensor(BONES_PARENT), persistent=False)
        self.register_buffer("child", torch.tensor(BONES_CHILD), persistent=False)
        self.size, self.distance, self.scale = size, distance, cfg.coord_scale

    def forward(self, feats, xyz_left, xyz_right, uv_left, uv_right, para_left, para_right, offset):
        """feats (B, C, S, S); previous joints (B, 21, 3) metres and (B, 21, 2) uv, parameters
        (B, 64), offset (B, 3), all detached -> new (para_left, para_right, offset) and a callback
        that turns the new joints' uv into the fused image features."""
        k = self.scale
        pos_left = self.pos_emb_left((xyz_left / k).transpose(1, 2)).transpose(1, 2)
        pos_right = self.pos_emb_right((xyz_right / k).transpose(1, 2)).transpose(1, 2)
        left = self.gcn_left(pos_left + self.img2joint_left(feats, uv_left))
        right = self.gcn_right(pos_right + self.img2joint_right(feats, uv_right))
        half = offset[:, None] / 2
        left = left + self.global_pos_emb((xyz_left / k - half).transpose(1, 2)).transpose(1, 2)
        right = right + self.global_pos_emb((xyz_right / k + half).transpose(1, 2)).transpose(1, 2)
        joint_feat = self.interaction(torch.cat([left, right], 1))
        left, right = joint_feat[:, :NUM_JOINTS], joint_feat[:, NUM_JOINTS:]
        params = self.regressor(left, right, para_left, para_right, offset)
        left = self.proj_feat_emb(left.transpose(1, 2)).transpose(1, 2)
        right = self.proj_feat_emb(right.transpose(1, 2)).transpose(1, 2)

        def fuse(new_uv_left: torch.Tensor, new_uv_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            img_left, img_right = self.bone_proj(new_uv_left, left), self.bone_proj(new_uv_right, right)
            return self.fusion(torch.cat([img_left, img_right], 1)), img_left + img_right

        return params, fuse

    def bone_proj(self, uv: torch.Tensor, joint_feat: torch.Tensor) -> torch.Tensor:
        """(B, 21, 2) uv and (B, 21, C) joint features -> (B, 20 C, S, S): at each cell centre p and
        bone (a, b) within `distance` cells of p (distance to the segment), the features of a and b
        weighted 1 - |p a| / (|p a| + |p b|) and 1 - |p b| / (...); zero elsewhere."""
        b, _, c = joint_feat.shape
        s = self.size
        cells = (uv + 1) / 2 * s
        pa, pb = cells[:, self.parent][:, None], cells[:, self.child][:, None]  # (B, 1, 20, 2)
        p = self.img_gird[None, :, None]  # (1, S*S, 1, 2)
        d = pb - pa
        d = d / torch.hypot(d[..., 0], d[..., 1])[..., None]
        along = torch.maximum(torch.maximum(((pa - p) * d).sum(-1), ((p - pb) * d).sum(-1)), torch.zeros((), device=uv.device))
        rel = p - pa
        across = rel[..., 0] * d[..., 1] - rel[..., 1] * d[..., 0]
        near = torch.hypot(along, across) < self.distance  # (B, S*S, 20)
        # F.pairwise_distance's eps (1e-6 added to the difference), as DIR measures them
        cells_flat = p.expand(b, -1, pa.shape[2], -1).reshape(-1, 2)
        dist_a = F.pairwise_distance(cells_flat, pa.expand(-1, s * s, -1, -1).reshape(-1, 2))
        dist_b = F.pairwise_distance(cells_flat, pb.expand(-1, s * s, -1, -1).reshape(-1, 2))
        dist_a, dist_b = dist_a.reshape(near.shape), dist_b.reshape(near.shape)
        wa, wb = 1 - dist_a / (dist_a + dist_b), 1 - dist_b / (dist_a + dist_b)
        feat = joint_feat[:, self.parent][:, None] * wa[..., None] + joint_feat[:, self.child][:, None] * wb[..., None]
        feat = torch.where(near[..., None], feat, torch.zeros_like(feat))
        return feat.reshape(b, s, s, -1).permute(0, 3, 1, 2)


class InitRegressor(nn.Module):
    def __init__(self, feat_dim: int):
        super().__init__()

        def attention() -> nn.Sequential:
            half = feat_dim // 2
            return nn.Sequential(nn.Conv2d(feat_dim, half, 3, 1, 1), nn.BatchNorm2d(half), nn.ReLU(), nn.Conv2d(half, 1, 1, 1), nn.Sigmoid())

        self.attention_left, self.attention_right = attention(), attention()
        self.offset = nn.Linear(feat_dim, 3)
        self.mano_left, self.mano_right = nn.Linear(feat_dim, PARAMS), nn.Linear(feat_dim, PARAMS)

    def forward(self, feat: torch.Tensor):
        pooled = []
        for attention in (self.attention_left, self.attention_right):
            attn = attention(feat)
            pooled.append((feat * attn).sum((-1, -2)) / (attn.sum((-1, -2)) + 1e-8))
        return self.mano_left(pooled[0]), self.mano_right(pooled[1]), self.offset(feat.mean((-1, -2)))


class Decoder(nn.Module):
    """DIR's `FusionJointInterIterDecoder`: the two refinement stages and the dense heads."""

    def __init__(self, channels: tuple[int, int, int, int], cfg: DIRConfig):
        super().__init__()
        _, c2, c3, c4 = channels
        f = cfg.decoder_channels
        size = cfg.input_size[0]
        self.up4 = nn.Upsample(scale_factor=2, mode="bilinear")
        self.skip_layer4 = Residual(c3, f)
        self.fusion_layer4 = Residual(c4 + f, f)
        self.projecter_4 = Joint2BoneFeature(f, cfg.joint_embed, cfg.joint_dim, size // 16, cfg.distances[0], cfg)
        self.enhance_layer4 = Residual(2 * f, f)
        self.up3 = nn.Upsample(scale_factor=2, mode="bilinear")
        self.skip_layer3 = Residual(c2, f)
        self.fusion_layer3 = Residual(2 * f, f)
        self.projecter_3 = Joint2BoneFeature(f, cfg.joint_embed, cfg.joint_dim, size // 8, cfg.distances[1], cfg)
        self.enhance_layer3 = Residual(2 * f, f)
        self.conv_final = nn.Sequential(nn.Conv2d(f, f, 3, 1, 1, bias=False), nn.BatchNorm2d(f), nn.ReLU(True), nn.Conv2d(f, f, 1, 1))

        def head() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(f, f // 2, 3, 1, 1), nn.BatchNorm2d(f // 2), nn.ReLU(), nn.Conv2d(f // 2, 3, 1, 1))

        self.seg, self.dense = head(), head()


class DIRNet(HandRegressor):
    """DIR's network: parameters under its names (backbone, init_regressor, decoder)."""

    released_format = released_checkpoint.DIR

    def __init__(self, hand_model, cfg: DIRConfig):
        super().__init__(hand_model, cfg.input_size, "smooth_l1", cfg.loss_weights)
        if hand_model.flat_hand_mean:
            raise UserError("dir needs a hand model with flat_hand_mean=False: its PCA pose space is around MANO's mean hand")
        self.cfg = cfg
        self.backbone = ResNet(cfg.backbone, cfg.pretrained, classifier=True)
        c4 = self.backbone.channels
        self.init_regressor = InitRegressor(c4)
        self.decoder = Decoder(self.backbone.stage_channels, cfg)
        # DIR's init_weights, on the initial regressor and the whole decoder (its transformers'
        # Linear layers included); the backbone keeps its own
        _dir_conv_init(self.init_regressor, 1e-3)
        _dir_conv_init(self.decoder, 1e-3)
        for side in ("right", "left"):
            self.register_buffer(f"tips_{side}", torch.tensor(DIR_TIPS[side]), persistent=False)
        self.register_buffer("joint_order", torch.tensor(DIR_JOINT_ORDER), persistent=False)
        self.register_buffer("seg_weight", torch.tensor(SEG_CLASS_WEIGHTS), persistent=False)
        self.register_buffer("faces", self.hand_model.faces_right, persistent=False)
        self.register_buffer("dense_colors", load_dense_colors(cfg.dense_colors), persistent=False)
        # parameters DIR builds and never runs (the classifier, transformer block 0, the self-edge
        # weights whose one-entry softmax is 1): kept for the checkpoint, frozen, so every trained
        # parameter gets a gradient and DDP needs no find_unused_parameters
        unused = [self.backbone.fc]
        for stage in (self.decoder.projecter_4, self.decoder.projecter_3):
            unused.append(stage.interaction.STEblocks[0])
        for p in (*(q for m in unused for q in m.parameters()), *(m.e_0 for m in self.modules() if isinstance(m, PGraphConv))):
            p.requires_grad_(False)

    @staticmethod
    def default_loss_weights() -> dict[str, float]:
        return {
            "joint_uv": 10.0, "mesh_uv": 10.0, "joint_xyz": 10.0, "mesh_xyz": 10.0, "offset": 10.0, "edge": 1.0, "normal": 0.1,
            "seg": 0.1, "lovasz": 0.1, "dense": 1.0, "heads_unused": 1.0,
        }  # fmt: skip

    # ------------------------------------------------------------------------------ MANO
    def hand_mesh(self, side: str, para: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 64) parameters -> mesh (B, 778, 3) and joints (B, 21, 3) relative to the root joint,
        the axis-angle pose (B, 48) relative to the mean hand, and the camera (B, 3)."""
        root6d, pca, betas, cam = para.split((6, 45, 10, 3), -1)
        layer = self.hand_model.layers[side]
        orient = matrix_to_axis_angle(robust_rot6d_to_matrix(root6d))
        pose = pca @ layer.pca_basis
        out = self.mano(side, betas, orient, pose)
        tips = out.vertices[:, getattr(self, f"tips_{side}")]
        joints = torch.cat([out.skeleton, tips], 1)[:, self.joint_order]
        centre = joints[:, self.cfg.root_joint : self.cfg.root_joint + 1]
        return out.vertices - centre, joints - centre, torch.cat([orient, pose], -1), cam

    def regress(self, para_left: torch.Tensor, para_right: torch.Tensor, offset: torch.Tensor) -> dict[str, torch.Tensor]:
        """One stage's outputs (right hand first), as the module docstring lists them."""
        meshes, joints, poses, cams = zip(self.hand_mesh("right", para_right), self.hand_mesh("left", para_left))
        cam = torch.stack(cams, 1)  # (B, 2, 3)
        mesh, joint = torch.stack(meshes, 1), torch.stack(joints, 1)
        scale, shift = cam[..., None, :1], cam[..., None, 1:]
        return {
            "mano_para": torch.stack([para_right, para_left], 1),
            "mano_pose": torch.stack(poses, 1),
            "mesh_xyz": mesh,
            "joint_xyz": joint,
            "mesh_uv": scale * mesh[..., :2] + shift,
            "joint_uv": scale * joint[..., :2] + shift,
            "offset": offset,
        }

    # ------------------------------------------------------------------------------ forward
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        self.check_input(batch)
        image = normalize_image(batch["image"])
        c1, c2, c3, c4 = self.backbone.stages(image)
        para_left, para_right, offset = self.init_regressor(c4)
        stages = [self.regress(para_left, para_right, offset)]
        d = self.decoder
        feats = d.fusion_layer4(torch.cat([d.up4(c4), d.skip_layer4(c3)], 1))
        proj_feat = None
        for k, (projecter, enhance) in enumerate(((d.projecter_4, d.enhance_layer4), (d.projecter_3, d.enhance_layer3))):
            if k == 1:
                feats = d.fusion_layer3(torch.cat([d.up3(feats), d.skip_layer3(c2)], 1))
            prev = stages[-1]
            (para_left, para_right, offset), fuse = projecter(
                feats,
                prev["joint_xyz"][:, 1].detach(),
                prev["joint_xyz"][:, 0].detach(),
                prev["joint_uv"][:, 1].detach(),
                prev["joint_uv"][:, 0].detach(),
                prev["mano_para"][:, 1].detach(),
                prev["mano_para"][:, 0].detach(),
                prev["offset"].detach(),
            )
            stages.append(self.regress(para_left, para_right, offset))
            img_feat, proj_feat = fuse(stages[-1]["joint_uv"][:, 1], stages[-1]["joint_uv"][:, 0])
            feats = enhance(torch.cat([feats, img_feat], 1))
        final = d.conv_final(feats)
        result = self.to_camera(stages[-1], batch)
        result.update(stages=stages, seg=d.seg(final), dense=d.dense(final), proj_feat=proj_feat)
        return result

    def to_camera(self, stage: dict, batch: dict) -> dict[str, torch.Tensor]:
        """The toolkit's outputs from a stage: each hand's root joint placed in the input image's
        camera by its weak-perspective camera; `rel_trans` from the offset (module docstring)."""
        size = self.input_size[0]
        focal, princpt = batch["focal"].float(), batch["princpt"].float()
        cam = stage["mano_para"][..., -3:]  # (B, 2, 3)
        root_px = (cam[..., 1:] + 1) * size / 2
        depth = (2 * focal.mean(-1, keepdim=True) / (cam[..., 0].abs().clamp(min=1e-6) * size)).clamp(max=MAX_DEPTH)
        roots = unproject(root_px, depth, focal, princpt)  # (B, 2, 3)
        joint = stage["joint_xyz"]
        rel_trans = -self.cfg.coord_scale * stage["offset"] + joint[:, 1, 0] - joint[:, 0, 0]  # joints are root-relative
        mesh = stage["mesh_xyz"]
        return self.assemble((mesh[:, 0], mesh[:, 1]), (roots[:, 0], roots[:, 1]), rel_trans, stage["mano_pose"],
                             stage["mano_para"][..., 51:61], batch)  # fmt: skip

    # ------------------------------------------------------------------------------ losses
    @torch.no_grad()
    def render_targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The seg map (B, H, W) (0 background, 1 right hand, 2 left hand: the classes DIR's
        loader gives the meshes its mask renderer draws) and, with `dense_colors`, the dense map
        (B, H, W, 3) of the batch's ground-truth meshes at the input size; and which samples have
        both meshes (the others are left out: an unlabelled hand would read as background)."""
        from ..render.raster import interpolate, rasterize

        size = tuple(self.input_size)
        verts = batch["verts"].float()
        frags = rasterize(verts, self.hand_model.faces_two_hand, batch["focal"].float(), batch["princpt"].float(), size)
        faces = self.hand_model.faces_right.shape[0]
        seg = torch.where(frags.mask, torch.where(frags.face_idx < faces, 1, 2), 0)
        dense = None
        if self.dense_colors.numel():
            colors = self.dense_colors.to(verts.dtype).repeat(2, 1).expand(verts.shape[0], -1, -1)
            dense = interpolate(frags, self.hand_model.faces_two_hand, colors)
        return seg, dense, batch["mesh_valid"].bool().all(1)

    def losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        """DIR's terms (module docstring), each a Huber mean over the labelled entries."""
        k, size, r = self.cfg.coord_scale, self.input_size[0], self.cfg.root_joint
        t = hand_targets(batch, self.hand_model)
        b = batch["image"].shape[0]
        joints = batch["joints3d"].float().reshape(b, 2, NUM_JOINTS, 3)
        valid = batch["joints_valid"].bool().reshape(b, 2, NUM_JOINTS)
        gt_joint = joints - joints[:, :, r : r + 1]
        joint_mask = valid & valid[:, :, r : r + 1]
        mesh_joints = t["mesh_joints_rel"].reshape(b, 2, NUM_JOINTS, 3)  # wrist-relative, from the mesh
        gt_mesh = t["verts_rel"].reshape(b, 2, NUM_VERTS, 3) - mesh_joints[:, :, r : r + 1]
        mesh_valid = batch["mesh_valid"].bool()  # (B, 2)
        gt_uv = batch["joints2d"].float().reshape(b, 2, NUM_JOINTS, 2) * 2 / size - 1
        uv_mask = batch["joints2d_valid"].bool().reshape(b, 2, NUM_JOINTS)
        verts_px = project(batch["verts"].float(), batch["focal"].float(), batch["princpt"].float(), behind="clamp")
        gt_mesh_uv = verts_px.reshape(b, 2, NUM_VERTS, 2) * 2 / size - 1
        # right-minus-left root offset: from the wrists' relative translation and each hand's root
        # (R_r - L_r) = (R_r - R_0) - (L_0 - R_0) - (L_r - L_0); the root terms vanish for r = 0
        gt_offset = (joints[:, 0, r] - joints[:, 0, 0]) - t["rel_trans"] - (joints[:, 1, r] - joints[:, 1, 0])
        offset_mask = t["rel_trans_mask"] & (joint_mask[:, :, 0].all(1) if r else True)
        terms: dict[str, torch.Tensor] = {}
        for i, stage in enumerate(out["stages"]):
            p = f"stage{i}/"
            terms[p + "joint_uv"] = huber(stage["joint_uv"], gt_uv, uv_mask)
            terms[p + "mesh_uv"] = huber(stage["mesh_uv"], gt_mesh_uv, mesh_valid)
            terms[p + "joint_xyz"] = huber(stage["joint_xyz"] / k, gt_joint / k, joint_mask)
            terms[p + "mesh_xyz"] = huber(stage["mesh_xyz"] / k, gt_mesh / k, mesh_valid)
            terms[p + "offset"] = huber(stage["offset"], gt_offset / k, offset_mask)
            pred, gt = (stage["mesh_xyz"].float() / k).flatten(0, 1), (gt_mesh / k).flatten(0, 1)
            flat_valid = mesh_valid.flatten()
            terms[p + "edge"] = masked_mean(edge_length_loss(pred, gt, self.faces), flat_valid)
            terms[p + "normal"] = masked_mean(normal_vector_loss(pred, gt, self.faces), flat_valid)
        seg_gt, dense_gt, valid = batch.get("seg"), batch.get("dense"), None
        if (seg_gt is None or dense_gt is None) and self.cfg.dense_targets == "render":
            rendered_seg, rendered_dense, valid = self.render_targets(batch)
            seg_gt = rendered_seg if seg_gt is None else seg_gt
            dense_gt = rendered_dense if dense_gt is None else dense_gt
        if seg_gt is None or dense_gt is None:  # heads without targets stay in the graph at zero (DDP)
            terms["heads_unused"] = 0 * (out["seg"].sum() + out["dense"].sum())
        keep = torch.ones(b, dtype=torch.bool, device=out["seg"].device) if valid is None else valid
        if seg_gt is not None and keep.any():
            seg = out["seg"].float()[keep]
            labels = F.interpolate(seg_gt.float()[keep][:, None], seg.shape[-2:], mode="nearest")[:, 0].long()
            terms["seg"] = F.cross_entropy(seg, labels, weight=self.seg_weight.to(seg.dtype))
            terms["lovasz"] = lovasz_softmax(seg, labels)
        if dense_gt is not None and keep.any():
            dense = out["dense"].float()[keep]
            gt = F.interpolate(dense_gt.float()[keep].permute(0, 3, 1, 2), dense.shape[-2:], mode="bilinear")
            terms["dense"] = F.huber_loss(dense, gt, delta=0.01)
        return self.weigh(terms)


def load_dense_colors(path: str) -> torch.Tensor:
    """(778, 3) per-vertex colours in [0, 1] from a .npy file; (0, 3) for ''."""
    if not path:
        return torch.zeros(0, 3)
    file = Path(path)
    if not file.is_file():
        raise UserError(f"dense_colors file not found: {file}; save the (778, 3) per-vertex colour code there as .npy, or set dense_colors to ''")
    colors = np.load(file, allow_pickle=False)
    if colors.shape != (NUM_VERTS, 3) or not np.isfinite(colors).all() or colors.min() < 0 or colors.max() > 1:
        raise UserError(f"{file}: dense_colors must be (778, 3) values in [0, 1], got shape {colors.shape}")
    return torch.from_numpy(colors.astype(np.float32))


def huber(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DIR's SmoothL1Loss (a Huber loss, delta 0.01) averaged over every coordinate of the entries
    where `mask` (a prefix of pred's dims) holds; without invalid entries DIR's batch mean."""
    return masked_mean(F.huber_loss(pred.float(), target.float(), reduction="none", delta=0.01), mask)


def _face_vectors(v: torch.Tensor, faces: torch.Tensor):
    a, b, c = v[:, faces[:, 0]], v[:, faces[:, 1]], v[:, faces[:, 2]]
    return a, b, c


def edge_length_loss(pred: torch.Tensor, gt: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(N, V, 3) meshes -> (N,) mean over faces and their three edges of | |pred edge| - |gt edge| |
    (lengths with DIR's 1e-12 under the square root)."""
    def lengths(v):
        a, b, c = _face_vectors(v, faces)
        return torch.stack([((a - b) ** 2).sum(-1), ((a - c) ** 2).sum(-1), ((b - c) ** 2).sum(-1)], -1).add(1e-12).sqrt()

    return (lengths(pred) - lengths(gt)).abs().mean((1, 2))


def normal_vector_loss(pred: torch.Tensor, gt: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(N, V, 3) meshes -> (N,) mean over faces of |cos| between each predicted face edge (unit)
    and the ground-truth face normal."""
    a, b, c = _face_vectors(pred, faces)
    edges = torch.stack([F.normalize(b - a, dim=-1), F.normalize(c - a, dim=-1), F.normalize(c - b, dim=-1)], 2)
    ga, gb, gc = _face_vectors(gt, faces)
    normal = F.normalize(torch.linalg.cross(F.normalize(gb - ga, dim=-1), F.normalize(gc - ga, dim=-1), dim=-1), dim=-1)
    return (edges * normal[:, :, None]).sum(-1).abs().mean((1, 2))


def lovasz_softmax(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax (Berman et al. 2018) over the classes present in `labels`, whole batch, on
    the (B, C, H, W) scores as given (DIR passes the raw logits)."""
    c = scores.shape[1]
    scores, labels = scores.permute(0, 2, 3, 1).reshape(-1, c), labels.reshape(-1)
    losses = []
    for cls in range(c):
        fg = (labels == cls).to(scores.dtype)
        if not fg.any():
            continue
        errors, order = (fg - scores[:, cls]).abs().sort(descending=True)
        fg_sorted = fg[order]
        total = fg_sorted.sum()
        jaccard = 1 - (total - fg_sorted.cumsum(0)) / (total + (1 - fg_sorted).cumsum(0))
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(errors @ grad)
    return torch.stack(losses).mean() if losses else scores.sum() * 0
