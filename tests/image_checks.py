"""Checks on written PNG figures: their size in pixels and what they show."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def read_png(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """The PNG as (H, W, 3) int RGB, after checking its (width, height)."""
    with Image.open(path) as image:
        assert image.format == "PNG", (path, image.format)
        assert image.size == size, (path, image.size, size)
        return np.asarray(image.convert("RGB")).astype(int)


def colour_count(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, 3), axis=0))


def near(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 30) -> np.ndarray:
    """Where a pixel is within `tol` (summed over channels) of `rgb`."""
    return np.abs(pixels - np.array(rgb)).sum(-1) < tol


def dominant(pixels: np.ndarray, channel: int, margin: int = 60) -> np.ndarray:
    """Where one channel exceeds both others by `margin`: strongly red (0), green (1) or blue (2)."""
    others = [c for c in range(3) if c != channel]
    return (pixels[..., channel] - pixels[..., others[0]] > margin) & (pixels[..., channel] - pixels[..., others[1]] > margin)
