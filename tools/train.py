#!/usr/bin/env python
"""Train a hand-mesh regressor (python tools/train.py CONFIG, or torchrun --nproc_per_node=N tools/train.py CONFIG)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from handrecon.cli import add_config_args, config_from_args, run_tool


def main(argv: list[str] | None = None) -> int:
    from handrecon.engine import Experiment, Trainer

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="optim.lr=1e-4 data.batch_size=32 model.options.roi_boxes=gt")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--init", metavar="CKPT", help="start from these weights (a run, checkpoint folder, .safetensors, or InterWild's snapshot_N.pth for model interwild); fresh optimizer")
    group.add_argument("--resume", metavar="RUN_DIR", type=Path, help="continue RUN_DIR exactly from its latest checkpoint (its config + --set)")
    args = parser.parse_args(argv)
    cfg = config_from_args(Experiment, args)
    if any(source.kind == "live" for source in cfg.data.sources.values()):
        import synth.live  # noqa: F401 - registers the 'live' source kind
    trainer = Trainer(cfg, resume=args.resume is not None, init=args.init)
    try:
        metrics = trainer.fit()
    finally:
        trainer.close()
    if trainer.dist.is_main:
        print(json.dumps({"run": str(trainer.run_dir), "step": trainer.step, **metrics}, indent=1))
    return 0


if __name__ == "__main__":
    run_tool(main)
