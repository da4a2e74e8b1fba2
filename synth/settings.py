"""GeneratorSettings: how a SesaHand ControlNet was trained, which is how it must generate.

One dataclass holds every setting a trained ControlNet depends on beyond its weights: the mesh
condition (style, crop margin, resolution), the structural fusion, the hand-token bias, the
prompt field and the sampling defaults. Generator training reads it as its `generator` section
and writes it, resolution filled in, as ``sesahand_settings.json`` into every
``checkpoints/step_XXXXXXXX/controlnet/`` beside the diffusers weights and ``config.json``, so the
settings travel with the weights. Every reader (``load_pipeline``, training validation, the cache
job, live generation, the ablation) takes them from the ControlNet folder (:func:`read_settings`):

* ``controlnet: null`` (the tiny or an untrained generator): the defaults below.
* a folder with ``sesahand_settings.json``: its values.
* a folder without it (saved before the file existed, or not by ``tools/synth_train.py``): the
  defaults, with the fusion keys of its diffusers ``config.json`` (what the weights were saved
  with); a line says so.

A job changes a value only by setting it in its :class:`GeneratorOverrides` (every key null: the
ControlNet's value); :func:`apply_overrides` returns what changed, which the job prints and
records. The colours of a condition style are fixed in ``synth/condition.py`` (``HAND_HUES`` and
the style's palette), so the style's name stands for them.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handrecon.config import ConfigError, FieldError, build_section, check_fields, config_to_dict, field_comments
from handrecon.errors import UserError
from handrecon.io import atomic_write_json

from .condition import CONDITION_STYLES

__all__ = [
    "HAND_BIAS_TARGETS",
    "PROMPT_FIELDS",
    "SCHEDULERS",
    "SETTINGS_FILE",
    "GeneratorOverrides",
    "GeneratorSettings",
    "apply_overrides",
    "describe_settings",
    "make_scheduler",
    "read_settings",
    "resolve_resolution",
    "save_settings",
]

#: The settings' file inside a ControlNet folder.
SETTINGS_FILE = "sesahand_settings.json"

#: Which pipeline components get the hand-token bias, by configuration name.
HAND_BIAS_TARGETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "unet": ("unet",),
    "controlnet": ("controlnet",),
    "both": ("unet", "controlnet"),
}

#: Fields of a semantics record a prompt can come from: the composed behaviour prompt, or the raw captioner text.
PROMPT_FIELDS = ("prompt", "caption")

#: Samplers for generation, by configuration name -> diffusers scheduler class (built from the base's scheduler config).
SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "dpm_multistep": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


@dataclass
class GeneratorSettings:
    """What a ControlNet is trained with and generates with (module docstring: where they live)."""

    condition_style: str = field(default="parts", metadata={"choices": tuple(CONDITION_STYLES)})  # mesh condition colouring: parts | hands
    crop_margin: float = 2.5  # square crop side = margin x the hands' extent: room for arms and body; > 0
    resolution: int | None = None  # image side in px (>= 8; a multiple of the base's latent stride); null: the base's own (tiny 64, SD 512)
    structural_fusion: bool = True  # hierarchical structural fusion in the ControlNet
    fusion_resolutions: list[int] | None = None  # latent grid heights (>= 1) whose maps enter psi'; []: all; null: all
    fusion_resolution: int = 8  # fusion grid height, in latent cells; >= 1
    hand_bias: float = 2.0  # alpha added to the hand-token logits; finite; 0: no bias
    hand_bias_targets: str = field(default="both", metadata={"choices": tuple(HAND_BIAS_TARGETS)})  # components with the bias
    hand_bias_uncond: bool = False  # also bias the unconditional half of a classifier-free-guidance batch
    prompt_field: str = field(default="prompt", metadata={"choices": PROMPT_FIELDS})  # caption: the raw captioner text (ablation)
    scheduler: str = field(default="ddim", metadata={"choices": tuple(SCHEDULERS)})  # the sampler of generation
    inference_steps: int = 20  # denoising steps; >= 1
    guidance_scale: float = 7.5  # classifier-free guidance; >= 0; up to 1: none

    def __post_init__(self) -> None:
        check_fields(self, "> 0", "crop_margin")
        check_fields(self, ">= 8", "resolution")
        check_fields(self, ">= 1", "fusion_resolutions", "fusion_resolution", "inference_steps")
        check_fields(self, "finite", "hand_bias")
        check_fields(self, ">= 0", "guidance_scale")
        if self.resolution is not None and self.resolution % 8:
            raise FieldError("resolution", "a multiple of 8 or null", self.resolution)

    def fusion(self) -> dict[str, Any]:
        """The fusion keys of `FusionControlNetModel.set_fusion`."""
        resolutions = tuple(self.fusion_resolutions) if self.fusion_resolutions else None
        return {"structural_fusion": self.structural_fusion, "fusion_resolutions": resolutions, "fusion_resolution": self.fusion_resolution}

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def _overrides_schema() -> type:
    """GeneratorSettings with every field optional and null by default: one declaration of the keys."""
    hints, comments = typing.get_type_hints(GeneratorSettings), field_comments(GeneratorSettings)

    def comment(name: str) -> str:  # the setting's comment with null meaning the ControlNet's value
        return "; ".join(["null: the ControlNet's", *(c for c in comments[name].split("; ") if not c.startswith("null"))])

    specs = [(f.name, hints[f.name] | None, field(default=None, metadata={**f.metadata, "comment": comment(f.name)}))
             for f in dataclasses.fields(GeneratorSettings)]  # fmt: skip

    def __post_init__(self) -> None:
        GeneratorSettings(**self.values())  # the settings' own range checks, under the same keys

    def values(self) -> dict[str, Any]:
        """The keys this job sets."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    doc = "Per-job overrides of a ControlNet's GeneratorSettings (same keys and ranges); null: the ControlNet's value."
    namespace = {"__post_init__": __post_init__, "values": values, "__doc__": doc}
    schema = dataclasses.make_dataclass("GeneratorOverrides", specs, namespace=namespace)
    schema.__module__ = __name__  # pickled by reference (a live source's job goes to its generator process)
    return schema


