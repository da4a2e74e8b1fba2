"""One training loop for every registered regressor.

Steps are optimizer steps; each one consumes `optim.grad_accum` micro-batches of
`data.batch_size` samples per rank from the mixed sampler. Everything a step depends on is a
function of the saved state: weights, optimizer, scheduler, AMP scaler, RNG states, the sampler
position (in micro-batches the loop consumed) and the augmentation, whose randomness is a pure
function of (seed, epoch, sample index, repeat) - so a run resumed from a checkpoint continues exactly as
the uninterrupted run would have (the models draw no random numbers during training; RNG states
are those of rank 0).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import save_config, to_yaml
from ..data.augment import Augmenter, crop_to_input, rng_for
from ..data.loader import build_mixed_loader
from ..data.mixing import realized_ratio
from ..errors import UserError
from ..evaluation import load_ground_truth, overlay_hands
from ..hand_model.mano import HandModel
from ..io import atomic_save_image, ensure_writable_dir
from ..models import build_model
from . import checkpoint as ckpt
from .amp import autocast
from .config import Experiment
from .distributed import (
    DistInfo,
    broadcast_buffers,
    broadcast_from_main,
    gather_to_main,
    init_distributed,
    mean_over_ranks,
    pick_device,
    shutdown_distributed,
)
from .optim import build_optimizer, build_scheduler
from .predict import predict_dataset

#: The one validation key of a failed validation (non-finite outputs): how many samples had them.
VAL_FAILED = "failed_nonfinite_samples"


class TrainTransform:
    """Per-draw augmentation seeded by (seed, epoch, global index, repeat); picklable for
    workers. Set `epoch` before creating each epoch's iterator (workers copy it when they start)."""

    def __init__(self, augmenter: Augmenter, seed: int):
        self.augmenter, self.seed, self.epoch = augmenter, seed, 0

    def __call__(self, sample: dict, index: int, repeat: int = 0) -> dict:
        return self.augmenter(sample, rng_for(self.seed, self.epoch, index, repeat))


