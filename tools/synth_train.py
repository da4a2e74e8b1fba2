#!/usr/bin/env python
"""Train the SesaHand ControlNet (python tools/synth_train.py CONFIG, or under torchrun)."""
from __future__ import annotations

import argparse
from pathlib import Path

from handrecon.cli import UserError, add_config_args, config_from_args, run_tool


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def print_check(cfg, config: str | None, report: dict) -> None:
    """The figures of `synth.train.check_run` as lines."""
    from handrecon.engine import checkpoint as ckpt

    m, t, accum = cfg.model, cfg.train, cfg.optim.grad_accum
    print(f"check of {config or 'the built-in defaults'}: one optimizer step; nothing written to {cfg.out}")
    print(f"base {m.base} ({m.base_dtype}), {report['resolution']} px, on {report['device']}, train.amp {t.amp}, "
          f"gradient checkpointing {'on' if m.gradient_checkpointing else 'off'}")  # fmt: skip
    width = max(len(name) for name in report["components"])
    for name, c in report["components"].items():
        role = "trainable" if c["trainable"] else "frozen"
        print(f"  {name:<{width}}  {_millions(c['params']):>10}  {c['dtype']:<8}  {role}")
    print(f"parameters: {_millions(report['trainable'])} trainable, {_millions(report['frozen'])} frozen")
    sources = ", ".join(f"{name} ({kind}, {size} samples)" for name, (kind, size) in report["sources"].items())
    print(f"data: {sources}; batch {cfg.data.batch_size} x {accum} micro-batch{'es' if accum > 1 else ''} a step, "
          f"{report['steps_per_epoch']} steps an epoch, {report['total_steps']} steps in all")  # fmt: skip
    print(f"step: {report['compute_s']:.2f} s forward, backward and optimizer (loading its batches: {report['data_s']:.2f} s), "
          f"loss {report['loss']:.4f}")  # fmt: skip
    print(f"peak memory: {report['peak_memory'] / 2**30:.2f} GiB ({report['peak_memory_kind']})")
    per_step = report["compute_s"] + (report["data_s"] if cfg.data.num_workers == 0 else 0.0)
    loading = "loading in the main process included" if cfg.data.num_workers == 0 else f"loading overlaps in {cfg.data.num_workers} workers"
    print(f"estimated run: {report['total_steps']} steps x {per_step:.2f} s = {_duration(report['total_steps'] * per_step)} "
          f"(training steps only, {loading}; validation grids and checkpoints not counted; the first step's one-time costs "
          "make it an upper bound)")  # fmt: skip
    if ckpt.list_checkpoints(Path(cfg.out)):
        print(f"note: {cfg.out} already holds checkpoints: the run needs --resume {cfg.out} or another out")


def main(argv: list[str] | None = None) -> int:
    from synth.train import GeneratorExperiment, GeneratorTrainer, check_run

    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="optim.lr=1e-5 train.max_steps=2000")
    parser.add_argument("--resume", metavar="RUN_DIR", type=Path, help="continue RUN_DIR exactly from its latest checkpoint (its config + --set)")
    parser.add_argument(
        "--check", action="store_true",
        help="build everything the run builds and run one optimizer step, then print parameter counts, dtypes, peak memory, "
        "the step time and an estimate of the run's time; writes nothing to the run folder",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.check and args.resume is not None:
        raise UserError("--check tries a fresh run of CONFIG; give CONFIG and --set, not --resume")
    cfg = config_from_args(GeneratorExperiment, args)
    if args.check:
        print_check(cfg, args.config, check_run(cfg))
        return 0
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
