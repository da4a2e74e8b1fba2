#!/usr/bin/env python
"""Check a model against its original implementation: python tools/verify_original.py {interwild,dir} --source CLONE.

The original network is built from the user's clone at run time (the clone is never modified),
with small shims for what is not installed here, `.cuda()` as a no-op without a GPU, and a
stand-in MANO (`handrecon.hand_model.standin`) for the licensed one. It gets seeded random
weights, which are saved in the original's checkpoint format and loaded into ours through the
released-checkpoint loader; both run in eval mode on the same images and the largest absolute
difference per output is printed.

- `interwild`: CLONE is facebookresearch/InterWild, built as `get_model('test')`; shims:
  pytorch3d's rotation functions (written out below), kornia (only when it is not importable).
  Whole images (512x384).
- `dir`: CLONE is PengfeiRen96/DIR, built as `DIR(21, mano, root_joint)`. Its manopth layer runs
  as released; only manopth's chumpy loader (`ready_arguments`) is shimmed, reading the MANO
  files through `handrecon.hand_model.mano.load_mano_file`. Also shimmed where not installed:
  einops (imported, unused at these settings), yacs and imgaug (imported by DIR's utils), and
  torchvision's pretrained ResNet-50 download (random weights instead). 256x256 crops.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

from handrecon.cli import run_tool

TOLERANCE_M = 1e-4  # meshes, float32


def _shim_pytorch3d() -> None:
    import torch
    import torch.nn.functional as F

    from handrecon.hand_model.rotation import axis_angle_to_matrix, matrix_to_axis_angle

    def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
        # pytorch3d: Gram-Schmidt on the two 3-vectors, stacked as the matrix's ROWS
        a1, a2 = d6[..., :3], d6[..., 3:]
        b1 = F.normalize(a1, dim=-1)
        b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
        return torch.stack((b1, b2, torch.cross(b1, b2, dim=-1)), dim=-2)

    transforms = types.ModuleType("pytorch3d.transforms")
    transforms.rotation_6d_to_matrix = rotation_6d_to_matrix
    transforms.matrix_to_axis_angle = matrix_to_axis_angle
    transforms.axis_angle_to_matrix = axis_angle_to_matrix
    package = types.ModuleType("pytorch3d")
    package.transforms = transforms
    sys.modules.setdefault("pytorch3d", package)
    sys.modules.setdefault("pytorch3d.transforms", transforms)


def _shim_kornia() -> str:
    try:
        import kornia  # noqa: F401

        return f"kornia {kornia.__version__}"
    except ImportError:
        pass
    import torch
    import torch.nn.functional as F

    def get_affine_matrix2d(translations, center, scale, angle):
        # T(translations) T(center) R(-angle) S(scale) T(-center), (B, 3, 3); InterWild passes angle 0
        rad = torch.deg2rad(-angle)
        cos, sin = torch.cos(rad), torch.sin(rad)
        m = torch.zeros(len(center), 3, 3, dtype=center.dtype, device=center.device)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos * scale[:, 0], -sin * scale[:, 1], sin * scale[:, 0], cos * scale[:, 1]
        m[:, :2, 2] = center - (m[:, :2, :2] @ center[..., None])[..., 0] + translations
        m[:, 2, 2] = 1
        return m

    def warp_affine(src, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=True):
        # dst pixel p samples src at M^-1 p (pixel centres at integers), bilinear, zeros outside
        h, w = dsize
        full = torch.cat([M, M.new_tensor([0, 0, 1]).expand(len(M), 1, 3)], 1)
        inv = torch.inverse(full)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=src.dtype), torch.arange(w, dtype=src.dtype), indexing="ij")
        pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)
        srcpts = (inv[:, None] @ pts[None, :, :, None])[..., :2, 0].reshape(len(M), h, w, 2)
        sh, sw = src.shape[-2:]
        grid = torch.stack([2 * srcpts[..., 0] / (sw - 1) - 1, 2 * srcpts[..., 1] / (sh - 1) - 1], -1)
        return F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=True)

    transform = types.ModuleType("kornia.geometry.transform")
    transform.get_affine_matrix2d, transform.warp_affine = get_affine_matrix2d, warp_affine
    geometry = types.ModuleType("kornia.geometry")
    geometry.transform = transform
    package = types.ModuleType("kornia")
    package.geometry = geometry
    sys.modules.update({"kornia": package, "kornia.geometry": geometry, "kornia.geometry.transform": transform})
    return "kornia shim (not installed)"


def build_original(source: Path, mano_root: Path):
    """InterWild's `Model` from `source`, MANO files from `mano_root`/mano/."""
    import torch

    for sub in ("main", "common"):
        if not (source / sub).is_dir():
            raise SystemExit(f"{source} is not an InterWild clone (no {sub}/)")
    _shim_pytorch3d()
    kornia = _shim_kornia()
    if not torch.cuda.is_available():  # the original moves tensors with .cuda(): keep them on the CPU
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.path[:0] = [str(source / "main"), str(source / "common")]
    import config  # InterWild's main/config.py

    config.cfg.human_model_path = str(mano_root)
    import model as original_model  # InterWild's main/model.py

    return original_model.get_model("test"), config.cfg, kornia


