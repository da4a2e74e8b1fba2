#!/usr/bin/env python
"""Score generated samples against real images: FID, KID, FID-H, KID-H, hand confidence, label consistency."""
from __future__ import annotations

import argparse

from handrecon.cli import add_config_args, config_from_args, run_tool


def main(argv: list[str] | None = None) -> int:
    from synth.generation_eval import PROTOCOLS, GenerationEval, evaluate_generation

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="generated=runs/cache grid=4")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="the protocol (same as --set protocol=...): 'ours' (default) or 'attentionhand', AttentionHand's MSCOCO protocol "
        "(512 x 512 images, mesh-box hand crops, MSE-2D / MSE-3D); see docs/generation_protocol.md",
    )
    args = parser.parse_args(argv)
    if args.protocol:
        args.overrides.append(f"protocol={args.protocol}")
    cfg = config_from_args(GenerationEval, args, out_key="out")
    evaluate_generation(cfg)
    print(f"wrote {cfg.out}/metrics.json" + (", per_sample.csv, best_worst.png" if cfg.regressor or cfg.detector.name != "none" else ""))
    return 0


if __name__ == "__main__":
    run_tool(main)
