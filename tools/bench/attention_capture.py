#!/usr/bin/env python
"""Pooled self-attention capture (the input of structural fusion) against the attention it
shadows: time of the layer's own SDPA forward (baseline), of the chunked pooled capture at
several chunk budgets and of the naive full map; on CUDA also the extra peak memory of each.
Defaults: one Stable Diffusion 1.5 64x64 self-attention layer (8 heads of 40), batch 2."""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from handrecon.cli import run_tool
from synth.attention import default_max_elements, pooled_attention_probs


def naive_pooled(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], out_grid: tuple[int, int]) -> torch.Tensor:
    """Every head's full map at once, then the same pooling."""
    B, H, N, d = q.shape
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1, dtype=torch.float32).mean(1)
    R = out_grid[0] * out_grid[1]
    by_key = F.adaptive_max_pool2d(probs.reshape(B * N, 1, *grid), out_grid).reshape(B, N, R).transpose(1, 2)
    return F.adaptive_max_pool2d(by_key.reshape(B * R, 1, *grid), out_grid).reshape(B, R, R).transpose(1, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--side", type=int, default=64, help="the layer's grid is side x side")
    parser.add_argument("--head-dim", type=int, default=40)
    parser.add_argument("--grid", type=int, default=8, help="fusion grid side")
    parser.add_argument("--budgets", type=int, nargs="+", default=[19, 21, 23, 24, 25], help="log2 chunk budgets")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-naive", action="store_true", help="skip the full map (it needs B*H*N^2 floats)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    B, H, N, d = args.batch, args.heads, args.side**2, args.head_dim
    g = torch.Generator(device).manual_seed(0)
    # the layout the capture hooks see: (B, N, H*d) projections viewed per head
    q, k, v = (torch.randn(B, N, H, d, generator=g, device=device, dtype=dtype).transpose(1, 2) for _ in range(3))
    grid, out_grid = (args.side, args.side), (args.grid, args.grid)

    def measure(fn) -> tuple[float, float | None]:
        fn()
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peak = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        return sorted(times)[len(times) // 2], peak

    rows = {"SDPA forward (baseline)": lambda: F.scaled_dot_product_attention(q, k, v)}
    for e in args.budgets:
        marker = " (default)" if 2**e == default_max_elements(device) else ""
        rows[f"pooled, chunk 2^{e}{marker}"] = lambda e=e: pooled_attention_probs(q, k, grid, out_grid, max_elements=2**e)
    if not args.no_naive:
        rows["naive full map"] = lambda: naive_pooled(q, k, grid, out_grid)
    print(f"batch {B}, {H} heads x {d}, {args.side}x{args.side} positions, fusion grid {args.grid}, {dtype} on {device}")
    with torch.no_grad():
        results = {name: measure(fn) for name, fn in rows.items()}
    base = results["SDPA forward (baseline)"][0]
    for name, (seconds, peak) in results.items():
        memory = f"   extra peak {peak:8.1f} MiB" if peak is not None else ""
        print(f"{name:32s} {seconds * 1000:9.2f} ms   x{seconds / base:6.2f} of SDPA{memory}")
    return 0


if __name__ == "__main__":
    run_tool(main)
