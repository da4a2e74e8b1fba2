"""Hand-token bias processor and pooled self-attention capture against naive references."""
from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from synth.attention import (
    HAND_BIAS_TARGETS,
    HandBiasAttnProcessor,
    HandTokenContext,
    PooledSelfAttentionCapture,
    attention_layers,
    hand_bias,
    hand_token_mask,
    install_hand_bias,
    layer_grid,
    pooled_attention_probs,
    remove_hand_bias,
)


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()


def naive_attention(attn: Attention, x: torch.Tensor, ctx: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + B) V through the layer's projections, in float64."""
    B, H = x.shape[0], attn.heads
    q, k, v = (
        t.double().view(B, -1, H, t.shape[-1] // H).transpose(1, 2)
        for t in (attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx))
    )
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias.double()[:, None]
    out = (torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(B, -1, H * q.shape[-1])
    return attn.to_out[0](out.float())


@pytest.fixture
def cross_attn():
    torch.manual_seed(0)
    return Attention(query_dim=32, cross_attention_dim=16, heads=4, dim_head=8).eval()


def test_hand_token_mask_from_lists_and_checks():
    mask = hand_token_mask([[1, 3], [], [76, 1, 1]])
    assert mask.shape == (3, 77) and mask.dtype == torch.bool
    assert mask[0].nonzero().flatten().tolist() == [1, 3]
    assert not mask[1].any()
    assert mask[2].nonzero().flatten().tolist() == [1, 76]
    assert hand_token_mask(mask) is mask
    with pytest.raises(ValueError, match="prompt 0"):
        hand_token_mask([[77]])
    with pytest.raises(ValueError):
        hand_token_mask(torch.zeros(2, 10, dtype=torch.bool))


def test_hand_bias_rows_and_guidance_layout():
    mask = hand_token_mask([[2], [5, 6]], seq_len=8)
    b = hand_bias(mask, 2.0, batch=2)
    assert b.shape == (2, 1, 8) and b[0, 0, 2] == 2.0 and b[1, 0, 5] == 2.0 and b.sum() == 6.0
    cfg = hand_bias(mask, 2.0, batch=4)
    assert torch.equal(cfg[:2], torch.zeros(2, 1, 8)) and torch.equal(cfg[2:], b)
    assert torch.equal(hand_bias(mask, 2.0, batch=4, bias_uncond=True), torch.cat([b, b]))
    with pytest.raises(ValueError, match="attention batch is 3"):
        hand_bias(mask, 2.0, batch=3)


@pytest.mark.parametrize("guidance", [False, True])
def test_bias_processor_equals_naive_reference(cross_attn, guidance):
    torch.manual_seed(1)
    indices = [[1, 4], [], [0, 2, 9]]  # per-sample index sets, one empty
    n = len(indices)
    B = 2 * n if guidance else n
    x, ctx = torch.randn(B, 20, 32), torch.randn(B, 12, 16)
    context = HandTokenContext()
    cross_attn.set_processor(HandBiasAttnProcessor(context, alpha=2.0))
    with context.use(indices, seq_len=12), torch.no_grad():
        out = cross_attn(x, encoder_hidden_states=ctx)
    bias = torch.zeros(B, 12)
    for i, cols in enumerate(indices):
        bias[i + (n if guidance else 0), cols] = 2.0  # guidance: the unconditional half is unbiased
    with torch.no_grad():
        ref = naive_attention(cross_attn, x, ctx, bias[:, None, :])
        plain = naive_attention(cross_attn, x, ctx, torch.zeros(B, 1, 12))
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    assert not torch.allclose(out, plain, atol=1e-3)  # the bias does change the result


def test_bias_adds_to_an_existing_attention_mask(cross_attn):
    torch.manual_seed(2)
    x, ctx = torch.randn(2, 6, 32), torch.randn(2, 5, 16)
    keep = torch.tensor([[0.0, 0.0, 0.0, -1e4, -1e4], [0.0, 0.0, 0.0, 0.0, 0.0]])[:, None]
    context = HandTokenContext()
    cross_attn.set_processor(HandBiasAttnProcessor(context, alpha=1.5))
    with context.use([[1], [4]], seq_len=5), torch.no_grad():
        out = cross_attn(x, encoder_hidden_states=ctx, attention_mask=keep)
    bias = torch.zeros(2, 1, 5)
    bias[0, 0, 1], bias[1, 0, 4] = 1.5, 1.5
    with torch.no_grad():
        ref = naive_attention(cross_attn, x, ctx, keep + bias)
    assert torch.allclose(out, ref, atol=1e-5)


def test_alpha_zero_is_the_default_processor_exactly():
    unet_ref, unet = tiny_unet(), tiny_unet()
    context = HandTokenContext()
    assert install_hand_bias(unet, context, alpha=0.0) == len(attention_layers(unet, "cross")) > 0
    torch.manual_seed(3)
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), torch.randn(2, 77, 32)
    with torch.no_grad():
        ref = unet_ref(x, t, ctx).sample
        with context.use([[1, 2], [5]]):
            out = unet(x, t, ctx).sample
    assert isinstance(unet_ref.attn_processors[next(iter(unet_ref.attn_processors))], AttnProcessor2_0)
    assert torch.equal(out, ref)
    # alpha > 0 changes the output; removing the processors restores the default exactly.
    install_hand_bias(unet, context, alpha=2.0)
    with torch.no_grad(), context.use([[1, 2], [5]]):
        biased = unet(x, t, ctx).sample
    assert not torch.allclose(biased, ref, atol=1e-4)
    assert remove_hand_bias(unet) == len(attention_layers(unet, "cross"))
    with torch.no_grad():
        assert torch.equal(unet(x, t, ctx).sample, ref)


