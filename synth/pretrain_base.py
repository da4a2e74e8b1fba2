"""Training the text-to-image base itself (VAE and UNet) on a dataset's pairs: a stand-in for
pretrained Stable Diffusion where none is at hand (the quickstart, CPU studies), so that the
ControlNet trained on top conditions a model that already draws the data's kind of image.

The pairs are the ControlNet trainer's (`synth.train.PairLoop`): each sample cropped around its
hands to a square at the generation resolution (`generator.crop_margin`, `generator.resolution`),
with its prompt from a prompt cache or the rules chain; the condition is not rendered. One run
has two phases in the shared loop (`handrecon.engine.loop`: resume, logging, checkpoints): for
`train.vae_steps` steps the VAE alone, on L1 reconstruction plus `loss.kl_weight` x its mean KL;
then its `scaling_factor` is set to 1 / the std of its latent means and the UNet alone trains on
the denoising loss of latent diffusion over the fixed VAE's latents. The text encoder stays as
initialised (frozen, like Stable Diffusion's CLIP). Each phase leaves one network without
gradients, so the run is one process (no torchrun).

Every checkpoint holds `base/`, a Stable Diffusion diffusers folder (`save_base`); at the end
`out/base` is written too. Either is what ``model.base`` of `tools/synth_train.py` (and the
cache job and the pipeline) reads. Validation saves a grid of images drawn from the first
samples' prompts next to the real crops.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from handrecon.config import check_fields
from handrecon.data.loader import build_source
from handrecon.engine import checkpoint as ckpt
from handrecon.engine.distributed import barrier
from handrecon.engine.loop import LoopConfig
from handrecon.engine.optim import OptimConfig, ScheduleConfig
from handrecon.errors import UserError
from handrecon.io import atomic_save_image

from .models.components import load_components, save_base
from .settings import GeneratorSettings, make_scheduler, resolve_resolution
from .train import GeneratorData, PairLoop, noised, step_generator


@dataclass
class BaseLoss:
    reconstruction_weight: float = 1.0  # of the VAE's L1 reconstruction term; >= 0
    kl_weight: float = 1e-4  # of the VAE's KL term against N(0, 1), a mean over latent entries; >= 0

    def __post_init__(self) -> None:
        check_fields(self, ">= 0", "kl_weight", "reconstruction_weight")


@dataclass
class BaseTrain(LoopConfig):
    """The loop's keys (handrecon.engine.loop.LoopConfig) with this trainer's defaults, its two
    phases and its validation grid."""

    max_steps: int | None = 2000  # optimizer steps (>= 1), both phases; when set it replaces `epochs`
    # the first optimizer steps train the VAE alone; then its latent scale is measured and the UNet
    # trains on the fixed VAE; 0: the loaded VAE and its scaling_factor are kept (the UNet alone)
    vae_steps: int = 500  # >= 0
    scale_samples: int = 64  # samples (the source's first) whose latents' std sets the VAE's scaling_factor; >= 1
    val_every: int = 500  # optimizer steps between validation grids (and at the end); 0: once per epoch
    ckpt_every: int = 500  # optimizer steps between checkpoints (and at the end); 0: once per epoch
    val_samples: int = 4  # >= 1
    val_inference_steps: int = 20  # denoising steps of the grid; >= 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, ">= 0", "vae_steps")
        check_fields(self, ">= 1", "scale_samples", "val_samples", "val_inference_steps")


@dataclass
class BasePretrainExperiment:
    out: str = "runs/synth_base"
    mano_dir: str = ""  # MANO_RIGHT.pkl / MANO_LEFT.pkl (the crops are framed on the hands' meshes)
    base: str = "tiny"  # where to start: tiny (random tiny components, seeded by train.seed) | a Stable Diffusion 1.x diffusers folder
    # the pairs' crop and prompt keys (synth/settings.py): resolution, crop_margin and prompt_field are read, and the
    # sampler of the validation grid; use the values the ControlNet will be trained with
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    data: GeneratorData = field(default_factory=GeneratorData)
    loss: BaseLoss = field(default_factory=BaseLoss)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, weight_decay=1e-2))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(name="constant", warmup_steps=0))
    train: BaseTrain = field(default_factory=BaseTrain)


def vae_terms(vae, pixels: torch.Tensor, generator: torch.Generator, cfg: BaseLoss) -> dict[str, torch.Tensor]:
    """The VAE's objective: L1 reconstruction of a posterior sample plus the weighted mean KL."""
    posterior = vae.encode(pixels).latent_dist
    recon = vae.decode(posterior.sample(generator)).sample
    terms = {"reconstruction": F.l1_loss(recon.float(), pixels.float()) * cfg.reconstruction_weight}
    if cfg.kl_weight:
        terms["kl"] = posterior.kl().mean() / posterior.mean[0].numel() * cfg.kl_weight
    return terms


class _Trained(torch.nn.Module):
    """The trained networks as one module (what the loop optimises)."""

    def __init__(self, unet, vae):
        super().__init__()
        self.unet, self.vae = unet, vae


