"""The generator's components: Stable Diffusion 1.x from a local diffusers folder, or a tiny
configuration built in code (tests, the quickstart, CPU runs). Nothing is downloaded.

``tiny``: 64x64 images, a 2-block VAE (2x down, latents 32x32), a UNet and ControlNet with
self-attention at 32, 16 and 8 latent cells, a 2-layer CLIP text encoder over the offline tiny
tokenizer. Its ControlNet's conditioning embedding downsamples 2x to match the latents.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from handrecon.errors import UserError

from .fusion_controlnet import FusionControlNetModel

SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


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
    if controlnet is not None:
        if not Path(controlnet).is_dir():
            raise UserError(f"ControlNet folder {controlnet} does not exist")
        net = FusionControlNetModel.from_pretrained(controlnet, **kw)
        net.set_fusion(**fusion)
    else:
        net = FusionControlNetModel.from_unet(unet, **fusion)
    return Components(
        vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw),
        text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw),
        tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **kw),
        unet=unet,
        controlnet=net,
        scheduler=DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **kw),
        resolution=512,
    )


def load_components(base: str, controlnet: str | None = None, seed: int = 0, **fusion) -> Components:
    """``tiny`` or a Stable Diffusion folder; see the two builders."""
    if base == "tiny":
        components = tiny_components(seed, **fusion)
        if controlnet is not None:
            components.controlnet = FusionControlNetModel.from_pretrained(controlnet, local_files_only=True)
            components.controlnet.set_fusion(**fusion)
        return components
    return sd15_components(base, controlnet, **fusion)
