"""Optimizers and learning-rate schedules by name (registries, so a config picks them).

A schedule is a pure function `(step, total_steps, cfg) -> factor` of the base learning rate,
wrapped in a LambdaLR; linear warmup multiplies any schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from ..config import check_fields
from ..errors import UserError


@dataclass
class OptimConfig:
    name: str = "adamw"  # adam | adamw | sgd
    lr: float = 1e-4  # base learning rate (not scaled by world size or accumulation); > 0
    weight_decay: float = 1e-4  # >= 0
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw; each in [0, 1)
    momentum: float = 0.9  # sgd; in [0, 1)
    grad_clip: float | None = 1.0  # max global gradient norm (> 0); null: no clipping
    grad_accum: int = 1  # micro-batches per optimizer step; >= 1

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {sorted(OPTIMIZERS)}, got {self.name!r}")
        check_fields(self, "> 0", "lr", "grad_clip")
        check_fields(self, ">= 0", "weight_decay")
        check_fields(self, "in [0, 1)", "betas", "momentum")
        check_fields(self, ">= 1", "grad_accum")


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # constant | step | cosine
    warmup_steps: int = 0  # linear ramp from 0 to the base LR over these optimizer steps; >= 0
    milestones: list[float] = field(default_factory=lambda: [0.6, 0.85])  # step: fractions of the run, in [0, 1]
    gamma: float = 0.1  # step: factor (> 0) at each milestone
    min_lr_ratio: float = 0.0  # cosine: the final LR as a fraction (in [0, 1]) of the base LR

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"schedule.name must be one of {sorted(SCHEDULES)}, got {self.name!r}")
        check_fields(self, ">= 0", "warmup_steps")
        check_fields(self, "in [0, 1]", "milestones", "min_lr_ratio")
        check_fields(self, "> 0", "gamma")


OPTIMIZERS: dict[str, Callable[[Iterable, OptimConfig], torch.optim.Optimizer]] = {
    "adam": lambda params, c: torch.optim.Adam(params, c.lr, betas=c.betas, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, c.lr, betas=c.betas, weight_decay=c.weight_decay),
    "sgd": lambda params, c: torch.optim.SGD(params, c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
}


def _constant(step: int, total: int, cfg: ScheduleConfig) -> float:
    return 1.0


def _step(step: int, total: int, cfg: ScheduleConfig) -> float:
    return cfg.gamma ** sum(step >= m * total for m in cfg.milestones)


def _cosine(step: int, total: int, cfg: ScheduleConfig) -> float:
    # the cosine spans the steps after warmup
    span = max(total - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES: dict[str, Callable[[int, int, ScheduleConfig], float]] = {"constant": _constant, "step": _step, "cosine": _cosine}


def lr_factor(step: int, total: int, cfg: ScheduleConfig) -> float:
    """Factor of the base LR at optimizer step `step` (0-based) of a `total`-step run."""
    warm = min((step + 1) / cfg.warmup_steps, 1.0) if cfg.warmup_steps else 1.0
    return warm * SCHEDULES[cfg.name](step, total, cfg)


def build_optimizer(params: Iterable, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise UserError("every parameter is frozen: nothing to train (check train.freeze)")
    return OPTIMIZERS[cfg.name](params, cfg)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, cfg))
