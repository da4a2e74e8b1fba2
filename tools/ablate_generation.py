#!/usr/bin/env python
"""Generation ablation: semantics, structural fusion and the hand-token bias toggled over the same labels and seeds, each scored."""
from __future__ import annotations

import argparse

from handrecon.cli import add_config_args, config_from_args, run_tool


def main(argv: list[str] | None = None) -> int:
    from synth.ablation import Ablation, run_ablation

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="alphas=[1,2] job.num=100")
    args = parser.parse_args(argv)
    cfg = config_from_args(Ablation, args, out_key="out")
    run_ablation(cfg)
    print(open(f"{cfg.out}/ablation.md").read())
    print(f"wrote {cfg.out}/ablation.md, ablation.json, metrics_vs_alpha.png")
    return 0


if __name__ == "__main__":
    run_tool(main)