class BaseTrainer(PairLoop):
    """The shared loop (handrecon.engine.loop) on the VAE and UNet of a base model."""

    desc = "synth base"

    def __init__(self, cfg: BasePretrainExperiment, resume: bool = False, progress: bool = True):
        super().__init__(cfg, resume, progress)
        if self.dist.enabled:
            # each phase leaves one network without gradients, which DDP's bucketing does not allow
            raise UserError("tools/synth_pretrain_base.py runs in one process; start it without torchrun")
        self.parts = load_components(cfg.base, None, cfg.train.seed)
        self.settings = resolve_resolution(cfg.generator, self.parts)
        self.parts.text_encoder.to(self.device).requires_grad_(False).eval()
        self.trained = _Trained(self.parts.unet, self.parts.vae).to(self.device)
        self.setup_loop(self.trained, *self.setup_pairs(self.parts.tokenizer, self.settings, condition=False))
        self._scaled = cfg.train.vae_steps == 0  # the latent scale is measured once per process, on the fixed VAE

    def train_mode(self) -> None:
        self.trained.train()
        if self.step >= self.cfg.train.vae_steps:
            self.parts.vae.eval()

    def _measure_scale(self) -> None:
        """Set the VAE's scaling_factor to 1 / the std of its latent means over the source's first
        `train.scale_samples` pairs (as Stable Diffusion's 0.18215 was found), so the UNet sees
        unit-variance latents. A function of the VAE's weights: a resumed run measures the same."""
        reader = build_source(self.val_source, self.hand_model)
        vae = self.parts.vae
        with torch.no_grad():
            pixels = torch.stack([self.transform(reader[i], i)["pixel_values"] for i in range(min(self.cfg.train.scale_samples, len(reader)))])
            means = torch.cat([vae.encode(chunk.to(self.device)).latent_dist.mean for chunk in pixels.split(16)])
        vae.register_to_config(scaling_factor=float(1.0 / means.float().std()))
        self._scaled = True

    def losses(self, batch: dict, index: int) -> dict[str, torch.Tensor]:
        generator = step_generator(self.cfg.train.seed, self.step, index, self.dist.rank, self.device)
        pixels = batch["pixel_values"]
        vae = self.parts.vae
        if self.step < self.cfg.train.vae_steps:
            with self.autocast():
                return vae_terms(vae, pixels, generator, self.cfg.loss)
        if not self._scaled:
            self._measure_scale()
            vae.eval()
        with torch.no_grad():
            text = self.parts.text_encoder(batch["input_ids"])[0]
            latents = vae.encode(pixels).latent_dist.sample(generator).float() * vae.config.scaling_factor
        noisy, steps, target = noised(latents, self.parts.scheduler, generator)  # latent diffusion's objective
        with self.autocast():
            return {"denoising": F.mse_loss(self.parts.unet(noisy, steps, text).sample.float(), target.float())}

    def load_weights(self, checkpoint: Path) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
            saved = cls.from_pretrained(checkpoint / "base", subfolder=name, local_files_only=True)
            getattr(self.parts, name).load_state_dict(saved.state_dict())

    def write_checkpoint(self, state: dict, config_yaml: str) -> None:
        ckpt.write_checkpoint(self.run_dir, self.step, lambda folder: save_base(self.parts, folder / "base"), state, config_yaml)

    def fit(self) -> dict[str, float]:
        result = super().fit()
        if self.dist.is_main:
            save_base(self.parts, self.run_dir / "base")
        return result

    def validate(self) -> dict[str, float]:
        """A grid of generated | real crops for the first samples of the first source, from their prompts."""
        if self.dist.is_main:
            from diffusers import StableDiffusionPipeline

            p = self.parts
            pipe = StableDiffusionPipeline(vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, unet=p.unet,
                                           scheduler=make_scheduler(self.settings.scheduler, p.scheduler.config), safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)  # fmt: skip
            pipe.set_progress_bar_config(disable=True)
            reader = build_source(self.val_source, self.hand_model)
            pairs = [self.transform(reader[i], i) for i in range(self.cfg.train.val_samples)]
            side = self.settings.resolution
            self.trained.eval()
            try:
                images = pipe([q["prompt"] for q in pairs], height=side, width=side, num_inference_steps=self.cfg.train.val_inference_steps,
                              guidance_scale=1.0, generator=torch.Generator(self.device).manual_seed(self.cfg.train.seed), output_type="np").images  # fmt: skip
            finally:
                self.train_mode()
            real = [((q["pixel_values"].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255) for q in pairs]
            grid = np.concatenate([np.concatenate([g * 255, r], 1) for g, r in zip(images, real)], 0).round().astype(np.uint8)
            self.writer.add_image("val/generated_real", grid, self.step, dataformats="HWC")
            atomic_save_image(self.run_dir / "images" / f"step_{self.step:08d}.png", grid)
        barrier(self.dist)
        return {}