def randomize(net, seed: int) -> None:
    """Seeded random weights that keep activations in range, and plausible box sizes."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else m.weight.shape[0] * 4
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        for size in (net.body_box_net.rhand_size[-1], net.body_box_net.lhand_size[-1]):
            size.weight.mul_(0.05)
            size.bias.copy_(torch.tensor([4.0, 5.0]) + torch.rand(2, generator=g))  # cells of the 64x48 box heatmap
        cam = net.hand_rotation_net.cam_out[-1]
        cam.weight.mul_(0.01)
        cam.bias.copy_(torch.tensor([0.02, -0.01, 0.5]))
        net.hand_rotation_net.shape_out[-1].weight.mul_(0.1)
        net.hand_trans_net.fc[-1].weight.mul_(0.01)  # relative translations of decimetres, not metres


def images(seed: int, n: int, h: int, w: int):
    """Smooth random uint8 images (B, H, W, 3)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1000 + seed)
    low = torch.rand(n, 3, h // 16, w // 16, generator=g)
    img = F.interpolate(low, (h, w), mode="bilinear", align_corners=False) * 0.8 + 0.2 * torch.rand(n, 3, h, w, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def part_counts(net, depth: int = 1) -> dict[str, int]:
    """Parameters per module path of `depth` components."""
    counts: dict[str, int] = {}
    for name, p in net.named_parameters():
        top = ".".join(name.split(".")[:depth])
        counts[top] = counts.get(top, 0) + p.numel()
    return counts


def report_differences(seed: int, pairs: dict) -> dict[str, float]:
    """{output: (ours, original)} -> the largest |ours - original| per output, printed with the
    largest |original| beside it."""
    diffs = {k: float((a - b).abs().max()) for k, (a, b) in pairs.items()}
    width = max(map(len, pairs))
    print(f"seed {seed}: max |ours - original| (max |original|)")
    for k, (_, b) in pairs.items():
        print(f"  {k:{width}s} {diffs[k]:.3e}  ({float(b.abs().max()):.3e})")
    return diffs


def verify(source: Path, seeds: list[int], batch: int = 2) -> dict[int, dict[str, float]]:
    """The largest |ours - original| per output and seed (printed as it goes); no autograd."""
    import torch

    with torch.no_grad():
        return _compare(source, seeds, batch)


def _compare(source: Path, seeds: list[int], batch: int) -> dict[int, dict[str, float]]:
    import torch

    from handrecon.hand_model.mano import HandModel
    from handrecon.hand_model.standin import write_standin_mano
    from handrecon.models import create_model

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_standin_mano(tmp / "mano")
        original, cfg, kornia = build_original(source.resolve(), tmp)
        hand_model = HandModel(tmp / "mano")
        print(f"original: {source} ({kornia}; pytorch3d rotations shimmed; stand-in MANO)")
        ours = create_model("interwild", hand_model)
        theirs_counts, our_counts = part_counts(original), part_counts(ours)
        print("parameters per part (ours / original):")
        for part in sorted(set(theirs_counts) | set(our_counts)):
            print(f"  {part:20s} {our_counts.get(part, 0):>12,d} / {theirs_counts.get(part, 0):>12,d}")
        print(f"  {'total':20s} {sum(our_counts.values()):>12,d} / {sum(theirs_counts.values()):>12,d}")
        h, w = cfg.input_img_shape
        bh, bw = cfg.input_body_shape
        for seed in seeds:
            randomize(original, seed)
            snapshot = tmp / f"snapshot_{seed}.pth"
            torch.save({"network": {"module." + k: v for k, v in original.state_dict().items()}, "epoch": 0, "optimizer": {}}, snapshot)
            ours = create_model("interwild", hand_model, checkpoint=snapshot).eval()
            original.eval()
            img = images(seed, batch, h, w)
            theirs = original({"img": img.permute(0, 3, 1, 2).float() / 255.0}, {}, {}, "test")
            mine = ours({"image": img, "focal": torch.tensor([[600.0, 600.0]]).expand(batch, 2), "princpt": torch.tensor([[w / 2, h / 2]]).expand(batch, 2)})
            jr = mine["joints3d"]
            rel_mesh = torch.stack([mine["verts"][:, :778] - jr[:, :1], mine["verts"][:, 778:] - jr[:, 21:22]], 1)
            rel_joints = torch.stack([jr[:, :21] - jr[:, :1], jr[:, 21:] - jr[:, 21:22]], 1)
            to_img = torch.tensor([w / bw, h / bh, w / bw, h / bh])
            pairs = {
                "mesh (m)": (rel_mesh, torch.stack([theirs["rmano_mesh_cam"], theirs["lmano_mesh_cam"]], 1)),
                "joints 3D (m)": (rel_joints, torch.stack([theirs["rmano_joint_cam"], theirs["lmano_joint_cam"]], 1)),
                "joints 2D (px)": (mine["joints_img"], torch.stack([theirs["rjoint_img"], theirs["ljoint_img"]], 1)[..., :2]),
                "joint depth (cells)": (mine["joint_img"][..., 2], torch.stack([theirs["rjoint_img"], theirs["ljoint_img"]], 1)[..., 2]),
                "root transl (virtual)": (mine["virtual_transl"], torch.stack([theirs["rroot_cam"], theirs["lroot_cam"]], 1)),
                "rel_trans (m)": (mine["rel_trans"], theirs["rel_trans"]),
                "boxes (px)": (mine["boxes"], torch.stack([theirs["rhand_bbox"], theirs["lhand_bbox"]], 1) * to_img),
                "box conf": (mine["box_conf"], torch.stack([theirs["rhand_bbox_conf"], theirs["lhand_bbox_conf"]], 1)),
                "mano pose": (mine["mano_pose"], torch.stack([torch.cat([theirs[f"{s}mano_root_pose"], theirs[f"{s}mano_hand_pose"]], 1) for s in "rl"], 1)),
                "mano shape": (mine["mano_shape"], torch.stack([theirs["rmano_shape"], theirs["lmano_shape"]], 1)),
            }
            results[seed] = report_differences(seed, pairs)
    return results


# --- DIR ------------------------------------------------------------------------------------------
def _empty_module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _shim_dir_imports() -> list[str]:
    """Modules DIR's source imports that are not installed here, and manopth's chumpy loader."""
    import importlib

    import numpy as np
    import scipy.sparse
    import torchvision.models

    from handrecon.hand_model.mano import load_mano_file

    shimmed = []

    class _Array:  # what chumpy gives manopth: an object whose `.r` is the array
        def __init__(self, value):
            self.r = np.asarray(value)

    def ready_arguments(path):
        data = load_mano_file(path)
        out = {k: _Array(data[k]) for k in ("shapedirs", "posedirs", "v_template", "weights")}
        out["betas"] = _Array(np.zeros(data["shapedirs"].shape[-1]))
        out["J_regressor"] = scipy.sparse.csc_matrix(data["J_regressor"])
        out.update({k: np.asarray(data[k]) for k in ("f", "hands_components", "hands_mean", "kintree_table")})
        return out

    wrapper = _empty_module("mano.webuser.smpl_handpca_wrapper_HAND_only", ready_arguments=ready_arguments)
    sys.modules.update({"mano": _empty_module("mano"), "mano.webuser": _empty_module("mano.webuser"), wrapper.__name__: wrapper})
    shimmed.append("manopth's chumpy loader")
    for name, attrs in (
        ("einops", {"rearrange": None, "repeat": None}),
        ("yacs", {}),
        ("yacs.config", {"CfgNode": type("CfgNode", (dict,), {"__init__": lambda self, *a, **k: dict.__init__(self)})}),
        ("imgaug", {}),
        ("imgaug.augmenters", {}),
    ):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = _empty_module(name, **attrs)
            shimmed.append(name)
    pretrained = torchvision.models.resnet50
    torchvision.models.resnet50 = lambda *a, weights=None, **k: pretrained(weights=None)  # no download
    return shimmed


def build_original_dir(source: Path, mano_root: Path, root_joint: int):
    """DIR's `DIR` from `source`, MANO files from `mano_root`."""
    import torch

    for sub in ("models/dir.py", "SemGCN", "transformer", "manopth/manopth"):
        if not (source / sub).exists():
            raise SystemExit(f"{source} is not a DIR clone (no {sub})")
    shimmed = _shim_dir_imports()
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.path[:0] = [str(source), str(source / "manopth")]
    from models.dir import DIR  # DIR's models/dir.py

    return DIR(21, str(mano_root), root_joint), shimmed


def randomize_dir(net, seed: int) -> None:
    """Seeded random weights: activations in range, plausible hands (PCA pose, betas, weak-perspective
    scale about 5 so the hands span a good part of the crop)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("e_0", "e_1")):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("spatial_pos_embed"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif type(m).__name__ == "PGraphConv":
                m.W.copy_(torch.randn(m.W.shape, generator=g) * (1.0 / m.W.shape[2]) ** 0.5)
        heads = [net.init_regressor] + [p.regressor for p in (net.decoder.projecter_4, net.decoder.projecter_3)]
        for head in heads:
            for layer in (head.mano_left, head.mano_right):
                layer.weight.mul_(0.3)
                layer.bias[51:61].mul_(0.5)
                layer.bias[61:].copy_(torch.tensor([5.0, 0.0, 0.0]) + 0.2 * torch.randn(3, generator=g))
            head.offset.weight.mul_(0.3)


def verify_dir(source: Path, seeds: list[int], batch: int = 2, root_joint: int = 0) -> dict[int, dict[str, float]]:
    """The largest |ours - original| per output and seed (printed as it goes); no autograd."""
    import torch

    with torch.no_grad():
        return _compare_dir(source, seeds, batch, root_joint)


def _compare_dir(source: Path, seeds: list[int], batch: int, root_joint: int) -> dict[int, dict[str, float]]:
    import torch

    from handrecon.hand_model.mano import HandModel
    from handrecon.hand_model.standin import write_standin_mano
    from handrecon.models import create_model
    from handrecon.models.layers import normalize_image
    from handrecon.models.released_checkpoint import DIR as DIR_FORMAT
    from handrecon.models.released_checkpoint import format_report, read_snapshot, snapshot_report

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_standin_mano(tmp / "mano")
        original, shimmed = build_original_dir(source.resolve(), tmp / "mano", root_joint)
        hand_model = HandModel(tmp / "mano")
        print(f"original: {source} (shimmed: {', '.join(shimmed)}; stand-in MANO)")
        ours = create_model("dir", hand_model, root_joint=root_joint)
        theirs_counts, our_counts = part_counts(original, depth=2), part_counts(ours, depth=2)
        print("parameters per part (ours / original):")
        for part in sorted(set(theirs_counts) | set(our_counts)):
            print(f"  {part:32s} {our_counts.get(part, 0):>12,d} / {theirs_counts.get(part, 0):>12,d}")
        print(f"  {'total':32s} {sum(our_counts.values()):>12,d} / {sum(theirs_counts.values()):>12,d}")
        size = 256
        for seed in seeds:
            randomize_dir(original, seed)
            path = tmp / f"dir_{seed}.pth"
            torch.save({"net": original.state_dict(), "optimizer": {}, "schedule": {}, "epoch": 0}, path)
            if seed == seeds[0]:
                print(f"key report: {format_report(snapshot_report(ours, read_snapshot(path, DIR_FORMAT)), DIR_FORMAT)}")
            ours = create_model("dir", hand_model, checkpoint=path, root_joint=root_joint).eval()
            original.eval()
            img = images(seed, batch, size, size)
            theirs, _ = original({"img": normalize_image(img)}, None, None)
            mine = ours({"image": img, "focal": torch.tensor([[600.0, 600.0]]).expand(batch, 2), "princpt": torch.tensor([[128.0, 128.0]]).expand(batch, 2)})
            pairs = {}
            for k in range(3):
                t, o = theirs[k], mine["stages"][k]
                for key, unit in (("mesh_xyz", "m"), ("joint_xyz", "m"), ("joint_uv", "uv")):  # what DIR returns per stage
                    ref = torch.stack([t[f"pd_{key}_right"], t[f"pd_{key}_left"]], 1)
                    pairs[f"{key.split('_')[0]} {key.split('_')[1]} stage {k} ({unit})"] = (o[key], ref)
                pairs[f"offset stage {k}"] = (o["offset"], t["pd_offset"])
            dense = theirs[3]
            pairs.update({"seg logits": (mine["seg"], dense["seg"]), "dense": (mine["dense"], dense["dense"]), "bone features": (mine["proj_feat"], dense["proj_feat"])})
            results[seed] = report_differences(seed, pairs)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("model", choices=["interwild", "dir"])
    parser.add_argument("--source", type=Path, required=True, help="a clone of facebookresearch/InterWild or PengfeiRen96/DIR")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--root-joint", type=int, default=0, choices=[0, 9], help="dir: the model's root joint (0 wrist, 9 middle MCP)")
    args = parser.parse_args(argv)
    if args.model == "dir":
        results = verify_dir(args.source, args.seeds, args.batch, args.root_joint)
    else:
        results = verify(args.source, args.seeds, args.batch)
    worst = max(v for r in results.values() for k, v in r.items() if k.startswith("mesh"))
    print(f"largest mesh difference {worst:.3e} m (target <= {TOLERANCE_M:g}): {'OK' if worst <= TOLERANCE_M else 'FAIL'}")
    return 0 if worst <= TOLERANCE_M else 1


if __name__ == "__main__":
    run_tool(main)
