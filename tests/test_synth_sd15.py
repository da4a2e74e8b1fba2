"""The SD 1.5-architecture folder with random weights (synth/models/random_sd15.py)."""
from __future__ import annotations

import pytest
import torch

from synth.models.random_sd15 import sd15_configs, write_random_sd15


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
