#!/usr/bin/env python
"""Convert InterWild's released snapshot_N.pth (facebookresearch/InterWild) to a checkpoint
folder of the `interwild` model: DIR/model.safetensors and DIR/config.yaml, which
tools/eval.py --checkpoint DIR and tools/train.py --init DIR read."""
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

    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("snapshot", type=Path, help="InterWild's snapshot_N.pth")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as mano:  # the key layout only: MANO's arrays never enter the weights
        write_standin_mano(mano)
        model = create_model("interwild", HandModel(mano), checkpoint=args.snapshot)
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(args.out / WEIGHTS, safetensors_bytes(state))
    (args.out / CONFIG).write_text(to_yaml(load_config(Experiment, None, ["model.name=interwild"])))
    print(f"wrote {args.out / WEIGHTS} ({len(state)} tensors) and {args.out / CONFIG}")
    return 0


if __name__ == "__main__":
    run_tool(main)
