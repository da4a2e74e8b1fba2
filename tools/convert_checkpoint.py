#!/usr/bin/env python
"""Convert a released checkpoint of the original code to a checkpoint folder of our model:
InterWild's snapshot_N.pth (facebookresearch/InterWild) to `interwild`, DIR's checkpoint
(PengfeiRen96/DIR) to `dir`. Writes OUT/model.safetensors and OUT/config.yaml, which
tools/eval.py --checkpoint OUT and tools/train.py --init OUT read. The file's format (its
state-dict key) says which model it is; the key report is printed."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from handrecon.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save as safetensors_bytes

    from handrecon.config import load_config, to_yaml
    from handrecon.engine import Experiment
    from handrecon.engine.checkpoint import CONFIG, WEIGHTS
    from handrecon.hand_model.mano import HandModel
    from handrecon.hand_model.standin import write_standin_mano
    from handrecon.io import atomic_write_bytes
    from handrecon.models import create_model
    from handrecon.models.released_checkpoint import detect_format

    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("snapshot", type=Path, help="InterWild's snapshot_N.pth or DIR's checkpoint (.pth)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    args = parser.parse_args(argv)
    name = detect_format(args.snapshot).model
    with tempfile.TemporaryDirectory() as mano:  # the key layout only: MANO's arrays never enter the weights
        write_standin_mano(mano)
        model = create_model(name, HandModel(mano), checkpoint=args.snapshot)
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(args.out / WEIGHTS, safetensors_bytes(state))
    (args.out / CONFIG).write_text(to_yaml(load_config(Experiment, None, [f"model.name={name}"])))
    print(f"wrote {args.out / WEIGHTS} ({len(state)} tensors) and {args.out / CONFIG}")
    return 0


if __name__ == "__main__":
    run_tool(main)
