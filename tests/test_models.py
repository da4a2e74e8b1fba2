"""Regressors: output contract, gradients, the mirrored left-hand path, weights, overfitting."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from handrecon import metrics
from handrecon.config import ConfigError, FieldError, load_config, save_config
from handrecon.data.augment import crop_to_input
from handrecon.data.readers import create_reader
from handrecon.engine import Experiment
from handrecon.errors import UserError
from handrecon.models import OUTPUT_KEYS, ModelConfig, build_model, create_model, list_models, model_config
from handrecon.models.dir import DIRConfig
from handrecon.models.interwild import InterWildConfig
from handrecon.models.layers import crop_images

TINY = [name for name in list_models() if name.endswith("_tiny")]
SHAPES = {
    "verts": (1556, 3),
    "joints3d": (42, 3),
    "joints2d": (42, 2),
    "rel_trans": (3,),
    "mano_pose": (2, 48),
    "mano_shape": (2, 10),
}


def _batch(root, hand_model, size, split="train", indices=range(4)):
    reader = create_reader("ih26m", root, split, hand_model)
    return default_collate([crop_to_input(reader[i], size) for i in indices])


def test_registry_lists_full_and_tiny_variants():
    assert {"interwild", "interwild_tiny", "dir", "dir_tiny"} <= set(list_models())
    assert set(SHAPES) == set(OUTPUT_KEYS)


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_output_contract_and_gradients(name, hand_model, procedural_root):
    torch.manual_seed(0)
    model = create_model(name, hand_model)
    batch = _batch(procedural_root, hand_model, model.input_size)
    out = model(batch)
    for key, shape in SHAPES.items():
        assert out[key].shape == (4, *shape), key
        assert torch.isfinite(out[key]).all(), key
    # joints2d is joints3d projected with the batch camera
    j, f, c = out["joints3d"], batch["focal"][:, None], batch["princpt"][:, None]
    torch.testing.assert_close(out["joints2d"], j[..., :2] / j[..., 2:] * f + c, rtol=1e-4, atol=1e-3)
    # joints3d is the mesh's regressed joints
    torch.testing.assert_close(out["joints3d"], hand_model.regress_joints(out["verts"]), rtol=1e-5, atol=1e-6)

    terms = model.losses(out, batch)
    assert terms and all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    # every parameter is reached by some loss: DDP needs no find_unused_parameters
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, missing[:5]
    licensed = ("shapedirs", "posedirs", "v_template", "j_regressor", "mano_layer", "hands_components")  # MANO's arrays
    assert model.state_dict() and not any(name in k.lower() for k in model.state_dict() for name in licensed)


@pytest.mark.parametrize("name", ["interwild", "dir"])
def test_published_sizes_build_and_run(name, hand_model):
    torch.manual_seed(0)
    model = create_model(name, hand_model).eval()
    h, w = model.input_size
    assert (h, w) == {"interwild": (512, 384), "dir": (256, 256)}[name]
    batch = {
        "image": torch.randint(0, 255, (1, h, w, 3), dtype=torch.uint8),
        "focal": torch.tensor([[1.5 * w, 1.5 * w]]),
        "princpt": torch.tensor([[w / 2, h / 2]]),
    }
    with torch.no_grad():
        out = model(batch)
    for key, shape in SHAPES.items():
        assert out[key].shape == (1, *shape), key
    if name == "interwild":  # the hand crops are 256 x 256 and their heatmaps 8 x 8 x 8
        assert model.cfg.hand_size == 256 and out["joint_img"].shape == (1, 2, 21, 3)


def test_wrong_input_size_and_options_are_clear_errors(hand_model):
    model = create_model("dir_tiny", hand_model)
    with pytest.raises(ValueError, match=r"reads \(64, 64\)"):
        model({"image": torch.zeros(1, 32, 32, 3, dtype=torch.uint8)})
    # options are checked by the architecture's config, errors named under the model's name
    with pytest.raises(ConfigError, match=r"^unknown key 'dir_tiny\.not_an_option' \(valid keys under 'dir_tiny': backbone, coord_scale, "):
        create_model("dir_tiny", hand_model, not_an_option=1)
    with pytest.raises(UserError, match="unknown model 'nope'"):
        create_model("nope", hand_model)
    with pytest.raises(UserError, match="no loss term"):
        build_model(ModelConfig(name="dir_tiny", options={"loss_weights": {"boxes": 1.0}}), hand_model)
    with pytest.raises(ConfigError, match=r"^dir_tiny\.joint_embed must be a multiple of ste_heads \(2\), got 33$"):
        create_model("dir_tiny", hand_model, joint_embed=33)
    with pytest.raises(ConfigError, match=r"^interwild_tiny\.sigma must be > 0, got 0\.0$"):
        create_model("interwild_tiny", hand_model, sigma=0)
    with pytest.raises(ConfigError, match=r"^interwild_tiny\.loss_weights\.verts must be >= 0, got -1\.0$"):
        create_model("interwild_tiny", hand_model, loss_weights={"verts": -1.0})
    with pytest.raises(ConfigError, match=r"^expected int for 'interwild_tiny\.hand_size', got '64'$"):
        create_model("interwild_tiny", hand_model, hand_size="64")
    # the crop side must give whole feature cells: an error when the model is built, not at its first batch
    with pytest.raises(UserError, match=r"^hand_size must be a multiple of the stride of backbone 'resnet_tiny' \(32\), got 48$"):
        create_model("interwild_tiny", hand_model, hand_size=48)


def test_architecture_configs_report_bad_values_as_field_errors():
    with pytest.raises(FieldError, match=r"^roi_boxes must be 'pred' or 'gt', got 'box'$"):
        InterWildConfig(roi_boxes="box")
    with pytest.raises(FieldError, match=r"^loss must be one of \['l1', 'smooth_l1'\], got 'l2'$"):
        InterWildConfig(loss="l2")
    with pytest.raises(FieldError, match=r"^root_joint must be 0 \(wrist\) or 9 \(middle MCP\), got 4$"):
        DIRConfig(root_joint=4)
    with pytest.raises(FieldError, match=r"^input_size must be square and a multiple of 32, got \(64, 32\)$"):
        DIRConfig(input_size=(64, 32))
    with pytest.raises(FieldError, match=r"^ste_depth must be >= 2, got 1$"):
        DIRConfig(ste_depth=1)


def test_every_registered_preset_is_a_valid_config_of_its_schema():
    from handrecon.models import _REGISTRY

    schemas = {"interwild": InterWildConfig, "dir": DIRConfig}
    for name in list_models():
        entry = _REGISTRY[name]
        assert entry.config is schemas[name.removesuffix("_tiny")], name
        cfg = model_config(name)
        assert isinstance(cfg, entry.config)
        assert {k: getattr(cfg, k) for k in entry.preset} == dict(entry.preset), name
        assert cfg == entry.config(**entry.preset)  # the rest are the schema's defaults
    assert model_config("dir_tiny").input_size == (64, 64) and model_config("dir").input_size == (256, 256)
    # an option replaces the preset's value, the other preset values stay
    assert model_config("interwild_tiny", hand_size=32) == InterWildConfig(**{**_REGISTRY["interwild_tiny"].preset, "hand_size": 32})


def test_options_reach_the_built_model(hand_model):
    default = create_model("interwild_tiny", hand_model)
    model = create_model("interwild_tiny", hand_model, hand_size=128, heatmap_depth=2)
    stride = model.backbone.stride
    assert (default.cfg.hand_size, default.heatmap_cells) == (64, 64 // stride)
    assert (model.cfg.hand_size, model.heatmap_cells) == (128, 128 // stride)  # the crop side and its heatmap
    assert default.hand_position_net.conv[0].weight.shape[0] == 21 * 4 and model.hand_position_net.conv[0].weight.shape[0] == 21 * 2
    dir_model = build_model(ModelConfig(name="dir_tiny", options={"decoder_channels": 16, "joint_dim": 4}), hand_model)
    assert dir_model.decoder.projecter_4.fusion[0].weight.shape == (16, 4 * 20 * 2, 3, 3)


def test_yaml_options_and_a_dotted_set_merge_deeply(hand_model, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: interwild_tiny\n  options: {hand_size: 96, heatmap_depth: 2, loss_weights: {joints: 2}}\n")
    cfg = load_config(Experiment, path, ["model.options.loss_weights.verts=0", "model.options.body_backbone=resnet_tiny"])
    assert cfg.model.options == {
        "hand_size": 96, "heatmap_depth": 2, "loss_weights": {"joints": 2.0, "verts": 0.0}, "body_backbone": "resnet_tiny",
    }  # fmt: skip
    assert load_config(Experiment, save_config(cfg, tmp_path / "run" / "config.yaml")) == cfg  # what a run folder records
    model = build_model(cfg.model, hand_model)
    assert model.cfg.hand_size == 96 and model.hand_position_net.conv[0].weight.shape[0] == 21 * 2
    assert model.loss_weights["joints"] == 2.0 and model.loss_weights["verts"] == 0.0
    assert model.loss_weights["mano_pose"] == type(model).default_loss_weights()["mano_pose"]
    # a str option keeps the --set text as written
    assert load_config(Experiment, path, ["model.options.pretrained=007"]).model.options["pretrained"] == "007"


def test_model_config_errors_outside_the_loader():
    with pytest.raises(FieldError, match=r"^name must be a registered model \(dir, dir_tiny, interwild, interwild_tiny\), got 'nope'$"):
        ModelConfig(name="nope")
    with pytest.raises(ConfigError, match=r"^options\.joint_embed must be a multiple of ste_heads \(2\), got 33$"):
        ModelConfig(name="dir_tiny", options={"joint_embed": 33})
    assert ModelConfig(name="dir_tiny", options={"input_size": [32, 32]}).options == {"input_size": (32, 32)}


def test_pretrained_weights_come_from_a_local_file(hand_model, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(UserError, match=str(tmp_path / "missing.safetensors")):
        create_model("dir_tiny", hand_model, pretrained=str(tmp_path / "missing.safetensors"))
    # a torchvision-layout checkpoint of the backbone (no classifier), with recognisable values,
    # is what the model starts from
    from handrecon.models.backbone import ResNet

    reference = ResNet("resnet_tiny")
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    save_file(state, str(tmp_path / "backbone.safetensors"))
    model = create_model("dir_tiny", hand_model, pretrained=str(tmp_path / "backbone.safetensors"))
    loaded = dict(model.backbone.named_parameters())
    first = next(k for k in loaded if k.endswith("conv1.weight"))
    assert torch.all(loaded[first] == 0.5)


def _mirror_batch(batch, crop_shift=None):
    """The horizontally mirrored scene: image flipped, principal point and boxes mirrored, and
    the hands' boxes swapped (the mirrored right hand is a left hand). `crop_shift` (B, 2) moves
    the mirrored boxes right by that many pixels."""
    w = batch["image"].shape[2]
    princpt = batch["princpt"].clone()
    princpt[:, 0] = w - 1 - princpt[:, 0]
    boxes = batch["roi_boxes"].flip(1)
    boxes = torch.stack([w - 1 - boxes[..., 2], boxes[..., 1], w - 1 - boxes[..., 0], boxes[..., 3]], -1)
    if crop_shift is not None:
        boxes = boxes + torch.stack([crop_shift, crop_shift * 0, crop_shift, crop_shift * 0], -1)
    return {**batch, "image": batch["image"].flip(2), "princpt": princpt, "roi_boxes": boxes}


def test_interwild_left_hand_path_is_the_mirrored_right_hand_path(hand_model, procedural_root):
    torch.manual_seed(0)
    model = create_model("interwild_tiny", hand_model).eval()
    batch = _batch(procedural_root, hand_model, model.input_size)
    # the right hands' boxes for both hands: the left path then sees exactly the right crop mirrored
    right = batch["boxes"][:, :1]
    batch["roi_boxes"] = torch.cat([right, right], 1)
    # InterWild's crop warp samples crop pixel j at cx + (j - S/2) side / S and mirrors the left
    # crop j -> S - 1 - j: the mirrored box must sit one crop pixel (side / S) to the right for the
    # left crop to be exactly the mirrored right crop
    side = (right[..., 2:] - right[..., :2]).amax(-1).expand(-1, 2) * model.cfg.roi_scale
    with torch.no_grad():
        out = model(batch)
        mirrored = model(_mirror_batch(batch, side / model.cfg.hand_size))
    flip_x = torch.tensor([-1.0, 1.0, 1.0])
    # the mirrored scene's left hand is the original right hand, mirrored through x = 0 (root-relative:
    # the shifted box places it one crop pixel away)
    def rel(o):
        return torch.cat([o["verts"][:, :778] - o["joints3d"][:, :1], o["verts"][:, 778:] - o["joints3d"][:, 21:22]], 1)

    torch.testing.assert_close(rel(mirrored)[:, 778:], rel(out)[:, :778] * flip_x, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(rel(mirrored)[:, :778], rel(out)[:, 778:] * flip_x, atol=2e-4, rtol=1e-4)
    aa = torch.tensor([1.0, -1.0, -1.0]).repeat(16)
    torch.testing.assert_close(mirrored["mano_pose"][:, 1], out["mano_pose"][:, 0] * aa, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mirrored["mano_shape"][:, 1], out["mano_shape"][:, 0], atol=1e-5, rtol=1e-5)


def test_crop_pixels_sample_the_documented_image_positions():
    # crop pixel j of box (x0, x1) sits at x0 + (j + 0.5) * w / S; a linear ramp shows it exactly
    h, w, s = 20, 30, 8
    xs = torch.arange(w, dtype=torch.float32).expand(h, w)
    image = torch.stack([xs, xs * 0, xs * 0])[None]
    box = torch.tensor([[4.0, 5.0, 20.0, 13.0]])
    crop = crop_images(image, box, s, torch.zeros(1, dtype=torch.long))
    expected = 4.0 + (torch.arange(s) + 0.5) * 16.0 / s
    torch.testing.assert_close(crop[0, 0, 3], expected, atol=1e-4, rtol=0)
    flipped = crop_images(image, box, s, torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.bool))
    torch.testing.assert_close(flipped[0, 0, 3], expected.flip(0), atol=1e-4, rtol=0)


def _mpvpe(model, batch, hand_model):
    with torch.no_grad():
        out = model.eval()(batch)
    model.train()
    gt = {k: batch[k].numpy() for k in ("verts", "mesh_valid", "joints3d", "joints_valid")} | {"hand_type": np.array(batch["hand_type"])}
    pred = {"verts": out["verts"].numpy(), "rel_trans": out["rel_trans"].numpy()}
    return metrics.evaluate(pred, gt, hand_model=hand_model).summary["interwild/mpvpe_all_wrist_mm"]


@pytest.mark.slow
@pytest.mark.parametrize("name, steps", [("dir_tiny", 60), ("interwild_tiny", 60)])
def test_tiny_model_overfits_16_samples(name, steps, hand_model, procedural_root):
    torch.manual_seed(0)
    model = create_model(name, hand_model, **({"roi_boxes": "gt"} if name.startswith("interwild") else {}))
    batch = _batch(procedural_root, hand_model, model.input_size, indices=range(16))
    before = _mpvpe(model, batch, hand_model)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(steps):
        loss = sum(model.losses(model(batch), batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _mpvpe(model, batch, hand_model)
    print(f"{name}: MPVPE {before:.1f} -> {after:.1f} mm after {steps} steps")
    assert after < before / 2, (before, after)


def test_interwild_init_is_interwilds_on_the_heads_and_leaves_the_resnets(hand_model):
    """init 'interwild': InterWild's init_weights on every head layer (linear N(0, 0.01), conv
    N(0, 0.001), zero biases); 'rest_pose' adds identity 6D output biases; ResNets untouched."""
    from handrecon.models.backbone import ResNet

    nets = {}
    for init in ("interwild", "rest_pose"):
        torch.manual_seed(0)
        nets[init] = create_model("interwild_tiny", hand_model, init=init)
    heads = [m for name, m in nets["interwild"].named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and ".backbone." not in f".{name}."
             and not name.startswith("body_backbone")]  # fmt: skip
    assert heads
    for m in heads:
        assert m.bias is None or not m.bias.any()
        if m.weight.numel() >= 1000:
            expected = 0.01 if isinstance(m, nn.Linear) else 0.001
            assert 0.8 * expected < float(m.weight.std()) < 1.2 * expected
    for name, module in nets["interwild"].named_modules():
        if isinstance(module, ResNet):
            other = dict(nets["rest_pose"].named_modules())[name]
            for (k, a), b in zip(module.state_dict().items(), other.state_dict().values()):
                assert torch.equal(a, b), (name, k)
    rot = nets["rest_pose"].hand_rotation_net
    assert not nets["interwild"].hand_rotation_net.pose_out[0].bias.any() and rot.pose_out[0].bias.abs().sum() > 0
    with pytest.raises(ConfigError, match=r"interwild_tiny.init must be one of \['interwild', 'rest_pose'\], got 'zeros'"):
        create_model("interwild_tiny", hand_model, init="zeros")


def test_dir_dense_terms_follow_the_seg_and_dense_maps(hand_model, procedural_root, tmp_path):
    """The seg / dense heads train on the batch's maps, or on maps rendered from its ground-truth
    meshes (dense only with a colour code); Lovasz-softmax is 0 for scores equal to the one-hot
    labels and, for one class, the Lovasz extension of the Jaccard loss."""
    from handrecon.models.dir import lovasz_softmax
    from handrecon.render.raster import rasterize

    torch.manual_seed(0)
    model = create_model("dir_tiny", hand_model)
    batch = _batch(procedural_root, hand_model, model.input_size)
    b, s = batch["image"].shape[:2]
    terms = model.losses(model(batch), batch)  # rendered seg, no colour code: no dense target
    assert terms["seg"] > 0 and terms["lovasz"] > 0 and "dense" not in terms and "heads_unused" in terms
    # the rendered classes are the two hands' silhouettes: 1 right, 2 left, 0 elsewhere
    seg, dense, keep = model.render_targets(batch)
    assert dense is None and torch.equal(keep, batch["mesh_valid"].bool().all(1)) and keep.any()
    f, c = batch["focal"].float(), batch["princpt"].float()
    right = rasterize(batch["verts"][:, :778].float(), hand_model.faces_right, f, c, (s, s)).mask[keep]
    left = rasterize(batch["verts"][:, 778:].float(), hand_model.faces_left, f, c, (s, s)).mask[keep]
    seg = seg[keep]
    assert ((seg > 0) == (right | left)).all() and (right & ~left <= (seg == 1)).all() and (left & ~right <= (seg == 2)).all()
    assert (seg == 1).any() and (seg == 2).any()
    np.save(tmp_path / "colors.npy", np.random.default_rng(0).random((778, 3)))
    coloured = create_model("dir_tiny", hand_model, dense_colors=str(tmp_path / "colors.npy"))
    terms = coloured.losses(coloured(batch), batch)
    assert terms["dense"] > 0 and "heads_unused" not in terms
    sum(terms.values()).backward()
    assert coloured.decoder.seg[0].weight.grad.abs().sum() > 0 and coloured.decoder.dense[0].weight.grad.abs().sum() > 0
    batch["seg"] = torch.zeros(b, s, s, dtype=torch.long)  # maps in the batch win over rendered ones
    batch["dense"] = torch.zeros(b, s, s, 3)
    out = model(batch)
    terms = model.losses(out, batch)
    assert float(terms["dense"]) == pytest.approx(float(torch.nn.functional.huber_loss(out["dense"], torch.zeros_like(out["dense"]), delta=0.01)), rel=1e-5)
    with pytest.raises(UserError, match="dense_colors file not found"):
        create_model("dir_tiny", hand_model, dense_colors=str(tmp_path / "missing.npy"))
    labels = torch.randint(0, 3, (2, 5, 5))
    assert float(lovasz_softmax(torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float(), labels)) == 0.0
    # one pixel of each of classes 0 and 1, scores 0.5 everywhere: per class errors (0.5, 0.5) with
    # Jaccard increments summing to 1 -> 0.5; the mean over the two present classes 0.5
    scores = torch.full((1, 2, 1, 2), 0.5)
    assert float(lovasz_softmax(scores, torch.tensor([[[0, 1]]]))) == pytest.approx(0.5)


@pytest.mark.parametrize("root_joint", [0, 9])
def test_dir_places_each_hand_by_its_weak_perspective_camera_and_rel_trans_by_the_offset(hand_model, procedural_root, root_joint):
    """Each hand's root joint sits at depth 2 f / (|s| S) (at most 10 m) on the ray of its pixel (t + 1) S / 2;
    rel_trans (left wrist - right wrist) is -0.15 offset moved from the root joints to the wrists."""
    from handrecon.camera import project

    torch.manual_seed(0)
    model = create_model("dir_tiny", hand_model, root_joint=root_joint).eval()
    batch = _batch(procedural_root, hand_model, model.input_size)
    with torch.no_grad():
        for layer in (model.decoder.projecter_3.regressor.mano_left, model.decoder.projecter_3.regressor.mano_right):
            layer.bias[61] = 5.0  # a weak-perspective scale of a hand in view (depths well under the 10 m cap)
        out = model(batch)
    last = out["stages"][-1]
    s = model.input_size[0]
    cam = last["mano_para"][..., -3:]
    roots = out["verts"].reshape(-1, 2, 778, 3)[:, :, 0] - last["mesh_xyz"][:, :, 0]  # (B, 2, 3)
    f = batch["focal"].float().mean(-1, keepdim=True)
    assert (roots[..., 2] < 9).all()
    torch.testing.assert_close(roots[..., 2], (2 * f / (cam[..., 0].abs() * s)).clamp(max=10.0), rtol=1e-4, atol=1e-5)
    px = project(roots, batch["focal"].float(), batch["princpt"].float())
    torch.testing.assert_close(px, (cam[..., 1:] + 1) * s / 2, rtol=1e-4, atol=1e-3)
    joints = last["joint_xyz"]  # relative to the root joint: the wrist is at minus the root
    wrists_rel = -0.15 * last["offset"] + joints[:, 1, 0] - joints[:, 0, 0]
    torch.testing.assert_close(out["rel_trans"], wrists_rel)
    if root_joint == 0:
        torch.testing.assert_close(out["rel_trans"], -0.15 * last["offset"])


@pytest.mark.slow
def test_a_dir_checkpoint_is_scored_with_the_interwild_protocol_on_hic(hand_model, tmp_path):
    """tools/eval.py scores a dir checkpoint on HIC under --protocol interwild: the model reads the
    two-hand crop, and MRRPE (from DIR's offset) is defined."""
    import json
    import subprocess
    import sys

    from fixtures_formats import make_hic_fixture
    from safetensors.torch import save_file

    from handrecon.config import load_config, save_config
    from handrecon.engine import Experiment
    from handrecon.engine.checkpoint import CONFIG, WEIGHTS
    from handrecon.hand_model.standin import write_standin_mano

    write_standin_mano(tmp_path / "mano")
    make_hic_fixture(tmp_path / "hic", hand_model)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.manual_seed(0)
    model = create_model("dir_tiny", hand_model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / WEIGHTS))
    save_config(load_config(Experiment, None, ["model.name=dir_tiny", f"mano_dir={tmp_path / 'mano'}"]), ckpt / CONFIG)
    cmd = [sys.executable, "tools/eval.py", "--checkpoint", str(ckpt), "--dataset", "hic", "--data-root", str(tmp_path / "hic"),
           "--split", "test", "--protocol", "interwild", "--out", str(tmp_path / "eval"), "--mano-dir", str(tmp_path / "mano")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "framing: hands" in done.stdout
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert np.isfinite(scores["interwild/mrrpe_mm"]) and np.isfinite(scores["interwild/mpvpe_all_wrist_mm"])
