#!/usr/bin/env python
"""Train the SesaHand ControlNet (python tools/synth_train.py CONFIG, or under torchrun)."""
from __future__ import annotations

import argparse
from pathlib import Path

from handrecon.cli import add_config_args, config_from_args, run_tool


def main(argv: list[str] | None = None) -> int:
    from synth.train import GeneratorExperiment, GeneratorTrainer

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="optim.lr=1e-5 train.max_steps=2000")
    parser.add_argument("--resume", metavar="RUN_DIR", type=Path, help="continue RUN_DIR exactly from its latest checkpoint (its config + --set)")
    args = parser.parse_args(argv)
    cfg = config_from_args(GeneratorExperiment, args)
    trainer = GeneratorTrainer(cfg, resume=args.resume is not None)
    try:
        trainer.fit()
    finally:
        trainer.close()
    if trainer.dist.is_main:
        print(f"{trainer.run_dir}: step {trainer.step}, loss {trainer.last_scalars.get('loss', float('nan')):.5f}")
    return 0


if __name__ == "__main__":
    run_tool(main)
