#!/usr/bin/env python
"""Train and evaluate one experiment at several synthetic mix ratios and seeds; results.csv + a plot."""
from __future__ import annotations

import argparse

from handrecon.cli import add_config_args, config_from_args, run_tool


def main(argv: list[str] | None = None) -> int:
    from handrecon.report import format_table
    from handrecon.sweep import Sweep, run_sweep

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="ratios=[0,0.3] experiment.optim.lr=1e-4")
    args = parser.parse_args(argv)
    sweep = config_from_args(Sweep, args, out_key="out")
    if any(source.kind == "live" for source in sweep.experiment.data.sources.values()):
        import synth.live  # noqa: F401 - registers the 'live' source kind
    rows = run_sweep(sweep)
    for row in rows:
        metrics = {k: v for k, v in row.items() if "/" in k and not k.endswith(("ci_lo", "ci_hi"))}
        ci = {k: (row[f"{k}/ci_lo"], row[f"{k}/ci_hi"]) for k in metrics}
        print(f"\nratio {row['ratio']:.2f}, seed {row['seed']} ({row['num_samples']} test samples)")
        print(format_table(metrics, ci))
    print(f"\nwrote {sweep.out}/results.csv and {sweep.out}/metric_vs_ratio.png")
    return 0


if __name__ == "__main__":
    run_tool(main)
