"""Attention extensions of the generator, installed on diffusers models as attention processors
and hooks (the models' own code is never changed).

* Hand-token bias (hand structural attention enhancement): in cross-attention, the logits of
  each prompt's hand-token columns get ``+alpha`` before the softmax,
  ``softmax(Q K^T / sqrt(d) + B) V`` with ``B[q, k] = alpha`` for ``k`` in the prompt's index
  set. The bias is a (batch, 1, tokens) additive float mask handed to diffusers'
  ``AttnProcessor2_0``, which passes it to ``F.scaled_dot_product_attention``: the fused
  kernels stay in use and no probabilities are materialised. Index sets live in a
  :class:`HandTokenContext` shared by the processors of every model they are installed on
  (diffusers' pipelines do not forward ``cross_attention_kwargs`` to the ControlNet).
* Pooled self-attention capture (input of hierarchical structural fusion): forward hooks on
  a layer's query and key projections see the same q and k the processor uses; the head-mean
  attention probabilities are then computed again in query chunks and max-pooled to a small
  grid at once, so a 4096 x 4096 map per head never exists. The layer's output is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn
from torch.utils.checkpoint import checkpoint

from .settings import HAND_BIAS_TARGETS  # which pipeline components get the hand-token bias, by name

__all__ = [
    "default_max_elements",
    "HAND_BIAS_TARGETS",
    "HandBiasAttnProcessor",
    "HandTokenContext",
    "PooledSelfAttentionCapture",
    "attention_layers",
    "hand_bias",
    "hand_token_mask",
    "install_hand_bias",
    "layer_grid",
    "pooled_attention_probs",
    "remove_hand_bias",
]

#: Elements of one query chunk's (batch, heads, chunk, keys) probabilities by device type. On
#: a GPU, large chunks mean few kernel launches (2**24 float32 values are 64 MiB, whatever the
#: resolution). On a CPU, chunks that stay in cache and under the allocator's size for reusing
#: freed blocks are 2-3x faster per value: 2**21 (8 MiB) measured best from 2**17 to 2**24.
_MAX_ELEMENTS = {"cuda": 2**24, "cpu": 2**21}


def default_max_elements(device: torch.device | str) -> int:
    """The chunk budget of :func:`pooled_attention_probs` on `device` (CUDA's for other accelerators)."""
    kind = torch.device(device).type
    return _MAX_ELEMENTS.get(kind, _MAX_ELEMENTS["cuda"])


# --------------------------------------------------------------------------- hand-token bias


def hand_token_mask(
    indices: Sequence[Sequence[int]] | torch.Tensor, seq_len: int = 77
) -> torch.Tensor:
    """Per-prompt hand-token columns as a bool (N, seq_len) mask.

    Args:
        indices: one list of token column indices per prompt (any order, repeats allowed,
            possibly empty), or a bool (N, seq_len) mask, returned as is after checking.
        seq_len: token columns of the text encoder output (77 for CLIP).
    """
    if isinstance(indices, torch.Tensor):
        if indices.dtype != torch.bool or indices.dim() != 2 or indices.shape[1] != seq_len:
            raise ValueError(
                f"a hand-token mask must be a bool (N, {seq_len}) tensor, got {indices.dtype} {tuple(indices.shape)}"
            )
        return indices
    mask = torch.zeros(len(indices), seq_len, dtype=torch.bool)
    for i, cols in enumerate(indices):
        cols = [int(c) for c in cols]
        bad = [c for c in cols if not 0 <= c < seq_len]
        if bad:
            raise ValueError(f"hand-token indices of prompt {i} must lie in [0, {seq_len}), got {bad}")
        mask[i, cols] = True
    return mask


def hand_bias(
    mask: torch.Tensor,
    alpha: float,
    batch: int,
    bias_uncond: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The additive (batch, 1, K) logit bias of `mask` (N, K) for an attention batch.

    ``batch == N``: one row per prompt. ``batch == 2N``: a classifier-free-guidance batch laid
    out [unconditional; conditional] as diffusers' pipelines build it; the unconditional half
    gets no bias unless `bias_uncond` (its prompt is a different text). Other sizes are an
    error: repeat the mask to the batch first (e.g. for several images per prompt).
    """
    n = mask.shape[0]
    rows = mask.to(device=device, dtype=dtype) * alpha
    if batch == 2 * n:
        rows = torch.cat([rows if bias_uncond else torch.zeros_like(rows), rows])  # [uncond; cond]
    elif batch != n:
        raise ValueError(
            f"hand-token mask has {n} rows but the attention batch is {batch}; "
            f"expected {n} or {2 * n} (classifier-free guidance)"
        )
    return rows[:, None, :]


class HandTokenContext:
    """The hand-token mask of the prompts of the current forward pass.

    One context is shared by the bias processors of every model it is installed on; set it
    before the forward (``with ctx.use(indices): ...``) so UNet and ControlNet see the same
    index sets. With no mask set, the processors add nothing.
    """

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None

    def set(self, indices: Sequence[Sequence[int]] | torch.Tensor | None, seq_len: int = 77) -> None:
        self.mask = None if indices is None else hand_token_mask(indices, seq_len)

    def clear(self) -> None:
        self.mask = None

    @contextmanager
    def use(self, indices: Sequence[Sequence[int]] | torch.Tensor | None, seq_len: int = 77) -> Iterator[None]:
        previous = self.mask
        self.set(indices, seq_len)
        try:
            yield
        finally:
            self.mask = previous


class HandBiasAttnProcessor:
    """Cross-attention with ``+alpha`` on the logits of the hand-token columns.

    Args:
        context: where the per-prompt hand-token mask is read at each call.
        alpha: the bias (2.0 in the reference setting). With ``alpha == 0`` or no mask set,
            the call is diffusers' default processor unchanged (bit-identical output).
        bias_uncond: also bias the unconditional half of a guidance batch.

    Self-attention calls (no ``encoder_hidden_states``) are passed through unchanged, so the
    processor may be installed on any attention layer.
    """

    def __init__(self, context: HandTokenContext, alpha: float = 2.0, bias_uncond: bool = False) -> None:
        self.context = context
        self.alpha = float(alpha)
        self.bias_uncond = bias_uncond
        self._sdpa = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask = self.context.mask
        if encoder_hidden_states is not None and mask is not None and self.alpha != 0.0:
            batch, tokens = encoder_hidden_states.shape[:2]
            if mask.shape[1] != tokens:
                raise ValueError(
                    f"hand-token mask has {mask.shape[1]} columns but the text embeddings have {tokens} tokens"
                )
            bias = hand_bias(mask, self.alpha, batch, self.bias_uncond, hidden_states.dtype, hidden_states.device)
            # diffusers' masks are additive (B, 1, K) too: the two simply add.
            attention_mask = bias if attention_mask is None else attention_mask + bias
        return self._sdpa(attn, hidden_states, encoder_hidden_states, attention_mask=attention_mask, temb=temb)


def attention_layers(model: nn.Module, kind: str = "all") -> dict[str, Attention]:
    """The diffusers attention layers of `model` by module name; `kind` is 'self', 'cross' or 'all'."""
    if kind not in ("self", "cross", "all"):
        raise ValueError(f"kind must be 'self', 'cross' or 'all', got {kind!r}")
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, Attention):
            if kind == "all" or module.is_cross_attention == (kind == "cross"):
                out[name] = module
    return out


def install_hand_bias(
    model: nn.Module, context: HandTokenContext, alpha: float = 2.0, bias_uncond: bool = False
) -> int:
    """Put a :class:`HandBiasAttnProcessor` on every cross-attention layer of `model` (a UNet or
    ControlNet); other layers keep their processors. Returns the number of layers changed."""
    layers = attention_layers(model, "cross")
    for module in layers.values():
        module.set_processor(HandBiasAttnProcessor(context, alpha, bias_uncond))
    return len(layers)


def remove_hand_bias(model: nn.Module) -> int:
    """Put diffusers' default SDPA processor back where a hand-bias processor is installed."""
    count = 0
    for module in attention_layers(model, "cross").values():
        if isinstance(module.processor, HandBiasAttnProcessor):
            module.set_processor(AttnProcessor2_0())
            count += 1
    return count


# ------------------------------------------------------------- pooled self-attention capture


def pooled_attention_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    grid: tuple[int, int],
    out_grid: tuple[int, int],
    scale: float | None = None,
    max_elements: int | None = None,
    checkpoint_chunks: bool = False,
) -> torch.Tensor:
    """Head-mean self-attention probabilities, max-pooled on both the query and the key grid.

    ``P = mean_heads softmax(q k^T * scale)`` is (B, N, N) with N = h * w positions in
    row-major order; the result is ``out[b, I, J] = max_{i in cell I, j in cell J} P[b, i, j]``
    for the cells of `out_grid` (adaptive max pooling, so any sizes work and a grid coarser
    than `out_grid` has its cells repeated). Queries are processed in chunks whose
    (B, heads, chunk, N) probabilities hold at most `max_elements` values, so the peak extra
    memory is bounded by the chunk, not by N^2 (None: :func:`default_max_elements` of the
    query's device).

    Args:
        query, key: (B, heads, N, d), as the attention uses them (after the head split).
        grid: (h, w) of the N positions; out_grid: (Rh, Rw).
        scale: logit scale, default 1/sqrt(d) (what SDPA uses).
        checkpoint_chunks: recompute each chunk in backward instead of keeping its
            probabilities (for gradients through the maps at bounded memory).

    Returns:
        (B, Rh*Rw, Rh*Rw) float32, query cells by key cells.
    """
    B, H, N, d = query.shape
    h, w = grid
    if key.shape != (B, H, N, d) or h * w != N:
        raise ValueError(
            f"query {tuple(query.shape)} and key {tuple(key.shape)} must match and hold grid {grid} positions"
        )
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    R = out_grid[0] * out_grid[1]
    max_elements = default_max_elements(query.device) if max_elements is None else max_elements
    chunk = max(1, min(N, max_elements // max(1, B * H * N)))
    key_t = key.transpose(-1, -2).contiguous()  # once, not per chunk inside the matmul

    def pool_keys(probs: torch.Tensor) -> torch.Tensor:  # (B, c, N) -> (B, c, R)
        c = probs.shape[1]
        if h % out_grid[0] == 0 and w % out_grid[1] == 0:  # whole cells: a reshape, cheaper than adaptive pooling
            return probs.reshape(B, c, out_grid[0], h // out_grid[0], out_grid[1], w // out_grid[1]).amax((3, 5)).reshape(B, c, R)
        return F.adaptive_max_pool2d(probs.reshape(B * c, 1, h, w), out_grid).reshape(B, c, R)

    def rows(q_chunk: torch.Tensor, k_t: torch.Tensor) -> torch.Tensor:
        # the scale goes on q (c x d values), not on the c x N logits; the head sum's 1/H
        # waits for the pooled map (max pooling commutes with a positive factor)
        return pool_keys(torch.softmax((q_chunk * scale) @ k_t, dim=-1, dtype=torch.float32).sum(1))

    parts = []
    for start in range(0, N, chunk):
        q_chunk = query[:, :, start : start + chunk]
        if checkpoint_chunks and torch.is_grad_enabled():
            parts.append(checkpoint(rows, q_chunk, key_t, use_reentrant=False))
        else:
            parts.append(rows(q_chunk, key_t))
    by_key = torch.cat(parts, dim=1).transpose(1, 2)  # (B, R keys, N queries)
    pooled = F.adaptive_max_pool2d(by_key.reshape(B * R, 1, h, w), out_grid).reshape(B, R, R)
    return pooled.transpose(1, 2) / H


def layer_grid(tokens: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of a layer with `tokens` positions in a UNet fed (H, W) latents: the
    latent size halved (rounding up, as the stride-2 downsamplers do) until it matches."""
    h, w = latent_hw
    while h * w > tokens and (h > 1 or w > 1):
        h, w = -(-h // 2), -(-w // 2)
    if h * w != tokens:
        raise ValueError(f"{tokens} attention positions are no downsampled grid of latents {latent_hw}")
    return h, w


@dataclass
class PooledSelfAttentionCapture:
    """Capture pooled self-attention maps of chosen layers during forward passes.

    Hooks on each layer's ``to_q`` and ``to_k`` receive exactly the projections its processor
    (whatever processor is installed) uses; the map is computed by
    :func:`pooled_attention_probs` as soon as the key is known and the projections are not
    kept. Use as a context manager: hooks exist only inside the ``with`` block.

    Args:
        layers: name -> self-attention layer.
        latent_hw: (H, W) of the model input, to recover each layer's grid.
        out_grid: (Rh, Rw) of the pooled maps.
        detach: compute the maps without gradient (default); otherwise gradients flow into
            q and k, with chunks recomputed in backward to keep memory bounded.
        max_elements: chunk budget, see :func:`pooled_attention_probs` (None: by device).

    After a forward, ``maps[name]`` is (B, Rh*Rw, Rh*Rw) and ``grids[name]`` the layer's (h, w).
    """

    layers: Mapping[str, Attention]
    latent_hw: tuple[int, int]
    out_grid: tuple[int, int]
    detach: bool = True
    max_elements: int | None = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    grids: dict[str, tuple[int, int]] = field(default_factory=dict)
    _queries: dict[str, torch.Tensor] = field(default_factory=dict)
    _handles: list = field(default_factory=list)

    def __enter__(self) -> PooledSelfAttentionCapture:
        for name, attn in self.layers.items():
            self._handles.append(attn.to_q.register_forward_hook(self._keep_query(name)))
            self._handles.append(attn.to_k.register_forward_hook(self._pool(name, attn)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._queries.clear()

    def _keep_query(self, name: str) -> Callable:
        def hook(module, args, output):
            self._queries[name] = output

        return hook

    def _pool(self, name: str, attn: Attention) -> Callable:
        def hook(module, args, output):
            query = self._queries.pop(name, None)
            if query is None or query.shape != output.shape:
                return  # not a self-attention call of this layer
            B, N, C = query.shape
            heads = attn.heads
            q, k = (t.view(B, N, heads, C // heads).transpose(1, 2) for t in (query, output))
            if attn.norm_q is not None:
                q = attn.norm_q(q)
            if attn.norm_k is not None:
                k = attn.norm_k(k)
            grid = layer_grid(N, self.latent_hw)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach):
                if self.detach:
                    q, k = q.detach(), k.detach()
                self.maps[name] = pooled_attention_probs(
                    q, k, grid, self.out_grid, max_elements=self.max_elements, checkpoint_chunks=not self.detach
                )
            self.grids[name] = grid

        return hook
