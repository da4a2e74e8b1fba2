"""Hand-mesh regressors in a registry, timm-style: `create_model(name, hand_model, **options)`.

Registered: `interwild`, `dir` (their published sizes) and `interwild_tiny`, `dir_tiny` (a
tiny timm backbone and small inputs, for tests, the quickstart and CPU runs). Each name is
recorded with its architecture's config dataclass (`InterWildConfig`, `DIRConfig`: every option,
its default and range is documented there) and a preset that overrides some defaults (the tiny
sizes). Options are set over the preset, and checked by the config system like any config
section. Every model follows the output contract of `handrecon.models.base`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, TypeVar

from ..config import FieldError, build_section
from ..errors import UserError
from ..hand_model.mano import HandModel
from .base import OUTPUT_KEYS, HandRegressor
from .dir import DIRConfig, DIRNet
from .interwild import InterWildConfig, InterWildNet

__all__ = [
    "OUTPUT_KEYS",
    "HandRegressor",
    "ModelConfig",
    "build_model",
    "create_model",
    "list_models",
    "model_config",
    "register_model",
]

Builder = TypeVar("Builder", bound=Callable[..., HandRegressor])


@dataclass(frozen=True)
class _Model:
    build: Callable[[HandModel, Any], HandRegressor]  # (hand_model, architecture config) -> model
    config: type  # the architecture's config dataclass
    preset: Mapping[str, Any]  # overrides of its defaults


_REGISTRY: dict[str, _Model] = {}


def register_model(*, config: type, preset: Mapping[str, Any] | None = None) -> Callable[[Builder], Builder]:
    """Register `fn(hand_model, cfg) -> HandRegressor` under its function name; `cfg` is an
    instance of the dataclass `config`, built from the user's options over `preset` (overrides of
    the dataclass defaults) over its defaults."""

    def register(fn: Builder) -> Builder:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model '{fn.__name__}' is already registered")
        _REGISTRY[fn.__name__] = _Model(fn, config, MappingProxyType(dict(preset or {})))
        return fn

    return register


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _lookup(name: str) -> _Model:
    if name not in _REGISTRY:
        raise UserError(f"unknown model '{name}'; registered models: {list_models()}")
    return _REGISTRY[name]


def model_config(name: str, /, **options: Any) -> Any:
    """The architecture config model `name` is built from: `options` over its preset over the
    config dataclass's defaults. Errors (ConfigError) name the option under the model's name:
    ``dir_tiny.hidden must be a multiple of heads (2), got 33``."""
    model = _lookup(name)
    return build_section(model.config, options, name, base=model.preset)


def create_model(name: str, hand_model: HandModel, checkpoint: str | Path | None = None, **options: Any) -> HandRegressor:
    """Build a registered model; `options` override fields of its architecture's config.
    `checkpoint`: weights to load, strictly: a .safetensors file, a checkpoint or run folder
    (`handrecon.engine.checkpoint.load_weights`), or InterWild's released `snapshot_N.pth`."""
    model = _lookup(name).build(hand_model, model_config(name, **options))
    if checkpoint is not None:
        from ..engine.checkpoint import load_weights

        load_weights(model, checkpoint, strict=True)
    return model


_TINY_INTERWILD = dict(
    backbone="resnet_tiny", body_backbone="resnet_tiny", trans_backbone="resnet_tiny", input_size=(128, 96), body_size=(64, 48),
    box_deconvs=2, box_channels=32, hand_size=64, heatmap_depth=4, rot_channels=32, trans_heatmap=8, trans_channels=16,
    sigma=1.0,
    # each term averaged over its valid entries: InterWild's all-entries mean scales the gradients
    # down by the invalid fraction and the tiny model then fails to halve its error in 60 steps
    # (tests/test_models.py::test_tiny_model_overfits_16_samples)
    loss_rules="masked_mean",
    # from scratch in a few hundred steps (tests, the quickstart): start at the rest pose
    init="rest_pose",
)  # fmt: skip
_TINY_DIR = dict(backbone="resnet_tiny", input_size=(64, 64), decoder_channels=32, joint_embed=16, joint_dim=8, ste_heads=2)


@register_model(config=InterWildConfig)
def interwild(hand_model: HandModel, cfg: InterWildConfig) -> HandRegressor:
    return InterWildNet(hand_model, cfg)


@register_model(config=InterWildConfig, preset=_TINY_INTERWILD)
def interwild_tiny(hand_model: HandModel, cfg: InterWildConfig) -> HandRegressor:
    return InterWildNet(hand_model, cfg)


@register_model(config=DIRConfig)
def dir(hand_model: HandModel, cfg: DIRConfig) -> HandRegressor:  # noqa: A001 - the architecture's name
    return DIRNet(hand_model, cfg)


@register_model(config=DIRConfig, preset=_TINY_DIR)
def dir_tiny(hand_model: HandModel, cfg: DIRConfig) -> HandRegressor:
    return DIRNet(hand_model, cfg)


def _resolved(cfg: ModelConfig) -> Any:
    return model_config(cfg.name, **cfg.options)


@dataclass
class ModelConfig:
    """The model section of an experiment: a registered model and options for its architecture's
    config (`InterWildConfig` in handrecon/models/interwild.py, `DIRConfig` in handrecon/models/dir.py
    document each option and its range). Options left out take the model's preset (the `*_tiny`
    sizes) or the config's default; ``--print-config`` lists every resolved value."""

    name: str = "interwild"  # a registered model: interwild, interwild_tiny, dir, dir_tiny
    options: dict[str, Any] = field(default_factory=dict, metadata={"resolved": _resolved})  # its config's fields, e.g. {hand_size: 128}

    def __post_init__(self) -> None:
        if self.name not in _REGISTRY:
            raise FieldError("name", f"a registered model ({', '.join(list_models())})", self.name)
        model = _REGISTRY[self.name]
        checked = build_section(model.config, self.options, "options", base=model.preset)
        self.options = {key: getattr(checked, key) for key in self.options}  # the user's keys, coerced


def build_model(cfg: ModelConfig, hand_model: HandModel) -> HandRegressor:
    return create_model(cfg.name, hand_model, **cfg.options)
