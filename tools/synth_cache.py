#!/usr/bin/env python
"""Cache SesaHand generations as indexed shards (resumable; torchrun --nproc_per_node=K splits the shards)."""
from __future__ import annotations

import argparse
import json

from handrecon.cli import add_config_args, config_from_args, int_at_least, run_tool


def main(argv: list[str] | None = None) -> int:
    from synth.cache import CacheJob, run

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="num=1000 labels.root=data/procedural")
    parser.add_argument("--out", help="cache folder (same as --set out=...)")
    parser.add_argument("--num", type=int_at_least(1), help="samples to plan (same as --set num=...)")
    args = parser.parse_args(argv)
    args.overrides += [f"{k}={v}" for k, v in (("out", args.out), ("num", args.num)) if v is not None]
    job = config_from_args(CacheJob, args, out_key="out")
    summary = run(job)
    if "written" in summary:
        print(json.dumps({"out": job.out, **summary}, indent=1))
    return 0


if __name__ == "__main__":
    run_tool(main)
