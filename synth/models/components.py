"""The generator's components: Stable Diffusion 1.x from a local diffusers folder, or a tiny
configuration built in code (tests, the quickstart, CPU runs). Nothing is downloaded.

``tiny``: 64x64 images, a 2-block VAE (2x down, latents 32x32), a UNet and ControlNet with
self-attention at 32, 16 and 8 latent cells, a 2-layer CLIP text encoder over the offline tiny
tokenizer. Its ControlNet's conditioning embedding downsamples 2x to match the latents.

A base folder is read at its own size: the resolution is its UNet's latent side times its VAE
factor (512 for SD 1.5), and a ControlNet built on it embeds the condition with as many stride-2
steps as the VAE has (3 for SD 1.5). `save_base` writes components (the tiny ones, say, after
training) as such a folder.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from handrecon.errors import UserError

from .fusion_controlnet import FusionControlNetModel

SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: The ControlNet conditioning embedding's widths for an 8x VAE (Stable Diffusion's, diffusers'
#: default): one stride-2 step between consecutive widths. A base with a smaller VAE factor keeps
#: the first log2(factor) + 1 of them, so the embedded condition matches its latents.
SD_CONDITIONING_CHANNELS = (16, 32, 96, 256)


def vae_scale_factor(vae) -> int:
    """Image pixels per latent cell of a diffusers AutoencoderKL (2 per down block after the first)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@dataclass
class Components:
    vae: object
    text_encoder: object
    tokenizer: object
    unet: object
    controlnet: FusionControlNetModel
    scheduler: object
    resolution: int  # the image side the components are made for

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "controlnet", "scheduler")}


def tiny_components(seed: int = 0, **fusion) -> Components:
    """Random tiny components (deterministic in `seed`); `fusion` sets FusionControlNetModel keys."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from synth.tokenizers import tiny_clip_tokenizer

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.eos_token_id)  # fmt: skip
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=64,
    )  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=32, block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
    )  # fmt: skip
    controlnet = FusionControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16), **fusion)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return Components(vae, text_encoder, tokenizer, unet, controlnet, scheduler, resolution=64)


def sd15_components(folder: str | Path, controlnet: str | Path | None = None, **fusion) -> Components:
    """Stable Diffusion 1.x from a local diffusers folder (unet/, vae/, text_encoder/, tokenizer/,
    scheduler/); the ControlNet from `controlnet` (a saved FusionControlNetModel or diffusers
    ControlNetModel folder) or initialised from the UNet."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    missing = [s for s in SD_SUBFOLDERS if not (folder / s).is_dir()]
    if missing:
        raise UserError(
            f"{folder} is not a Stable Diffusion 1.x diffusers folder: missing {', '.join(s + '/' for s in missing)}. Put Stable "
            "Diffusion 1.5 there in diffusers layout (StableDiffusionPipeline.from_pretrained(...).save_pretrained(FOLDER) where the "
            f"hub is reachable, then copy it), or for a dry run random weights of its architecture: tools/make_random_sd15.py --out {folder}"
        )
    kw = dict(local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
    factor = vae_scale_factor(vae)
    if controlnet is not None:
        if not Path(controlnet).is_dir():
            raise UserError(f"ControlNet folder {controlnet} does not exist")
        net = FusionControlNetModel.from_pretrained(controlnet, **kw)
        net.set_fusion(**fusion)
    else:
        if factor > 2 ** (len(SD_CONDITIONING_CHANNELS) - 1):
            raise UserError(f"{folder / 'vae'}: a VAE factor of {factor} is more than the ControlNet conditioning embedding's 8")
        channels = SD_CONDITIONING_CHANNELS[: factor.bit_length()]  # log2(factor) + 1 widths
        net = FusionControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels, **fusion)
    return Components(
        vae=vae,
        text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw),
        tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **kw),
        unet=unet,
        controlnet=net,
        scheduler=DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **kw),
        resolution=unet.config.sample_size * factor,  # as diffusers' pipelines: 64 latent cells x 8 = 512 for SD 1.5
    )


def write_tokenizer(tokenizer, folder: Path) -> None:
    """`tokenizer` saved by transformers (tokenizer.json, tokenizer_config.json) plus the
    vocab.json and merges.txt that SD 1.5's tokenizer/ folder holds (what slow CLIP tokenizers read)."""
    tokenizer.save_pretrained(folder)
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n", encoding="utf-8")


def write_model_index(folder: Path, scheduler: str) -> None:
    """The model_index.json of a StableDiffusionPipeline folder whose scheduler class is `scheduler`."""
    import diffusers

    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def save_base(parts: Components, folder: str | Path) -> Path:
    """Write the base model of `parts` (UNet, VAE, text encoder, tokenizer, scheduler; not the
    ControlNet) as a Stable Diffusion 1.x diffusers folder that `sd15_components` (and so
    ``model.base``) reads. Atomic: written beside `folder`, then swapped in. Returns the folder."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("unet", "vae", "text_encoder"):
        getattr(parts, name).save_pretrained(tmp / name, safe_serialization=True)
    parts.scheduler.save_pretrained(tmp / "scheduler")
    write_tokenizer(parts.tokenizer, tmp / "tokenizer")
    write_model_index(tmp, type(parts.scheduler).__name__)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_components(base: str, controlnet: str | None = None, seed: int = 0, **fusion) -> Components:
    """``tiny`` or a Stable Diffusion folder; see the two builders."""
    if base == "tiny":
        components = tiny_components(seed, **fusion)
        if controlnet is not None:
            components.controlnet = FusionControlNetModel.from_pretrained(controlnet, local_files_only=True)
            components.controlnet.set_fusion(**fusion)
        return components
    return sd15_components(base, controlnet, **fusion)
