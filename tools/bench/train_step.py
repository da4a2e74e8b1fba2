#!/usr/bin/env python
"""Training throughput per model at its real input size: the full loop (loader, augmentation,
forward, backward, optimizer) against the same steps on one batch held in memory."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from handrecon.cli import run_tool
from handrecon.config import load_config
from handrecon.data.procedural import ProceduralConfig, generate
from handrecon.engine import Experiment, Trainer
from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano


def _compute_only(trainer: Trainer, batch: dict, steps: int) -> float:
    """Samples/s of the trainer's own step on one batch (no data loading)."""
    model, accum = trainer.model, trainer.cfg.optim.grad_accum
    model.train()
    for _ in range(2):  # warm-up
        trainer._forward_backward(batch, sync=True)
        trainer._optimizer_step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        for _ in range(accum):
            trainer._forward_backward(batch, sync=True)
        trainer._optimizer_step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * accum * len(batch["sample_id"]) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--models", nargs="+", default=["interwild_tiny", "dir_tiny", "dir", "interwild"])
    parser.add_argument("--batch", type=int, default=None, help="per step (default: 32 on CUDA, 4 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 3 on CPU)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    batch_size = args.batch or (32 if cuda else 4)
    steps = args.steps or (20 if cuda else 3)

    root = Path(tempfile.mkdtemp())
    write_standin_mano(root / "mano")
    proc = ProceduralConfig(image_size=(384, 384), split_fractions=(1.0, 0.0, 0.0))
    generate(HandModel(root / "mano"), proc, root / "data", batch_size * 2, seed=0, progress=False)
    device = torch.device("cuda" if cuda else "cpu") if args.device == "auto" else torch.device(args.device)
    print(f"device {device}, batch {batch_size}, {steps} timed steps, {args.workers} loader workers, amp {args.amp}, 384x384 source images")
    print(f"{'model':16s} {'input':>9s} {'loop samples/s':>15s} {'data share':>11s} {'compute-only':>13s} {'loop/compute':>13s}")
    for name in args.models:
        cfg = load_config(
            Experiment,
            None,
            [
                f"out={root / 'runs' / name}",
                f"mano_dir={root / 'mano'}",
                f"model.name={name}",
                f"data.sources.real={{kind: ih26m, root: {root / 'data'}, split: train}}",
                f"data.batch_size={batch_size}",
                f"data.num_workers={args.workers}",
                f"train.max_steps={2 * steps}",
                f"train.log_every={steps}",  # the first window warms up, the second is timed
                f"train.ckpt_every={10 * steps}",
                f"train.amp={args.amp}",
                f"train.device={device}",
            ],
        )
        trainer = Trainer(cfg, progress=False)
        trainer.fit()
        loop = dict(trainer.timing)
        batch = next(iter(trainer.loader))
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        compute = _compute_only(trainer, batch, steps)
        h, w = trainer.model.input_size
        print(
            f"{name:16s} {f'{h}x{w}':>9s} {loop['samples_per_s']:15.1f} {loop['data_share']:11.0%} {compute:13.1f} "
            f"{loop['samples_per_s'] / compute:12.2f}x"
        )
        trainer.close()
    return 0


if __name__ == "__main__":
    run_tool(main)