def test_bias_on_every_column_changes_nothing():
    """A constant added to all logits of a row cancels in the softmax."""
    unet_ref, unet = tiny_unet(), tiny_unet()
    context = HandTokenContext()
    install_hand_bias(unet, context, alpha=2.0)
    torch.manual_seed(4)
    x, ctx = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32)
    with torch.no_grad(), context.use([list(range(77))]):
        out = unet(x, 3, ctx).sample
        ref = unet_ref(x, 3, ctx).sample
    assert torch.allclose(out, ref, atol=1e-5)


def test_targets_registry_names_components():
    assert HAND_BIAS_TARGETS["both"] == ("unet", "controlnet") and HAND_BIAS_TARGETS["none"] == ()


# ------------------------------------------------------------------------------- capture


def naive_pooled(q: torch.Tensor, k: torch.Tensor, grid, out_grid) -> torch.Tensor:
    """Full (B, N, N) head-mean probabilities, then max over explicit adaptive-pooling cells."""
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1]), -1).mean(1)
    B = probs.shape[0]
    (h, w), (R, S) = grid, out_grid
    cells = []
    for i in range(R):
        for j in range(S):
            rows = range(math.floor(i * h / R), math.ceil((i + 1) * h / R))
            cols = range(math.floor(j * w / S), math.ceil((j + 1) * w / S))
            cells.append([r * w + c for r in rows for c in cols])
    out = torch.zeros(B, R * S, R * S, dtype=torch.float64)
    for a, qa in enumerate(cells):
        for b, kb in enumerate(cells):
            out[:, a, b] = probs[:, qa][:, :, kb].amax((1, 2))
    return out


@pytest.mark.parametrize(
    "grid,out_grid,max_elements",
    [((8, 8), (4, 4), 2**20), ((8, 8), (4, 4), 3 * 2 * 64), ((6, 9), (4, 3), 700), ((4, 4), (8, 8), 2**20), ((8, 8), (2, 2), None)],
)
def test_pooled_probs_equal_pooling_of_the_full_map(grid, out_grid, max_elements):
    torch.manual_seed(5)
    N = grid[0] * grid[1]
    q, k = torch.randn(2, 3, N, 8) * 2, torch.randn(2, 3, N, 8) * 2
    out = pooled_attention_probs(q, k, grid, out_grid, max_elements=max_elements)
    ref = naive_pooled(q, k, grid, out_grid)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-7)


def test_layer_grid():
    assert layer_grid(64 * 64, (64, 64)) == (64, 64)
    assert layer_grid(16 * 16, (64, 64)) == (16, 16)
    assert layer_grid(5 * 4, (9, 7)) == (5, 4)  # stride-2 convs round up
    with pytest.raises(ValueError):
        layer_grid(100, (64, 64))


def _record_qk(layers):
    """Forward hooks storing each layer's q and k projections (the naive side of the tests)."""
    store, handles = {}, []
    for name, attn in layers.items():
        handles.append(attn.to_q.register_forward_hook(lambda m, a, o, n=name: store.__setitem__((n, "q"), o)))
        handles.append(attn.to_k.register_forward_hook(lambda m, a, o, n=name: store.__setitem__((n, "k"), o)))
    return store, handles


def test_capture_on_a_unet_matches_naive_maps_and_leaves_output_unchanged():
    unet = tiny_unet()
    layers = {n: m for n, m in attention_layers(unet, "self").items() if n.startswith(("down_blocks", "mid_block"))}
    assert len(layers) == 3  # 16x16, 8x8 and the mid block at 8x8
    torch.manual_seed(6)
    x, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    store, handles = _record_qk(layers)
    with torch.no_grad():
        ref_out = unet(x, 7, ctx).sample
    for h in handles:
        h.remove()
    with torch.no_grad(), PooledSelfAttentionCapture(layers, (16, 16), (4, 4), max_elements=1000) as cap:
        out = unet(x, 7, ctx).sample
    assert torch.equal(out, ref_out)
    assert not any(m._forward_hooks for a in layers.values() for m in (a.to_q, a.to_k))  # hooks removed
    for name, attn in layers.items():
        grid = layer_grid(store[(name, "q")].shape[1], (16, 16))
        q, k = (store[(name, s)].view(2, -1, attn.heads, store[(name, s)].shape[-1] // attn.heads).transpose(1, 2) for s in "qk")
        assert cap.grids[name] == grid
        assert torch.allclose(cap.maps[name].double(), naive_pooled(q, k, grid, (4, 4)), rtol=1e-5, atol=1e-7)


def test_capture_gradients_when_not_detached():
    torch.manual_seed(7)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    x = torch.randn(2, 36, 16)
    with PooledSelfAttentionCapture({"a": attn}, (6, 6), (3, 3), detach=False, max_elements=2 * 2 * 36 * 5) as cap:
        attn(x)
    cap.maps["a"].pow(2).sum().backward()
    grad = attn.to_q.weight.grad.clone()
    attn.zero_grad()
    q, k = (t.view(2, 36, 2, 8).transpose(1, 2) for t in (attn.to_q(x), attn.to_k(x)))
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1).mean(1).view(2, 6, 6, 6, 6)
    ref = probs.view(2, 3, 2, 3, 2, 3, 2, 3, 2).amax((2, 4, 6, 8)).reshape(2, 9, 9)
    assert torch.allclose(cap.maps["a"], ref, atol=1e-7)
    ref.pow(2).sum().backward()
    assert torch.allclose(grad, attn.to_q.weight.grad, rtol=1e-4, atol=1e-8)
    # detached (default): no graph
    with PooledSelfAttentionCapture({"a": attn}, (6, 6), (3, 3)) as cap:
        attn(x)
    assert not cap.maps["a"].requires_grad
