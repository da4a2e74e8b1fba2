#!/usr/bin/env python
"""One generator training step (ControlNet + UNet forward and backward, MSE loss) of SesaHand
(structural fusion + hand-token bias) against diffusers' plain ControlNet with the same weights,
on the same batch, in one process; prints the time ratio (the paper: 0.44 / 0.41 s = 1.07) and that of
each branch alone (hand-token bias on UNet + ControlNet; structural fusion)."""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, UNet2DConditionModel

from handrecon.cli import run_tool
from synth.attention import HandTokenContext, install_hand_bias, remove_hand_bias
from synth.models import FusionControlNetModel
from synth.models.components import tiny_components


def _sd15(device: torch.device) -> tuple[UNet2DConditionModel, int, int]:
    """Stable Diffusion 1.5's UNet architecture with random weights: 64x64 latents, 768-d text."""
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    return unet.to(device), 64, 768


def _tiny(device: torch.device):
    parts = tiny_components()
    return parts.unet.to(device), 32, parts.unet.config.cross_attention_dim


def _step(unet, controlnet, batch, context, mask) -> None:
    latents, t, text, cond, noise = batch
    with context.use(mask):  # read only where bias processors are installed
        down, mid = controlnet(latents, t, text, controlnet_cond=cond, return_dict=False)
        pred = unet(latents, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    F.mse_loss(pred.float(), noise.float()).backward()
    controlnet.zero_grad(set_to_none=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--arch", choices=["tiny", "sd15"], default=None, help="default: sd15 on CUDA, tiny on CPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 4 (sd15) / 8 (tiny)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (interleaved)")
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default=None, help="default: bf16 on CUDA, off on CPU")
    parser.add_argument("--fusion-resolution", type=int, default=8)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = args.arch or ("sd15" if device.type == "cuda" else "tiny")
    amp = args.amp or ("bf16" if device.type == "cuda" else "off")
    batch_size = args.batch or (4 if arch == "sd15" else 8)
    torch.manual_seed(0)
    unet, side, text_dim = (_sd15 if arch == "sd15" else _tiny)(device)
    unet.requires_grad_(False)
    embed = (16, 32, 96, 256) if arch == "sd15" else (8, 16)
    plain = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embed).to(device)
    sesa = FusionControlNetModel.from_controlnet(plain, structural_fusion=True, fusion_resolution=args.fusion_resolution)
    scale = 8 if arch == "sd15" else 2
    g = torch.Generator(device).manual_seed(0)
    batch = (
        torch.randn(batch_size, 4, side, side, generator=g, device=device),
        torch.randint(0, 1000, (batch_size,), generator=g, device=device),
        torch.randn(batch_size, 77, text_dim, generator=g, device=device),
        torch.rand(batch_size, 3, side * scale, side * scale, generator=g, device=device),
        torch.randn(batch_size, 4, side, side, generator=g, device=device),
    )
    mask = torch.zeros(batch_size, 77, dtype=torch.bool)
    mask[:, 2:6] = True
    context = HandTokenContext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    # variant -> (ControlNet, fusion on, hand bias on): each branch alone shows where the overhead is
    variants = {
        "plain ControlNet": (plain, False, False),
        "+ hand-token bias": (sesa, False, True),
        "+ structural fusion": (sesa, True, False),
        "SesaHand (both)": (sesa, True, True),
    }

    def run(name: str) -> float:
        controlnet, fusion, bias = variants[name]
        if controlnet is sesa:
            sesa.set_fusion(structural_fusion=fusion)
        for model in (unet, sesa):
            (install_hand_bias(model, context, 2.0) if bias else remove_hand_bias(model))
        return timed(lambda: _step(unet, controlnet, batch, context, mask))

    for name in variants:  # warm-up
        run(name)
    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name in variants:
            times[name].append(run(name))
    peak = {}
    if device.type == "cuda":
        for name in variants:
            torch.cuda.reset_peak_memory_stats()
            run(name)
            peak[name] = torch.cuda.max_memory_allocated() / 2**30
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    where = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{arch} architecture, batch {batch_size}, latents {side}x{side}, amp {amp}, fusion grid {args.fusion_resolution}, on {where}")
    for name, time_s in med.items():
        memory = f"   peak {peak[name]:.2f} GiB" if peak else ""
        print(f"{name:22s} {time_s * 1000:9.1f} ms   ratio {time_s / med['plain ControlNet']:6.3f}{memory}")
    print("target: SesaHand / plain <= 1.05 (the paper's figure: 0.44 / 0.41 s = 1.07)")
    return 0


if __name__ == "__main__":
    run_tool(main)