GeneratorOverrides = _overrides_schema()


def save_settings(settings: GeneratorSettings, controlnet: str | Path) -> Path:
    """Write `settings` into the ControlNet folder `controlnet` (beside its weights)."""
    return atomic_write_json(Path(controlnet) / SETTINGS_FILE, settings.to_dict(), indent=1, sort_keys=True)


def read_settings(controlnet: str | Path | None) -> GeneratorSettings:
    """The settings a ControlNet folder was trained with; the defaults for None (see the module
    docstring for a folder without the file)."""
    if controlnet is None:
        return GeneratorSettings()
    folder = Path(controlnet)
    path = folder / SETTINGS_FILE
    if path.is_file():
        try:
            return build_section(GeneratorSettings, json.loads(path.read_text()))
        except (ValueError, ConfigError) as exc:
            raise UserError(f"{path}: {exc}") from None
    if not folder.is_dir():
        raise UserError(f"ControlNet folder {folder} does not exist")
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    fusion = {k: config[k] for k in ("structural_fusion", "fusion_resolutions", "fusion_resolution") if k in config}
    if folder.resolve() not in _NOTED:  # once per process, not at every read
        _NOTED.add(folder.resolve())
        print(f"{folder} has no {SETTINGS_FILE}: generator settings are the defaults" + (" with the fusion keys of its config.json"
              if fusion else ""), file=sys.stderr, flush=True)  # fmt: skip
    return GeneratorSettings(**fusion)


_NOTED: set[Path] = set()  # ControlNet folders without settings that read_settings has reported


def apply_overrides(
    settings: GeneratorSettings, overrides: Any | Mapping[str, Any] | None
) -> tuple[GeneratorSettings, dict[str, tuple[Any, Any]]]:
    """(`settings` with the set keys of `overrides` (a GeneratorOverrides or a mapping), {key: (from, to)} for each set key)."""
    if overrides is None:
        values: dict[str, Any] = {}
    elif isinstance(overrides, Mapping):
        values = {k: v for k, v in overrides.items() if v is not None}
    else:
        values = overrides.values()
    changed = {k: (getattr(settings, k), v) for k, v in values.items()}
    return dataclasses.replace(settings, **values), changed


def describe_settings(controlnet: str | Path | None, changed: Mapping[str, tuple[Any, Any]]) -> str:
    """One line: where the settings come from and what the job overrides."""
    where = "defaults (controlnet: null)" if controlnet is None else str(Path(controlnet) / SETTINGS_FILE)
    if not changed:
        return f"generator settings: {where}; no overrides"
    shown = ", ".join(f"{k}={json.dumps(new)} (was {json.dumps(old)})" for k, (old, new) in changed.items())
    return f"generator settings: {where}; overridden by this job: {shown}"


def resolve_resolution(settings: GeneratorSettings, parts) -> GeneratorSettings:
    """`settings` with `resolution` set: the components' own when null, else checked against
    their latent stride (VAE factor x the UNet's downsamplings)."""
    if settings.resolution is None:
        return dataclasses.replace(settings, resolution=int(parts.resolution))
    from .models.components import vae_scale_factor

    stride = vae_scale_factor(parts.vae) * 2 ** (len(parts.unet.config.block_out_channels) - 1)
    if settings.resolution % stride:
        raise UserError(f"generator resolution {settings.resolution} is not a multiple of {stride}, the latent stride of this base model")
    return settings


def make_scheduler(name: str, config: Mapping[str, Any]):
    """The scheduler `name` (a key of SCHEDULERS) from a base model's scheduler `config`."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {name!r}")
    return getattr(diffusers, SCHEDULERS[name]).from_config(config)
