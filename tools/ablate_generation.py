#!/usr/bin/env python
"""Generation ablation: a ControlNet trained per row (SE, SF, AE), each generating from the same labels and seeds, each scored.

Rows 'w/o all', '+SE', '+SE+SF' and '+SE+SF+AE a=<alpha>' each train their own ControlNet from the
`train` section (same data, seed and steps) with the row's prompt field, fusion and alpha, then
generate with it (`job`) and are scored (`eval`); a rerun resumes row by row (synth/ablation.py).
With --reuse CONTROLNET nothing is trained: every row generates with that ControlNet, its toggles
set at generation, and the table is labelled inference-only.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from handrecon.cli import add_config_args, config_from_args, run_tool


def main(argv: list[str] | None = None) -> int:
    from synth.ablation import PLOT, Ablation, run_ablation

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="alphas=[1,2] job.num=100 train.train.max_steps=2000")
    parser.add_argument("--reuse", metavar="CONTROLNET", help="generate every row with this trained ControlNet folder, its toggles as "
                        "generation overrides, instead of training one per row (inference-only; the config key reuse)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.reuse is not None:
        args.overrides = [*args.overrides, f"reuse={args.reuse}"]
    cfg = config_from_args(Ablation, args, out_key="out")
    run_ablation(cfg)
    out = Path(cfg.out)
    print((out / "ablation.md").read_text())
    print(f"wrote {out / 'ablation.md'}, ablation.json" + (f", {PLOT}" if (out / PLOT).is_file() else ""))
    return 0


if __name__ == "__main__":
    run_tool(main)
