"""Hierarchical structural fusion as pure tensor functions.

psi' = sum_r M(psi_r) is formed from pooled self-attention maps (see
:func:`synth.attention.pooled_attention_probs`) and applied to ControlNet features by matrix
multiplication over the spatial axis: ``f'[b, :, q] = sum_k psi'[b, q, k] f[b, :, k]``
(attention semantics: each position takes a psi'-weighted mix of the features of the
positions it attends to).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["aggregate_maps", "fuse_features", "mix_positions", "restrict_map"]


def aggregate_maps(maps: Sequence[torch.Tensor], resolutions: Sequence[int]) -> torch.Tensor:
    """psi' from max-pooled maps of several layers.

    Each map (B, R, R) is normalised to rows summing to one (without it, the coarse maps,
    whose probabilities are larger by the ratio of position counts, would drown the fine
    ones); maps of layers at the same resolution are averaged into psi_r, and psi' is the
    mean over resolutions (the paper's sum, scaled by a constant so psi' stays row-stochastic).
    """
    if not maps or len(maps) != len(resolutions):
        raise ValueError(f"need one resolution per map and at least one map, got {len(maps)} and {len(resolutions)}")
    by_res: dict[int, list[torch.Tensor]] = {}
    for m, r in zip(maps, resolutions):
        by_res.setdefault(int(r), []).append(m / m.sum(-1, keepdim=True))
    return torch.stack([torch.stack(ms).mean(0) for ms in by_res.values()]).mean(0)


def mix_positions(features: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """``f_c (x) psi``: (B, C, h, w) features, (B, h*w, h*w) map -> (B, C, h, w)."""
    B, C, h, w = features.shape
    if psi.shape != (B, h * w, h * w):
        raise ValueError(f"map {tuple(psi.shape)} does not fit features {tuple(features.shape)}")
    return torch.bmm(features.reshape(B, C, h * w), psi.transpose(1, 2).to(features.dtype)).view(B, C, h, w)


def restrict_map(psi: torch.Tensor, grid: tuple[int, int], to_grid: tuple[int, int]) -> torch.Tensor:
    """A map on `grid` cells brought to a coarser `to_grid`: average over the query cells of
    each coarse cell, total over its key cells, then rows renormalised to sum to one."""
    B = psi.shape[0]
    (h, w), (s, t) = grid, to_grid
    q = F.adaptive_avg_pool2d(psi.transpose(1, 2).reshape(B * h * w, 1, h, w), to_grid)  # pool queries
    q = q.reshape(B, h * w, s * t).transpose(1, 2)  # (B, coarse queries, keys)
    k = F.adaptive_avg_pool2d(q.reshape(B * s * t, 1, h, w), to_grid).reshape(B, s * t, s * t)
    return k / k.sum(-1, keepdim=True)


def fuse_features(features: torch.Tensor, psi: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Apply psi' (B, R, R) on the fusion `grid` to features of any resolution.

    * features on the fusion grid: ``f (x) psi'`` exactly;
    * finer features: the part of ``f`` seen on the fusion grid (cell means) is replaced by its
      mixed version and the finer detail is kept,
      ``f' = f + up(mix(avg(f)) - avg(f))`` = ``f (x) (I + U (psi' - I) D)`` with D the cell
      average and U the nearest upsampling, still one matrix over the spatial axis;
    * coarser features: ``f (x) restrict(psi')``.

    psi' = identity leaves every feature unchanged (for grids that divide each other).
    """
    h, w = features.shape[-2:]
    if (h, w) == tuple(grid):
        return mix_positions(features, psi)
    if h >= grid[0] and w >= grid[1]:
        coarse = F.adaptive_avg_pool2d(features, grid)
        delta = mix_positions(coarse, psi) - coarse
        return features + F.interpolate(delta, size=(h, w), mode="nearest")
    return mix_positions(features, restrict_map(psi, grid, (h, w)))

