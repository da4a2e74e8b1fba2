"""Hand-mesh regressors in a registry, timm-style: `create_model(name, hand_model, **options)`.

Registered: `interwild`, `dir` (their published sizes) and `interwild_tiny`, `dir_tiny` (a
tiny timm backbone and small inputs, for tests, the quickstart and CPU runs). Every model
follows the output contract of `handrecon.models.base`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import check_fields
from ..errors import UserError
from ..hand_model.mano import HandModel
from .base import OUTPUT_KEYS, HandRegressor, make_config
from .dir import DIRConfig, DIRNet
from .interwild import InterWildConfig, InterWildNet

__all__ = ["OUTPUT_KEYS", "HandRegressor", "ModelConfig", "build_model", "create_model", "list_models", "register_model"]

_REGISTRY: dict[str, Callable[..., HandRegressor]] = {}


def register_model(fn: Callable[..., HandRegressor]) -> Callable[..., HandRegressor]:
    """Register `fn(hand_model, **options) -> HandRegressor` under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model '{fn.__name__}' is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, hand_model: HandModel, **options: Any) -> HandRegressor:
    """Build a registered model; `options` override fields of its architecture's config."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model '{name}'; registered models: {list_models()}")
    return _REGISTRY[name](hand_model, **options)


_TINY_INTERWILD = dict(
    backbone="test_resnet", body_backbone="test_resnet", trans_backbone="test_resnet", input_size=(128, 96), body_size=(64, 48),
    box_deconvs=2, box_channels=32, hand_size=64, heatmap_depth=4, rot_channels=32, trans_heatmap=8, trans_channels=16,
    sigma=1.0,
)  # fmt: skip
_TINY_DIR = dict(backbone="test_resnet", input_size=(64, 64), hidden=32, heads=2)


@register_model
def interwild(hand_model: HandModel, **options: Any) -> HandRegressor:
    return InterWildNet(hand_model, make_config(InterWildConfig, "interwild", options))


@register_model
def interwild_tiny(hand_model: HandModel, **options: Any) -> HandRegressor:
    return InterWildNet(hand_model, make_config(InterWildConfig, "interwild_tiny", {**_TINY_INTERWILD, **options}))


@register_model
def dir(hand_model: HandModel, **options: Any) -> HandRegressor:  # noqa: A001 - the architecture's name
    return DIRNet(hand_model, make_config(DIRConfig, "dir", options))


@register_model
def dir_tiny(hand_model: HandModel, **options: Any) -> HandRegressor:
    return DIRNet(hand_model, make_config(DIRConfig, "dir_tiny", {**_TINY_DIR, **options}))


@dataclass
class ModelConfig:
    """The model section of an experiment. Fields left None take the architecture's default;
    the architecture-specific ones are documented in InterWildConfig / DIRConfig."""

    name: str = "interwild"  # a registered model: interwild, interwild_tiny, dir, dir_tiny
    backbone: str | None = None  # timm model name
    pretrained: str | None = None  # local timm weights file for the backbone(s)
    input_size: tuple[int, int] | None = None  # (H, W) the data section must crop to; >= 1 each
    loss: str | None = None  # l1 | smooth_l1
    loss_weights: dict[str, float] = field(default_factory=dict)  # loss term -> weight >= 0 (0: off)
    hand_size: int | None = None  # interwild: hand crop side; >= 1
    roi_boxes: str | None = None  # interwild: 'pred' or 'gt' boxes for the training crops
    refine_stages: int | None = None  # dir: number of refinement stages; >= 0

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "input_size", "hand_size")
        check_fields(self, ">= 0", "loss_weights", "refine_stages")


def build_model(cfg: ModelConfig, hand_model: HandModel) -> HandRegressor:
    options = {k: v for k, v in vars(cfg).items() if k != "name" and v is not None and v != {}}
    return create_model(cfg.name, hand_model, **options)
