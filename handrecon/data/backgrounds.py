"""Procedural background textures (batched torch): gradients, value noise, stripes, checkers."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def _palette(gen: torch.Generator, n: int, k: int) -> torch.Tensor:
    """(n, k, 3) random colours, biased away from pure saturated hues."""
    base = torch.rand(n, 1, 3, generator=gen)
    return (0.6 * base + 0.4 * torch.rand(n, k, 3, generator=gen)).clamp(0, 1)


def _coords(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """(n, h, w) coordinate along a random direction, in [-1, 1]-ish units."""
    theta = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    y = torch.linspace(-1, 1, h)[None, :, None]
    x = torch.linspace(-1, 1, w)[None, None, :]
    return x * torch.cos(theta) + y * torch.sin(theta)


def gradient(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    colours = _palette(gen, n, 2)
    t = (_coords(n, h, w, gen) * 0.5 + 0.5).clamp(0, 1)[..., None]
    return colours[:, None, None, 0] * (1 - t) + colours[:, None, None, 1] * t


def value_noise(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Multi-octave value noise mapped through a random two-colour ramp."""
    total = torch.zeros(n, 1, h, w)
    amp = 1.0
    for cells in (3, 6, 12, 24, 48):
        grid = torch.rand(n, 1, cells, cells, generator=gen)
        total += amp * F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        amp *= 0.55
    t = (total - total.amin((2, 3), keepdim=True)) / (total.amax((2, 3), keepdim=True) - total.amin((2, 3), keepdim=True) + 1e-6)
    colours = _palette(gen, n, 2)
    t = t[:, 0, ..., None]
    return colours[:, None, None, 0] * (1 - t) + colours[:, None, None, 1] * t


def stripes(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    freq = 2 + 10 * torch.rand(n, 1, 1, generator=gen)
    t = (torch.sin(_coords(n, h, w, gen) * freq * math.pi) > 0).float()[..., None]
    colours = _palette(gen, n, 2)
    return colours[:, None, None, 0] * (1 - t) + colours[:, None, None, 1] * t


def checker(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    freq = 2 + 8 * torch.rand(n, 1, 1, generator=gen)
    a = torch.sin(_coords(n, h, w, gen) * freq * math.pi) > 0
    b = torch.sin(_coords(n, h, w, gen) * freq * math.pi) > 0
    t = (a ^ b).float()[..., None]
    colours = _palette(gen, n, 2)
    return colours[:, None, None, 0] * (1 - t) + colours[:, None, None, 1] * t


BACKGROUNDS: dict[str, Callable[[int, int, int, torch.Generator], torch.Tensor]] = {
    "gradient": gradient,
    "noise": value_noise,
    "stripes": stripes,
    "checker": checker,
}


def random_background(kind: str, h: int, w: int, seed: int) -> torch.Tensor:
    """One (h, w, 3) float background in [0, 1] of the named kind, deterministic by seed.

    A second texture of value noise is blended in, so no background is perfectly flat.
    """
    gen = torch.Generator().manual_seed(seed)
    img = BACKGROUNDS[kind](1, h, w, gen)[0]
    grain = value_noise(1, h, w, gen)[0]
    mix = 0.15 + 0.2 * torch.rand((), generator=gen)
    return ((1 - mix) * img + mix * grain).clamp(0, 1)
