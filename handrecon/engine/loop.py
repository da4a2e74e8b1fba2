"""The training loop both trainers share (`handrecon.engine.trainer.Trainer`, the regressors, and
`synth.train.GeneratorTrainer`, the ControlNet): optimizer steps of `optim.grad_accum`
micro-batches, AMP, gradient clipping, logging, validation and checkpoint cadence, exact resume
and DDP.

A trainer subclasses :class:`TrainLoop`; its ``__init__`` calls ``super().__init__`` (checks,
process group, seed), builds its trainable module and its mixed loader, then calls
:meth:`TrainLoop.setup_loop` (optimizer, scheduler, scaler, resume, DDP, run folder). It supplies:

- ``losses(batch, index)``: the named loss terms of one micro-batch (``index``: its position in
  the optimizer step); the loop sums them, scales and back-propagates.
- ``validate()``: validation metrics, the same on every rank (``{}``: nothing to compare).
- ``load_weights(checkpoint)``, and ``write_checkpoint(state, config_yaml)`` where its weights are
  not the module's state dict in ``model.safetensors``.
- optionally ``micro_context(batch)`` (held through forward and backward) and
  ``start_epoch(epoch)``.

Steps are optimizer steps. Everything a step depends on is a function of the saved state:
weights, optimizer, scheduler, AMP scaler, RNG states (rank 0's), the sampler position (in
micro-batches the loop consumed) and whatever randomness the trainer derives from (seed, step,
micro-batch) - so a run resumed from a checkpoint continues exactly as the uninterrupted run
would have.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import check_fields, save_config, to_yaml
from ..data.mixing import realized_ratio
from ..errors import UserError
from ..io import ensure_writable_dir
from . import checkpoint as ckpt
from .amp import autocast
from .distributed import DistInfo, broadcast_buffers, init_distributed, mean_over_ranks, pick_device, shutdown_distributed
from .optim import build_optimizer, build_scheduler

#: The one validation key of a failed validation (non-finite outputs): how many samples had them.
VAL_FAILED = "failed_nonfinite_samples"


@dataclass
class LoopConfig:
    """The `train` keys every trainer shares; a trainer's own section subclasses it."""

    epochs: int = 1  # passes over data.epoch_source (or data.steps_per_epoch steps each); >= 1
    max_steps: int | None = None  # optimizer steps (>= 1); when set it replaces `epochs`
    amp: str = field(default="off", metadata={"choices": ("off", "bf16", "fp16")})  # fp16 needs CUDA
    device: str = "auto"  # auto: the rank's GPU if CUDA is available, else cpu
    seed: int = 0  # >= 0; initialisation and the training randomness
    log_every: int = 20  # optimizer steps between TensorBoard scalars; >= 1
    val_every: int = 0  # optimizer steps between validations (and at the end); 0: once per epoch
    ckpt_every: int = 0  # optimizer steps between checkpoints (and at the end); 0: once per epoch
    keep_last: int = 3  # newest checkpoints kept (the best one is kept as well); >= 1

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "epochs", "max_steps", "log_every", "keep_last")
        check_fields(self, ">= 0", "seed", "val_every", "ckpt_every")


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class TrainLoop:
    """Base of every trainer: `Trainer(cfg).fit()`; `resume` continues a run folder exactly.

    `cfg` has `out`, `mano_dir`, `train` (a :class:`LoopConfig`), `optim` and `schedule`."""

    desc = "train"  # the progress bar's label

    def __init__(self, cfg: Any, resume: bool = False, progress: bool = True):
        self.cfg, self.resume = cfg, resume
        self.run_dir = Path(cfg.out)
        t = cfg.train
        self.device = pick_device(t.device)
        self.dist: DistInfo = init_distributed(self.device)
        if t.amp == "fp16" and self.device.type != "cuda":
            raise UserError(f"train.amp=fp16 needs a CUDA device (device is {self.device}); use bf16 or off")
        if not resume and ckpt.list_checkpoints(self.run_dir):
            raise UserError(f"{self.run_dir} already holds checkpoints: pass --resume {self.run_dir} to continue it, or set another out")
        if not cfg.mano_dir:
            raise UserError("mano_dir is not set: give the folder with MANO_RIGHT.pkl and MANO_LEFT.pkl")
        if self.dist.is_main:
            ensure_writable_dir(self.run_dir, "out")  # before the model and data are built
        self.progress = progress and self.dist.is_main
        torch.manual_seed(t.seed)
        self.step, self.epoch = 0, 0
        self.best: ckpt.BestTracker | None = None  # set by trainers whose validation picks a best step
        self.timing: dict[str, float] = {}  # throughput of the last logging window
        self.last_scalars: dict[str, float] = {}  # the means of the last logging window

    # -- what a trainer supplies ----------------------------------------------------------------
    def losses(self, batch: dict, index: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        return {}

    def load_weights(self, checkpoint: Path) -> None:
        ckpt.load_weights(self.module, checkpoint, strict=True)

    def write_checkpoint(self, state: dict, config_yaml: str) -> None:
        ckpt.save_checkpoint(self.run_dir, self.step, self.module, state, config_yaml)

    def micro_context(self, batch: dict) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def start_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def train_mode(self) -> None:
        self.module.train()

    # -- set-up ----------------------------------------------------------------------------------
    def setup_loop(self, module: torch.nn.Module, loader, sampler, sources) -> None:
        """Optimizer, scheduler and scaler for `module`'s parameters; the run's step count; the
        latest checkpoint's state on resume; DDP; the run folder and its TensorBoard writer.
        `loader`, `sampler`, `sources`: what `build_mixed_loader` returned."""
        cfg = self.cfg
        self.module, self.loader, self.sampler, self.sources = module, loader, sampler, sources
        accum = cfg.optim.grad_accum
        epoch_batches = len(sampler)
        if epoch_batches < accum:
            raise UserError(f"an epoch has {epoch_batches} batches, fewer than optim.grad_accum={accum}")
        self.steps_per_epoch = epoch_batches // accum
        self.total_steps = cfg.train.max_steps or cfg.train.epochs * self.steps_per_epoch
        self.optimizer = build_optimizer(module.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, cfg.schedule)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        if self.resume:
            self._restore(ckpt.latest_checkpoint(self.run_dir))
        self.net = module
        if self.dist.enabled:
            self.net = DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not self.resume:
                save_config(cfg, self.run_dir / "config.yaml")
            self.writer = SummaryWriter(self.run_dir / "tb", purge_step=self.step or None)  # drops events an interrupted run logged later

    def _restore(self, path: Path) -> None:
        self.load_weights(path)
        state = ckpt.load_trainer_state(path)
        self.step, self.epoch = ckpt.restore_loop_state(state, self.optimizer, self.scheduler, self.scaler, self.sampler)
        if "rng" in state:
            ckpt.set_rng_state(state["rng"])
        if self.dist.is_main:
            print(f"resumed {path} at step {self.step}")

    def save(self, batches_consumed: int, best_metrics: dict[str, float] | None = None) -> None:
        """The step's checkpoint; then, with `best_metrics`, best.json naming it (in this order, so
        best.json never names a checkpoint that a kill left unwritten); then pruning."""
        if not self.dist.is_main:
            return
        state = ckpt.loop_state(self.step, self.optimizer, self.scheduler, self.scaler, self.sampler, batches_consumed)
        state["rng"] = ckpt.rng_state()
        self.write_checkpoint(state, to_yaml(self.cfg))
        if best_metrics is not None:
            self.best.update(self.step, best_metrics)
        ckpt.prune_checkpoints(self.run_dir, self.cfg.train.keep_last, self.best.step if self.best is not None else None)

    # -- steps -----------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.cfg.train.amp)

    def _forward_backward(self, batch: dict, sync: bool, index: int = 0) -> dict[str, torch.Tensor]:
        batch = _to_device(batch, self.device)
        no_sync = self.net.no_sync if isinstance(self.net, DistributedDataParallel) and not sync else contextlib.nullcontext
        with self.micro_context(batch), no_sync():
            terms = self.losses(batch, index)
            loss = sum(terms.values())
            self.scaler.scale(loss / self.cfg.optim.grad_accum).backward()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def _optimizer_step(self) -> torch.Tensor | None:
        grad_norm = None
        if self.cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return grad_norm

    def _log(self, window: dict[str, list], elapsed: float, data_time: float, samples: int) -> dict[str, float]:
        names = sorted(window)
        means = torch.stack([torch.stack(window[n]).float().mean() for n in names])
        means = mean_over_ranks(means.to(self.device), self.dist).cpu().tolist()
        scalars = dict(zip(names, means))
        if not np.isfinite(scalars["loss"]):
            raise FloatingPointError(f"the training loss is {scalars['loss']} at step {self.step}: lower optim.lr or check the data")
        self.timing = {"samples_per_s": samples * self.dist.world_size / elapsed, "data_share": data_time / elapsed}
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name if "/" in name else f"loss/{name}", value, self.step)
            self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
            for name, value in self.timing.items():
                self.writer.add_scalar(f"train/{name}", value, self.step)
            for name, dataset in self.sources.datasets.items():  # live sources: produced, taken and reused generations
                for key, value in (dataset.stats() if hasattr(dataset, "stats") else {}).items():
                    self.writer.add_scalar(f"data/{name}_{key}", value, self.step)
        return scalars

    def fit(self) -> dict[str, float]:
        """Train to `total_steps`; returns the last validation metrics (empty without validation)."""
        cfg = self.cfg
        accum = cfg.optim.grad_accum
        val_every = cfg.train.val_every or self.steps_per_epoch
        ckpt_every = cfg.train.ckpt_every or self.steps_per_epoch
        names = list(self.sampler.sources)
        self.train_mode()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.desc, disable=not self.progress, dynamic_ncols=True)
        window: dict[str, list] = defaultdict(list)
        metrics: dict[str, float] = {}
        micro, consumed, data_time, tick, samples = 0, 0, 0.0, time.perf_counter(), 0
        validated_at = self.step
        while self.step < self.total_steps:
            self.start_epoch(self.epoch)
            consumed, fetched = 0, time.perf_counter()
            for batch in self.loader:
                data_time += time.perf_counter() - fetched
                consumed += 1
                index = micro % accum
                micro += 1
                samples += len(batch["sample_id"])
                terms = self._forward_backward(batch, sync=index == accum - 1, index=index)
                for name, value in terms.items():
                    window[name].append(value)
                for name, share in realized_ratio(batch["source"], names).items():
                    window[f"data/ratio_{name}"].append(torch.tensor(share))
                if index != accum - 1:
                    fetched = time.perf_counter()
                    continue
                grad_norm = self._optimizer_step()
                if grad_norm is not None:
                    window["train/grad_norm"].append(grad_norm.detach())
                self.step += 1
                bar.update(1)
                last = self.step == self.total_steps
                if self.step % cfg.train.log_every == 0 or last:
                    elapsed = time.perf_counter() - tick
                    self.last_scalars = self._log(window, elapsed, data_time, samples)
                    bar.set_postfix(loss=f"{self.last_scalars['loss']:.4f}", data=f"{data_time / elapsed:.0%}")
                    window.clear()
                    data_time, tick, samples = 0.0, time.perf_counter(), 0
                due_val, due_ckpt = last or self.step % val_every == 0, last or self.step % ckpt_every == 0
                if due_val or due_ckpt:
                    broadcast_buffers(self.module, self.dist)
                improved = False
                if due_val:
                    metrics, validated_at = self.validate(), self.step
                    self.train_mode()
                    improved = self.best is not None and bool(metrics) and VAL_FAILED not in metrics and self.best.improves(metrics)
                if due_ckpt or improved:  # the best step always has a checkpoint
                    self.save(consumed, metrics if improved else None)
                if last:
                    break
                fetched = time.perf_counter()
            else:
                if consumed == 0 and self.sampler.step == 0:
                    raise RuntimeError(f"epoch {self.epoch} yielded no batches")
                self.epoch += 1
        bar.close()
        if validated_at != self.step:  # resumed a finished run
            metrics = self.validate()
        if self.writer is not None:
            self.writer.close()
        return metrics

    def close(self) -> None:
        """Stop live sources' generator processes and leave the process group."""
        sources = getattr(self, "sources", None)  # absent when __init__ stopped before the loader
        for dataset in sources.datasets.values() if sources is not None else ():
            if hasattr(dataset, "close"):
                dataset.close()
        shutdown_distributed()
