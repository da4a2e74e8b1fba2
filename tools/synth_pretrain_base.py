#!/usr/bin/env python
"""Train a text-to-image base (VAE, then UNet) on a dataset's pairs and write it as a Stable
Diffusion diffusers folder for model.base (python tools/synth_pretrain_base.py CONFIG)."""
from __future__ import annotations

import argparse
from pathlib import Path

from handrecon.cli import add_config_args, config_from_args, run_tool


def main(argv: list[str] | None = None) -> int:
    from synth.pretrain_base import BasePretrainExperiment, BaseTrainer

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="train.max_steps=3000 train.vae_steps=600")
    parser.add_argument("--resume", metavar="RUN_DIR", type=Path, help="continue RUN_DIR exactly from its latest checkpoint (its config + --set)")
    args = parser.parse_args(argv)
    cfg = config_from_args(BasePretrainExperiment, args)
    trainer = BaseTrainer(cfg, resume=args.resume is not None)
    try:
        trainer.fit()
    finally:
        trainer.close()
    print(f"{trainer.run_dir / 'base'}: the base after {trainer.step} steps; use it as model.base={trainer.run_dir / 'base'}")
    return 0


if __name__ == "__main__":
    run_tool(main)
