"""The generator: fusion ControlNet, mesh conditions, the pipeline."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel

from handrecon.data.augment import crop_to_input
from handrecon.data.readers import create_reader
from synth.condition import HAND_HUES, condition_from_samples, rescale_intrinsics
from synth.models import FusionControlNetModel, fuse_features, mix_positions
from synth.models.components import tiny_components
from synth.pipeline import SesaHandPipeline


@pytest.fixture(scope="module")
def components():
    return tiny_components(seed=0)


def _inputs(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 32, 32, generator=g), torch.randn(batch, 77, 32, generator=g), torch.rand(batch, 3, 64, 64, generator=g)


def _run(net, x, ctx, cond):
    with torch.no_grad():
        down, mid = net(x, 10, ctx, cond, return_dict=False)
    return [*down, mid]


def test_fusion_off_is_exactly_diffusers_controlnet(components):
    fusion = components.controlnet
    plain = ControlNetModel.from_config({k: v for k, v in fusion.config.items() if not k.startswith(("structural_fusion", "fusion_"))})
    plain.load_state_dict(fusion.state_dict())
    # zero convolutions start at zero: give them weights so the outputs carry information
    torch.manual_seed(1)
    for net in (plain, fusion):
        for conv in (*net.controlnet_down_blocks, net.controlnet_mid_block):
            torch.nn.init.normal_(conv.weight, std=0.1, generator=torch.Generator().manual_seed(conv.weight.numel()))
    inputs = _inputs()
    fusion.set_fusion(structural_fusion=False)
    assert all(torch.equal(a, b) for a, b in zip(_run(fusion, *inputs), _run(plain, *inputs)))
    fusion.set_fusion(structural_fusion=True)
    fused = _run(fusion, *inputs)
    reference = _run(plain, *inputs)
    assert all(a.shape == b.shape for a, b in zip(fused, reference))
    assert not torch.allclose(fused[0], reference[0])  # the fusion does act


def test_undetached_maps_refuse_gradient_checkpointing():
    net = tiny_components(seed=0).controlnet
    net.enable_gradient_checkpointing()
    net.set_fusion(fusion_detach=False)
    x, ctx, cond = _inputs()
    with pytest.raises(ValueError, match="fusion_detach=False does not work with gradient checkpointing"):
        net(x, 10, ctx, cond, return_dict=False)
    assert len(_run(net, x, ctx, cond)) == len(net.controlnet_down_blocks) + 1  # no gradients, no recomputation: fine
    net.set_fusion(fusion_detach=True)
    down, mid = net(x, 10, ctx, cond, return_dict=False)
    mid.sum().backward()


def test_fusion_is_a_spatial_matrix_product():
    torch.manual_seed(0)
    f = torch.randn(2, 5, 4, 3)
    psi = torch.softmax(torch.randn(2, 12, 12), -1)
    naive = torch.einsum("bcn,bqn->bcq", f.reshape(2, 5, 12), psi).reshape(2, 5, 4, 3)
    torch.testing.assert_close(mix_positions(f, psi), naive)
    identity = torch.eye(12).expand(2, 12, 12)
    for size in ((4, 3), (8, 6), (2, 1)):  # on, finer than and coarser than the fusion grid (whole cells)
        g = torch.randn(2, 5, *size)
        torch.testing.assert_close(fuse_features(g, identity, (4, 3)), g)
    # finer features: the cell means are mixed, the detail within cells is kept
    fine = torch.randn(2, 5, 8, 6)
    out = fuse_features(fine, psi, (4, 3))
    pool = torch.nn.functional.avg_pool2d
    torch.testing.assert_close(pool(out, 2), mix_positions(pool(fine, 2), psi), rtol=1e-5, atol=1e-6)
    detail = fine - pool(fine, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(out - pool(out, 2).repeat_interleave(2, 2).repeat_interleave(2, 3), detail, rtol=1e-5, atol=1e-6)


def test_save_and_load_round_trip_bit_for_bit(components, tmp_path):
    net = components.controlnet
    net.set_fusion(structural_fusion=True, fusion_resolution=4, fusion_resolutions=(32, 16))
    net.save_pretrained(tmp_path / "cn")
    again = FusionControlNetModel.from_pretrained(tmp_path / "cn", local_files_only=True)
    assert again.config.fusion_resolution == 4 and tuple(again.config.fusion_resolutions) == (32, 16)
    inputs = _inputs(3)
    assert all(torch.equal(a, b) for a, b in zip(_run(net, *inputs), _run(again, *inputs)))
    net.set_fusion(fusion_resolution=8, fusion_resolutions=None)
    with pytest.raises(ValueError, match="unknown fusion keys"):
        net.set_fusion(fusion_grid=3)


def test_condition_rescales_intrinsics_and_colours_each_hand(procedural_root, hand_model):
    focal, princpt = torch.tensor([[100.0, 100.0]]), torch.tensor([[63.5, 31.5]])
    f2, c2 = rescale_intrinsics(focal, princpt, torch.tensor([[64.0, 128.0]]), (32, 64))
    torch.testing.assert_close(f2, torch.tensor([[50.0, 50.0]]))
    torch.testing.assert_close(c2, torch.tensor([[31.5, 15.5]]))  # the image centre stays the centre

    reader = create_reader("ih26m", procedural_root, "test", hand_model)
    samples = [reader[i] for i in range(4)]
    out = condition_from_samples(hand_model, samples, (64, 64))
    assert out["image"].shape == (4, 64, 64, 3) and out["hand"].shape == (4, 64, 64)
    for sample, image, hand in zip(samples, out["image"].numpy(), out["hand"].numpy()):
        for h, side in enumerate(("right", "left")):
            drawn = hand == h
            assert drawn.any() == bool(sample["mano_valid"][h])
            if drawn.sum() > 20:
                hues = np.array([colorsys.rgb_to_hsv(*px)[0] * 360 for px in image[drawn] if px.max() > 0.05])
                lo, hi = HAND_HUES[side]
                assert np.mean((hues >= lo - 1) & (hues <= hi + 1)) > 0.95
        assert (image[hand < 0] == 0).all()


@pytest.fixture(scope="module")
def pipeline(components):
    pipe = SesaHandPipeline(**components.as_dict())
    pipe.set_progress_bar_config(disable=True)
    pipe.set_hand_bias(alpha=2.0, targets="both")
    return pipe


def test_a_seed_reproduces_its_sample(pipeline, procedural_root, hand_model):
    reader = create_reader("ih26m", procedural_root, "test", hand_model)
    samples = [crop_to_input(reader[i], (64, 64)) for i in range(2)]
    prompts = ["two hands clapping", {"prompt": "a fist and an open palm"}]
    kw = dict(samples=samples, hand_model=hand_model, num_inference_steps=1, guidance_scale=3.0)
    first = pipeline.generate(prompts, [11, 12], **kw)
    again = pipeline.generate(prompts, [11, 12], **kw)
    assert np.array_equal(first.images, again.images)
    alone = pipeline.generate(prompts[1:], [12], samples=samples[1:], hand_model=hand_model, num_inference_steps=1, guidance_scale=3.0)
    assert np.abs(alone.images[0].astype(int) - first.images[1]).max() <= 1  # batch-size rounding only
    other = pipeline.generate(prompts[1:], [13], samples=samples[1:], hand_model=hand_model, num_inference_steps=1, guidance_scale=3.0)
    assert not np.array_equal(other.images[0], alone.images[0])
    assert first.images.shape == (2, 64, 64, 3) and first.images.dtype == np.uint8
    assert first.labels[0]["sample_id"] == samples[0]["sample_id"] and first.prompts[1] == "a fist and an open palm"
    assert first.hand_columns == pipeline.hand_columns(first.prompts) and first.hand_columns[1]
    with pytest.raises(ValueError, match="one seed per prompt"):
        pipeline.generate(prompts, [1], **kw)


def test_a_pipeline_shares_the_context_of_installed_bias_processors(procedural_root, hand_model):
    from synth.attention import HandTokenContext, install_hand_bias

    parts = tiny_components(seed=0)
    context = HandTokenContext()
    install_hand_bias(parts.unet, context, 2.0)
    install_hand_bias(parts.controlnet, context, 2.0)
    pipe = SesaHandPipeline(**parts.as_dict())
    assert pipe.hand_context is context  # generate() sets the masks those processors read
    assert SesaHandPipeline(**tiny_components(seed=0).as_dict()).hand_context is not context
    pipe.set_progress_bar_config(disable=True)
    sample = crop_to_input(create_reader("ih26m", procedural_root, "test", hand_model)[0], (64, 64))
    with pytest.raises(ValueError, match="one image per prompt and seed"):
        pipe.generate(["two hands"], [1], samples=[sample], hand_model=hand_model, num_images_per_prompt=2)


def test_settings_come_from_the_controlnet_folder_and_change_only_explicitly(tmp_path, capsys):
    """`controlnet: null` means the defaults; a folder's sesahand_settings.json its values; a folder
    without it the defaults with its config.json's fusion keys; overrides are explicit and listed."""
    import dataclasses
    import json

    from handrecon.errors import UserError
    from synth.pipeline import load_pipeline
    from synth.settings import (
        SETTINGS_FILE,
        GeneratorOverrides,
        GeneratorSettings,
        apply_overrides,
        describe_settings,
        read_settings,
        save_settings,
    )

    assert [f.name for f in dataclasses.fields(GeneratorOverrides)] == [f.name for f in dataclasses.fields(GeneratorSettings)]
    assert read_settings(None) == GeneratorSettings()
    net = tiny_components(seed=0, structural_fusion=False, fusion_resolution=4).controlnet
    bare, folder = tmp_path / "bare", tmp_path / "trained"
    net.save_pretrained(bare)
    assert read_settings(bare) == read_settings(bare) == GeneratorSettings(structural_fusion=False, fusion_resolution=4)
    assert capsys.readouterr().err.count(f"{bare} has no {SETTINGS_FILE}") == 1  # said once
    net.save_pretrained(folder)
    trained = GeneratorSettings(condition_style="hands", crop_margin=2.0, resolution=96, structural_fusion=False, hand_bias=1.0)
    save_settings(trained, folder)
    assert read_settings(folder) == trained

    settings, changed = apply_overrides(trained, GeneratorOverrides(hand_bias=0.5, fusion_resolutions=[]))
    assert changed == {"hand_bias": (1.0, 0.5), "fusion_resolutions": (None, [])} and settings.fusion()["fusion_resolutions"] is None
    assert describe_settings(folder, changed) == (f"generator settings: {folder / SETTINGS_FILE}; overridden by this job: "
                                                   "fusion_resolutions=[] (was null), hand_bias=0.5 (was 1.0)")  # fmt: skip
    assert describe_settings(None, {}) == "generator settings: defaults (controlnet: null); no overrides"

    pipe = load_pipeline("tiny", str(folder), overrides={"hand_bias": 0.5})
    assert pipe.settings == dataclasses.replace(trained, hand_bias=0.5) and pipe.resolution == 96
    assert pipe.controlnet.config.structural_fusion is False and pipe.controlnet.config.fusion_resolution == 8  # the file's, not config.json's
    assert {p.alpha for p in pipe.unet.attn_processors.values() if hasattr(p, "alpha")} == {0.5}
    untrained = load_pipeline("tiny")
    assert untrained.settings == GeneratorSettings(resolution=64) and untrained.controlnet.config.structural_fusion is True

    (folder / SETTINGS_FILE).write_text(json.dumps({"hand_bias": "strong"}))
    with pytest.raises(UserError, match=f"{SETTINGS_FILE}: .*hand_bias"):
        read_settings(folder)
