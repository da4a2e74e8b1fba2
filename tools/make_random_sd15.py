#!/usr/bin/env python
"""Write a Stable Diffusion 1.5-architecture diffusers folder with random weights (for dry runs and tests, not for generation)."""
from __future__ import annotations

import argparse
from pathlib import Path

from handrecon.cli import run_tool


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--out", required=True, type=Path, help="the folder to write (unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    parser.add_argument("--scale", type=_scale, default=1.0, help="width and depth factor in (0, 1]; 1: SD 1.5's full size (4.3 GB of fp32 weights)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--tokenizer", choices=["sd15", "tiny"], default="sd15", help="sd15: SD 1.x's vocabulary (needs open-clip-torch)")
    args = parser.parse_args(argv)

    from synth.models.random_sd15 import write_random_sd15

    folder = write_random_sd15(args.out, args.scale, args.seed, args.tokenizer)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder} (scale {args.scale:g}, {size / 2**20:.1f} MiB); use it as model.base")
    return 0


if __name__ == "__main__":
    run_tool(main)
