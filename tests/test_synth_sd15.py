"""The Stable Diffusion 1.5 recipe (configs/synth_sd15.yaml), the SD 1.5-architecture folder with
random weights, and the trainer's dry run (tools/synth_train.py --check) on it."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from fixtures_formats import make_mscoco_fixture

from handrecon.config import load_config
from handrecon.data.readers import create_reader
from handrecon.errors import UserError
from synth.models.random_sd15 import sd15_configs, write_random_sd15
from synth.train import GeneratorExperiment

ROOT = Path(__file__).resolve().parents[1]


def test_the_sd15_recipe_loads_with_its_settings():
    cfg = load_config(GeneratorExperiment, ROOT / "configs" / "synth_sd15.yaml")  # every key exists and validates
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    assert (m.base, m.controlnet, m.gradient_checkpointing, m.base_dtype) == ("weights/stable-diffusion-v1-5", None, True, "bf16")
    assert cfg.generator.resolution == 512 and cfg.generator.structural_fusion and cfg.generator.hand_bias == 2.0
    assert t.amp == "bf16" and t.max_steps == 20000
    assert (o.name, o.lr, o.weight_decay, d.batch_size, o.grad_accum) == ("adamw", 1e-5, 1e-2, 4, 2)
    assert cfg.schedule.name == "constant" and cfg.schedule.warmup_steps == 0
    [(name, source)] = d.sources.items()
    assert (source.kind, source.split, source.options) == ("mscoco", "train", {"crop": "hand", "require_fit": True}) and d.ratios == {name: 1.0}
    assert d.dataset == "mscoco" and d.prompts.endswith(".jsonl") and d.empty_prompt_prob == 0.05


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_scale_one_is_stable_diffusion_1_5():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    c = sd15_configs(1.0)
    u, v, te = c["unet"], c["vae"], c["text_encoder"]
    assert (u["block_out_channels"], u["layers_per_block"], u["attention_head_dim"], u["cross_attention_dim"], u["sample_size"]) == (
        [320, 640, 1280, 1280], 2, 8, 768, 64)  # fmt: skip
    assert (v["block_out_channels"], v["latent_channels"], v["scaling_factor"]) == ([128, 256, 512, 512], 4, 0.18215)
    assert (te["hidden_size"], te["num_hidden_layers"], te["num_attention_heads"], te["intermediate_size"]) == (768, 12, 12, 3072)
    assert (te["vocab_size"], te["max_position_embeddings"], c["scheduler"]["_class_name"]) == (49408, 77, "PNDMScheduler")
    with torch.device("meta"):  # shapes only: SD 1.5's parameter counts, nothing allocated
        counts = (_count(UNet2DConditionModel(**u)), _count(AutoencoderKL(**v)), _count(CLIPTextModel(CLIPTextConfig(**te))))
    assert counts == (859_520_964, 83_653_863, 123_060_480)
    with pytest.raises(ValueError, match="scale must be in"):
        sd15_configs(0)


@pytest.fixture(scope="module")
def random_sd15(tmp_path_factory):
    return write_random_sd15(tmp_path_factory.mktemp("sd15") / "base", scale=1 / 16, seed=0)


def test_the_random_folder_loads_as_a_stable_diffusion_base(random_sd15):
    from synth.models.components import load_components

    names = {p.relative_to(random_sd15).as_posix() for p in random_sd15.rglob("*") if p.is_file()}
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
            "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"} <= names  # fmt: skip
    parts = load_components(str(random_sd15))
    assert parts.tokenizer("a photo of a hand")["input_ids"] == [49406, 320, 1125, 539, 320, 2463, 49407]  # SD 1.x's ids
    assert list(parts.unet.config.block_out_channels) == sd15_configs(1 / 16)["unet"]["block_out_channels"]
    assert parts.text_encoder.config.hidden_size == parts.unet.config.cross_attention_dim and parts.resolution == 512


def _tool(name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_check_builds_the_recipe_runs_one_step_and_writes_nothing(tmp_path, random_sd15, mano_dir, hand_model, capsys, monkeypatch):
    """The recipe with the random SD 1.5 folder, MSCOCO hand crops and a prompt cache made for them
    (tools/semantics.py with the reader's options): one step, the figures printed, no run folder."""
    coco = tmp_path / "coco"
    make_mscoco_fixture(coco, "train", hand_model)
    n = len(create_reader("mscoco", coco, "train", hand_model, load_images=False, crop="hand", require_fit=True))
    semantics = _tool("semantics", monkeypatch)
    assert semantics.main(["--set", "dataset=mscoco", f"data_root={coco}", f"mano_dir={mano_dir}", "options.crop=hand", "options.require_fit=true",
                           f"out={tmp_path / 'prompts'}", "semantics.tokenizer=tiny"]) == 0  # fmt: skip
    prompts = re.search(rf"^(\S+\.jsonl): {n} records", capsys.readouterr().out, re.M).group(1)

    out = tmp_path / "run"
    overrides = [
        f"model.base={random_sd15}", f"mano_dir={mano_dir}", f"data.sources.coco.root={coco}", f"data.prompts={prompts}",
        "generator.resolution=64", "data.batch_size=2", "data.num_workers=0", "train.device=cpu", f"out={out}",
    ]  # fmt: skip
    synth_train = _tool("synth_train", monkeypatch)
    assert synth_train.main([str(ROOT / "configs" / "synth_sd15.yaml"), "--check", "--set", *overrides]) == 0
    text = capsys.readouterr().out
    print(text)
    for name, dtype, role in (("vae", "bfloat16", "frozen"), ("text_encoder", "bfloat16", "frozen"), ("unet", "bfloat16", "frozen"),
                              ("controlnet", "float32", "trainable")):  # fmt: skip
        assert re.search(rf"^  {name} +[\d.]+ M  {dtype} +{role}$", text, re.M), name
    trainable, frozen = map(float, re.search(r"^parameters: ([\d.]+) M trainable, ([\d.]+) M frozen$", text, re.M).groups())
    assert trainable > 0 and frozen > trainable
    assert f"data: coco (mscoco, {n} samples); batch 2 x 2 micro-batches a step" in text
    assert re.search(r"^step: [\d.]+ s forward, backward and optimizer .*loss \d+\.\d+$", text, re.M)
    assert re.search(r"^peak memory: [\d.]+ GiB \(CPU: peak RSS of this process by resource.getrusage", text, re.M)
    assert re.search(r"^estimated run: 20000 steps x [\d.]+ s = ", text, re.M)
    assert not out.exists()

    with pytest.raises(UserError, match=r"is not a Stable Diffusion 1\.x diffusers folder: missing unet/, vae/.*tools/make_random_sd15\.py"):
        synth_train.main([str(ROOT / "configs" / "synth_sd15.yaml"), "--check", "--set", *overrides, f"model.base={tmp_path / 'none'}"])
    assert not out.exists()


def test_a_saved_tiny_base_loads_as_a_base_at_its_own_resolution(tmp_path):
    import torch

    from synth.models.components import load_components, save_base, tiny_components

    parts = tiny_components(seed=3)
    folder = save_base(parts, tmp_path / "base")
    loaded = load_components(str(folder))
    assert loaded.resolution == parts.resolution == 64  # the UNet's 32 latent cells x the VAE's 2, not SD's 512
    for name in ("unet", "vae", "text_encoder"):
        saved, read = getattr(parts, name).state_dict(), getattr(loaded, name).state_dict()
        assert saved.keys() == read.keys() and all(torch.equal(saved[k], read[k]) for k in saved)
    assert loaded.tokenizer("a left hand")["input_ids"] == parts.tokenizer("a left hand")["input_ids"]
    # the ControlNet built on it embeds a 64 px condition onto the 32x32 latent grid (a 2x VAE)
    assert loaded.controlnet.controlnet_cond_embedding(torch.zeros(1, 3, 64, 64)).shape[-2:] == (32, 32)
    # saving again replaces the folder whole and leaves nothing beside it
    save_base(tiny_components(seed=4), folder)
    assert not torch.equal(load_components(str(folder)).unet.conv_in.weight, parts.unet.conv_in.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]
