"""A Stable Diffusion 1.5 diffusers folder with random weights: SD 1.5's architecture and
configs, for runs and tests that need the layout and the shapes but not the trained weights
(``tools/make_random_sd15.py``; ``model.base`` of the generator trainer reads it like the real one).

The folder holds ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and
``model_index.json``, as ``StableDiffusionPipeline.save_pretrained`` writes them. The configs are
SD 1.5's: UNet2DConditionModel (block_out_channels 320/640/1280/1280, 2 layers per block,
8 attention heads, cross-attention 768, 64x64 latents), AutoencoderKL (128/256/512/512, 4 latent
channels, scaling factor 0.18215), CLIPTextModel (the ViT-L/14 text tower: width 768, 12 layers,
12 heads, MLP 3072, 49,408 ids, 77 positions, quick-GELU) and the PNDM scheduler config SD 1.5
ships. The tokenizer is this toolkit's offline CLIP tokenizer (:mod:`synth.tokenizers`), whose
ids are SD 1.x's; nothing is downloaded.

``scale`` in (0, 1] shrinks the networks for tests: widths are multiplied by it (rounded up to
multiples of 32, the GroupNorm group count, and of 64, the text encoder's head width), layer
counts too (at least 1); the block structure, the latent stride (8 x 8 = 64 px per latent
cell at the UNet's coarsest level), the vocabulary and the scheduler stay. ``scale=1`` is the
full architecture: about 1.07 G parameters (UNet 860 M, text encoder 123 M, VAE 84 M), 4.3 GB
of fp32 weights.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

#: SD 1.5's scheduler/scheduler_config.json.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _width(full: int, scale: float, multiple: int) -> int:
    return max(multiple, math.ceil(full * scale / multiple) * multiple)


def _layers(full: int, scale: float) -> int:
    return max(1, round(full * scale))


def sd15_configs(scale: float = 1.0) -> dict[str, dict[str, Any]]:
    """The unet, vae, text_encoder and scheduler configs of SD 1.5 at `scale` (module docstring)."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    text_width = _width(768, scale, 64)  # 64-wide heads, as ViT-L/14's text tower
    unet = {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [_width(c, scale, 32) for c in (320, 640, 1280, 1280)],
        "layers_per_block": _layers(2, scale),
        "attention_head_dim": 8,
        "cross_attention_dim": text_width,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
    }
    vae = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [_width(c, scale, 32) for c in (128, 256, 512, 512)],
        "layers_per_block": _layers(2, scale),
        "latent_channels": 4,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }
    text_encoder = {
        "vocab_size": 49408,
        "hidden_size": text_width,
        "intermediate_size": 4 * text_width,
        "num_hidden_layers": _layers(12, scale),
        "num_attention_heads": text_width // 64,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 768,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": dict(SD15_SCHEDULER)}


def write_random_sd15(folder: str | Path, scale: float = 1.0, seed: int = 0, tokenizer: str = "sd15") -> Path:
    """Write an SD 1.5-architecture diffusers folder with random weights (fp32, safetensors) to
    `folder`; the same `scale` and `seed` give the same weights. `tokenizer`: ``sd15`` (SD 1.x's
    vocabulary, needs the open-clip-torch package) or ``tiny``. Returns the folder."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from synth.tokenizers import load_clip_tokenizer

    from .components import write_model_index, write_tokenizer

    configs = sd15_configs(scale)  # checks scale before anything is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_tokenizer(load_clip_tokenizer(tokenizer), folder / "tokenizer")
    PNDMScheduler.from_config(configs["scheduler"]).save_pretrained(folder / "scheduler")
    builders = {
        "text_encoder": lambda c: CLIPTextModel(CLIPTextConfig(**c)),
        "vae": lambda c: AutoencoderKL(**c),
        "unet": lambda c: UNet2DConditionModel(**c),
    }
    for offset, (name, build) in enumerate(builders.items()):  # one at a time: at scale 1 the UNet alone is 3.4 GB
        torch.manual_seed(seed * 1000 + offset)
        model = build(configs[name])
        model.save_pretrained(folder / name, safe_serialization=True)
        del model
    write_model_index(folder, "PNDMScheduler")
    return folder


__all__ = ["SD15_SCHEDULER", "sd15_configs", "write_random_sd15"]
