"""SesaHandPipeline: hand labels + a prompt -> realistic images with those exact labels.

A subclass of diffusers' `StableDiffusionControlNetPipeline`: it renders the mesh condition from
the labels (`synth.condition`), finds each prompt's hand-token columns (`synth.hand_tokens`),
puts the hand-bias processors on the UNet and/or ControlNet (`synth.attention`) and runs the
parent's sampling loop with one `torch.Generator` per sample, so any sample is reproduced from
its seed alone, whatever else is in the batch.

How it generates is the ControlNet's `GeneratorSettings` (`synth.settings`): `load_pipeline`
reads them from the ControlNet folder (an override is explicit), `from_components` applies them
(fusion keys, scheduler, hand bias) and `generate` defaults to them (condition style, resolution,
prompt field, steps, guidance).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionControlNetPipeline

from handrecon.data.augment import crop_to_input

from .attention import (
    HAND_BIAS_TARGETS,
    HandBiasAttnProcessor,
    HandTokenContext,
    attention_layers,
    install_hand_bias,
    remove_hand_bias,
)
from .condition import condition_from_samples, to_control_tensor
from .settings import GeneratorSettings, apply_overrides, make_scheduler, read_settings, resolve_resolution

# Loggers that warn on every prompt longer than the text encoder's 77 tokens. The pipeline
# truncates knowingly (hand columns are computed on the truncated tokens), so they are quiet
# during `generate`.
_TRUNCATION_LOGGERS = ("diffusers.pipelines.controlnet.pipeline_controlnet", "transformers.tokenization_utils_base")


@contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@dataclass
class SesaHandOutput:
    images: np.ndarray  # (B, H, W, 3) uint8
    conditions: np.ndarray  # (B, H, W, 3) uint8, the mesh condition each image was drawn from
    prompts: list[str]
    hand_columns: list[list[int]]
    seeds: list[int]
    labels: list[dict] | None  # the samples' labels, unchanged (None when a condition image was given)


class SesaHandPipeline(StableDiffusionControlNetPipeline):
    """`StableDiffusionControlNetPipeline` plus hand-token bias and mesh conditions."""

    def __init__(self, vae, text_encoder, tokenizer, unet, controlnet, scheduler, safety_checker=None, feature_extractor=None,
                 image_encoder=None, requires_safety_checker: bool = False):  # fmt: skip
        super().__init__(vae, text_encoder, tokenizer, unet, controlnet, scheduler, safety_checker, feature_extractor, image_encoder,
                         requires_safety_checker)  # fmt: skip
        # bias processors already on the models (a training run's) keep their context: share it
        installed = [m.processor.context for net in (unet, controlnet) for m in attention_layers(net, "cross").values()
                     if isinstance(m.processor, HandBiasAttnProcessor)]  # fmt: skip
        self.hand_context = installed[0] if installed else HandTokenContext()
        self._finder = None
        self.settings = GeneratorSettings()  # what generate() defaults to (from_components sets a ControlNet's)

    @classmethod
    def from_components(cls, parts, settings: GeneratorSettings) -> SesaHandPipeline:
        """A pipeline over `parts` (`synth.models.components.Components`) that generates as
        `settings` say: their fusion keys on the ControlNet, their scheduler (from the base's
        scheduler config), their hand bias; `generate` defaults to the rest. The scheduler of
        `parts` is left as it is (training keeps its noise scheduler)."""
        settings = resolve_resolution(settings, parts)
        parts.controlnet.set_fusion(**settings.fusion())
        pipe = cls(**(parts.as_dict() | {"scheduler": make_scheduler(settings.scheduler, parts.scheduler.config)}))
        pipe.set_hand_bias(settings.hand_bias, settings.hand_bias_targets, settings.hand_bias_uncond)
        pipe.settings = settings
        return pipe

    @property
    def resolution(self) -> int:
        """The side of generated images: the settings' resolution, else the UNet's own."""
        return self.settings.resolution or self.unet.config.sample_size * self.vae_scale_factor

    def crop(self, sample: Mapping) -> dict:
        """A label sample cropped around its hands (the settings' crop margin) to the generation size."""
        return crop_to_input(sample, (self.resolution, self.resolution), self.settings.crop_margin)

    def set_hand_bias(self, alpha: float = 2.0, targets: str = "both", bias_uncond: bool = False) -> None:
        """Hand-token bias on the components named by `targets` (none | unet | controlnet | both)."""
        if targets not in HAND_BIAS_TARGETS:
            raise ValueError(f"hand-bias targets must be one of {sorted(HAND_BIAS_TARGETS)}, got {targets!r}")
        for name in ("unet", "controlnet"):
            remove_hand_bias(getattr(self, name))
        for name in HAND_BIAS_TARGETS[targets]:
            install_hand_bias(getattr(self, name), self.hand_context, alpha, bias_uncond)
        self.settings = replace(self.settings, hand_bias=float(alpha), hand_bias_targets=targets, hand_bias_uncond=bias_uncond)

    def hand_columns(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's hand-token columns for this pipeline's tokenizer."""
        from .hand_tokens import HandWordFinder, hand_tokens

        if self._finder is None:
            self._finder = HandWordFinder()
        return [hand_tokens(p, self.tokenizer, self._finder).columns for p in prompts]

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str | Mapping],
        seeds: Sequence[int],
        samples: Sequence[Mapping] | None = None,
        hand_model=None,
        condition: torch.Tensor | None = None,
        resolution: int | None = None,
        condition_style: str | None = None,
        **call_kwargs,
    ) -> SesaHandOutput:
        """Images for `prompts` (strings, or semantics records: their settings' `prompt_field`)
        conditioned on the labels of `samples` (rendered with `hand_model`) or on a given
        (B, H, W, 3) `condition` in [0, 1]. `call_kwargs` go to the parent's ``__call__``
        (num_inference_steps, guidance_scale, ...); `resolution`, `condition_style` and the
        steps and guidance default to the pipeline's settings."""
        if call_kwargs.get("num_images_per_prompt", 1) != 1:
            raise ValueError("generate() makes one image per prompt and seed: repeat a prompt with other seeds for more")
        settings = self.settings
        texts = [p[settings.prompt_field] if isinstance(p, Mapping) else str(p) for p in prompts]
        if len(seeds) != len(texts):
            raise ValueError(f"one seed per prompt: got {len(seeds)} seeds for {len(texts)} prompts")
        if (samples is None) == (condition is None):
            raise ValueError("give either samples (with hand_model) or a condition image")
        side = resolution or self.resolution
        call_kwargs = {"num_inference_steps": settings.inference_steps, "guidance_scale": settings.guidance_scale, **call_kwargs}
        if samples is not None:
            if hand_model is None:
                raise ValueError("rendering the condition from samples needs hand_model")
            style = condition_style or settings.condition_style
            condition = condition_from_samples(hand_model, list(samples), (side, side), style)["image"]
        columns = self.hand_columns(texts)
        generators = [torch.Generator(self._execution_device).manual_seed(int(s)) for s in seeds]
        with self.hand_context.use(columns, self.tokenizer.model_max_length), _quiet(_TRUNCATION_LOGGERS):
            images = self(
                prompt=texts,
                image=to_control_tensor(condition.float()),
                height=side,
                width=side,
                generator=generators,
                output_type="np",
                **call_kwargs,
            ).images
        as_uint8 = lambda a: (np.clip(np.asarray(a), 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
        labels = None if samples is None else [dict(s) for s in samples]
        return SesaHandOutput(as_uint8(images), as_uint8(condition.cpu()), texts, columns, [int(s) for s in seeds], labels)


def load_pipeline(base: str, controlnet: str | None = None, seed: int = 0, overrides: Any = None) -> SesaHandPipeline:
    """The pipeline of a base model (``tiny`` or a Stable Diffusion 1.x folder) and a trained
    ControlNet folder, generating with the settings saved beside the ControlNet's weights
    (``controlnet=None``: a fresh one, from the UNet, and the default settings); `overrides`
    (a `GeneratorOverrides` or a mapping) changes settings explicitly. `seed` initialises the
    tiny components."""
    from .models.components import load_components

    settings, _ = apply_overrides(read_settings(controlnet), overrides)
    return SesaHandPipeline.from_components(load_components(base, controlnet, seed, **settings.fusion()), settings)