def freeze_parameters(model: torch.nn.Module, prefixes: list[str]) -> int:
    """Fix every parameter whose name starts with one of `prefixes`; returns how many."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise UserError(f"train.freeze: no parameter starts with '{prefix}'; top-level modules are {tops}")
    count = 0
    for name, param in model.named_parameters():
        if any(name.startswith(p) for p in prefixes):
            param.requires_grad_(False)
            count += param.numel()
    return count


def start_run(run_dir: Path, device: str, amp: str, mano_dir: str, resume: bool) -> tuple[torch.device, DistInfo]:
    """The checks and process-group set-up every training run starts with."""
    device_ = pick_device(device)
    dist = init_distributed(device_)
    if amp == "fp16" and device_.type != "cuda":
        raise UserError(f"train.amp=fp16 needs a CUDA device (device is {device_}); use bf16 or off")
    if not resume and ckpt.list_checkpoints(run_dir):
        raise UserError(f"{run_dir} already holds checkpoints: pass --resume {run_dir} to continue it, or set another out")
    if not mano_dir:
        raise UserError("mano_dir is not set: give the folder with MANO_RIGHT.pkl and MANO_LEFT.pkl")
    if dist.is_main:
        ensure_writable_dir(run_dir, "out")  # before the model and data are built
    return device_, dist


def open_run(run_dir: Path, cfg, resume: bool, step: int, dist: DistInfo):
    """On rank 0: the run folder, its config.yaml (fresh runs) and a TensorBoard writer that drops
    events logged after `step` by an interrupted run; None on the other ranks."""
    if not dist.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        save_config(cfg, run_dir / "config.yaml")
    return SummaryWriter(run_dir / "tb", purge_step=step or None)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Trainer:
    """`Trainer(cfg).fit()`; `resume` continues a run folder exactly, `init` only loads weights."""

    def __init__(self, cfg: Experiment, resume: bool = False, init: str | None = None, progress: bool = True):
        self.cfg = cfg
        self.run_dir = Path(cfg.out)
        self.device, self.dist = start_run(self.run_dir, cfg.train.device, cfg.train.amp, cfg.mano_dir, resume)
        self.progress = progress and self.dist.is_main

        torch.manual_seed(cfg.train.seed)
        self.hand_model = HandModel(cfg.mano_dir)
        self.model = build_model(cfg.model, self.hand_model).to(self.device)
        if init:
            report = ckpt.load_weights(self.model, init, strict=False)
            if self.dist.is_main and any(report.values()):
                print(f"--init {init}: skipped " + json.dumps({k: v[:8] for k, v in report.items() if v}))
        self.frozen = freeze_parameters(self.model, cfg.train.freeze)

        augment = dataclasses.replace(cfg.augment, output_size=self.model.input_size)
        self.transform = TrainTransform(Augmenter(augment, self.hand_model, cfg.train.seed), cfg.train.seed)
        self.loader, self.sampler, self.sources = build_mixed_loader(
            cfg.data, self.hand_model, self.dist.rank, self.dist.world_size, self.transform
        )
        accum = cfg.optim.grad_accum
        epoch_batches = len(self.sampler)
        if epoch_batches < accum:
            raise UserError(f"an epoch has {epoch_batches} batches, fewer than optim.grad_accum={accum}")
        self.steps_per_epoch = epoch_batches // accum
        self.total_steps = cfg.train.max_steps or cfg.train.epochs * self.steps_per_epoch

        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, cfg.schedule)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        self.step, self.epoch = 0, 0
        self.timing: dict[str, float] = {}  # throughput of the last logging window
        self.best = ckpt.BestTracker(self.run_dir, cfg.train.best_metric, cfg.train.best_mode, repair=self.dist.is_main)
        if resume:
            self._restore(ckpt.latest_checkpoint(self.run_dir))

        self.net = self.model
        if self.dist.enabled:
            if cfg.train.sync_bn and self.device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.writer = open_run(self.run_dir, cfg, resume, self.step, self.dist)
        self._setup_validation()
        if self.dist.is_main:
            total = sum(p.numel() for p in self.model.parameters())
            print(
                f"{cfg.model.name}: {total / 1e6:.2f} M parameters ({self.frozen / 1e6:.2f} M frozen) on {self.device} x "
                f"{self.dist.world_size}; {self.steps_per_epoch} steps an epoch, {self.total_steps} in all; run folder {self.run_dir}"
            )

    # -- state ---------------------------------------------------------------------------------
    def _restore(self, path: Path) -> None:
        ckpt.load_weights(self.model, path, strict=True)
        state = ckpt.load_trainer_state(path)
        self.step, self.epoch = ckpt.restore_loop_state(state, self.optimizer, self.scheduler, self.scaler, self.sampler)
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
        ckpt.save_checkpoint(self.run_dir, self.step, self.model, state, to_yaml(self.cfg))
        if best_metrics is not None:
            self.best.update(self.step, best_metrics)
        ckpt.prune_checkpoints(self.run_dir, self.cfg.train.keep_last, self.best.step)

    # -- validation ----------------------------------------------------------------------------
    def _setup_validation(self) -> None:
        val = self.cfg.val
        self.val_reader = None
        if val.dataset is None:
            return
        from ..data.readers import create_reader, dataset_spec

        spec = dataset_spec(val.dataset)
        reader_name, self.val_rules = spec.reader, spec.rules
        self.val_reader = create_reader(reader_name, val.root, val.split, self.hand_model)
        labels = create_reader(reader_name, val.root, val.split, self.hand_model, load_images=False)
        n = len(labels) if val.max_samples is None else min(val.max_samples, len(labels))
        self.val_indices = list(range(n))
        if self.dist.is_main:  # the ranks predict, rank 0 scores
            self.val_gt = load_ground_truth(torch.utils.data.Subset(labels, self.val_indices))

    def validate(self) -> dict[str, float]:
        """Metrics of the validation subset, the same on every rank: each rank predicts every
        world_size-th sample, rank 0 puts the predictions back in order and scores them. Outputs
        with NaN or infinite values fail the validation: {VAL_FAILED: number of such samples}."""
        if self.val_reader is None:
            return {}
        from .. import metrics

        world, rank = self.dist.world_size, self.dist.rank
        mine = predict_dataset(
            self.model,
            self.val_reader,
            self.cfg.val.batch_size,
            self.device,
            self.cfg.train.amp,
            self.val_indices[rank::world],
            progress=False,
            framing=self.cfg.augment.framing,
        )
        self.model.train()
        self._keep_frozen_eval()
        parts = gather_to_main(mine, self.dist)
        summary: dict[str, float] = {}
        if parts is not None:
            order = np.concatenate([np.arange(r, len(self.val_indices), world) for r in range(world)])
            pred = {}
            for key in mine:
                joined = np.concatenate([part[key] for part in parts])  # strings widen to the longest
                pred[key] = np.empty_like(joined)
                pred[key][order] = joined
            bad = metrics.nonfinite_samples(pred)
            if bad:  # a failed validation: logged, never scored (NaNs would drop out and look better)
                rows = np.unique(np.concatenate(list(bad.values())))
                summary = {VAL_FAILED: float(len(rows))}
                ids = ", ".join(str(i) for i in pred["sample_ids"][rows[:5]])
                tqdm.write(f"validation at step {self.step} failed: NaN or infinite outputs ({', '.join(bad)}) for {len(rows)} sample(s): {ids}")
            else:
                summary = metrics.evaluate(
                    pred, self.val_gt.as_dict(), self.cfg.val.protocol, dataset=self.val_rules, hand_model=self.hand_model
                ).summary
            for key, value in summary.items():
                self.writer.add_scalar(f"val/{key}", value, self.step)
            if self.cfg.val.images and not bad:
                self._log_images(pred["verts"])
        return broadcast_from_main(summary, self.dist)

    def _log_images(self, pred_verts: np.ndarray) -> None:
        """Model inputs with the predicted (top) and ground-truth (bottom) meshes."""
        faces = self.hand_model.faces_two_hand
        tiles = []
        for i in self.val_indices[: self.cfg.val.images]:
            sample = crop_to_input(self.val_reader[i], self.model.input_size, framing=self.cfg.augment.framing)
            image = sample["image"].astype(np.float32) / 255
            pose = (sample["focal"], sample["princpt"], faces)
            valid = sample["mesh_valid"]
            top = overlay_hands(image, pred_verts[i], valid, *pose, colours=(0.95, 0.3, 0.2))
            bottom = overlay_hands(image, sample["verts"], valid, *pose, colours=(0.2, 0.85, 0.3))
            tiles.append(np.concatenate([top, bottom], 0))
        grid = np.concatenate(tiles, 1)
        self.writer.add_image("val/overlays", grid, self.step, dataformats="HWC")
        atomic_save_image(self.run_dir / "images" / f"step_{self.step:08d}.png", (grid * 255 + 0.5).astype(np.uint8))

    # -- training ------------------------------------------------------------------------------
    def _keep_frozen_eval(self) -> None:
        # frozen parts keep their normalisation statistics as loaded
        for name, module in self.model.named_modules():
            if name and any(name.startswith(p) for p in self.cfg.train.freeze):
                module.eval()

    def _forward_backward(self, batch: dict, sync: bool) -> dict[str, torch.Tensor]:
        batch = _to_device(batch, self.device)
        no_sync = self.net.no_sync if isinstance(self.net, DistributedDataParallel) and not sync else contextlib.nullcontext
        with no_sync():
            with autocast(self.device, self.cfg.train.amp):
                out = self.net(batch)
            terms = self.model.losses(out, batch)
            loss = sum(terms.values())
            self.scaler.scale(loss / self.cfg.optim.grad_accum).backward()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def _optimizer_step(self) -> torch.Tensor | None:
        grad_norm = None
        if self.cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
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
        return scalars

    def fit(self) -> dict[str, float]:
        """Train to `total_steps`; returns the last validation metrics (empty without validation)."""
        cfg = self.cfg
        accum = cfg.optim.grad_accum
        eval_every = cfg.train.eval_every or self.steps_per_epoch
        ckpt_every = cfg.train.ckpt_every or self.steps_per_epoch
        names = list(self.sampler.sources)
        self.model.train()
        self._keep_frozen_eval()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        window: dict[str, list] = defaultdict(list)
        metrics: dict[str, float] = {}
        micro, consumed, data_time, tick, samples = 0, 0, 0.0, time.perf_counter(), 0
        validated_at = self.step
        while self.step < self.total_steps:
            self.sampler.set_epoch(self.epoch)
            self.transform.epoch = self.epoch
            consumed, fetched = 0, time.perf_counter()
            for batch in self.loader:
                data_time += time.perf_counter() - fetched
                consumed += 1
                micro += 1
                samples += len(batch["sample_id"])
                terms = self._forward_backward(batch, sync=micro % accum == 0)
                for name, value in terms.items():
                    window[name].append(value)
                for name, share in realized_ratio(batch["source"], names).items():
                    window[f"data/ratio_{name}"].append(torch.tensor(share))
                if micro % accum:
                    fetched = time.perf_counter()
                    continue
                grad_norm = self._optimizer_step()
                if grad_norm is not None:
                    window["train/grad_norm"].append(grad_norm.detach())
                self.step += 1
                bar.update(1)
                if self.step % cfg.train.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - tick
                    scalars = self._log(window, elapsed, data_time, samples)
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}", data=f"{data_time / elapsed:.0%}")
                    window.clear()
                    data_time, tick, samples = 0.0, time.perf_counter(), 0
                last = self.step == self.total_steps
                due_eval, due_ckpt = last or self.step % eval_every == 0, last or self.step % ckpt_every == 0
                if due_eval or due_ckpt:
                    broadcast_buffers(self.model, self.dist)
                improved = False
                if due_eval:
                    metrics, validated_at = self.validate(), self.step
                    improved = bool(metrics) and VAL_FAILED not in metrics and self.best.improves(metrics)
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
        shutdown_distributed()
