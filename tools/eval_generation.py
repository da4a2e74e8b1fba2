#!/usr/bin/env python
"""Score generated samples against real images: FID, KID, FID-H, KID-H, hand confidence, label consistency."""
from __future__ import annotations

import argparse

from handrecon.cli import add_config_args, config_from_args, run_tool


def main(argv: list[str] | None = None) -> int:
    from synth.generation_eval import GenerationEval, evaluate_generation

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="generated=runs/cache grid=4")
    args = parser.parse_args(argv)
    cfg = config_from_args(GenerationEval, args, out_key="out")
    evaluate_generation(cfg)
    print(f"wrote {cfg.out}/metrics.json" + (", per_sample.csv, best_worst.png" if cfg.regressor or cfg.detector.name != "none" else ""))
    return 0


if __name__ == "__main__":
    run_tool(main)
