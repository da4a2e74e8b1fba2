#!/usr/bin/env python
"""Render the procedural stand-in dataset (one- and two-hand scenes) in InterHand2.6M format."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from handrecon.cli import add_config_args, config_from_args, int_at_least, run_tool
from handrecon.data.procedural import ProceduralConfig, generate
from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano
from handrecon.io import ensure_writable_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--out", required=True, type=Path, help="dataset folder (created; a rerun resumes)")
    parser.add_argument("--num", type=int_at_least(1), default=200, help="number of images over all splits")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--mano-dir", type=Path, default=None, help="MANO folder (default: the stand-in, written to OUT/mano)")
    add_config_args(parser, example="jpeg_quality=90 single_hand_prob=0.3")
    args = parser.parse_args(argv)
    cfg = config_from_args(ProceduralConfig, args)
    ensure_writable_dir(args.out, "--out")
    mano_dir = args.mano_dir
    if mano_dir is None:
        mano_dir = args.out / "mano"
        write_standin_mano(mano_dir)
    stats = generate(HandModel(mano_dir), cfg, args.out, args.num, args.seed)
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    run_tool(main)
