"""The regressors' trainer: the shared loop (`handrecon.engine.loop`) with a registered model's
losses, augmentation seeded by (seed, epoch, sample index, repeat) - a pure function, so a resumed
run augments as the uninterrupted one would have (the models draw no random numbers during
training) - validation with the metrics module and the best checkpoint by a chosen metric.

The training sources are built with labels="mano": the loader workers read, augment and collate
without running MANO, and each micro-batch gets its meshes (and shard joints and boxes) from
one batched forward on the training device (`handrecon.data.labels.labels_from_mano`).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
from tqdm import tqdm

from ..data.augment import Augmenter, crop_to_input, rng_for
from ..data.labels import labels_from_mano
from ..data.loader import build_mixed_loader
from ..errors import UserError
from ..evaluation import load_ground_truth, overlay_hands
from ..hand_model.mano import HandModel
from ..io import atomic_save_image
from ..models import build_model
from . import checkpoint as ckpt
from .config import Experiment
from .distributed import broadcast_from_main, gather_to_main
from .loop import VAL_FAILED, TrainLoop
from .predict import predict_dataset

__all__ = ["VAL_FAILED", "TrainTransform", "Trainer", "freeze_parameters"]


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


class Trainer(TrainLoop):
    """`Trainer(cfg).fit()`; `resume` continues a run folder exactly, `init` only loads weights."""

    def __init__(self, cfg: Experiment, resume: bool = False, init: str | None = None, progress: bool = True):
        super().__init__(cfg, resume, progress)
        self.hand_model = HandModel(cfg.mano_dir)
        self.model = build_model(cfg.model, self.hand_model).to(self.device)
        if init:
            report = ckpt.load_weights(self.model, init, strict=False)
            if self.dist.is_main and any(report.values()):
                print(f"--init {init}: skipped " + json.dumps({k: v[:8] for k, v in report.items() if v}))
        self.frozen = freeze_parameters(self.model, cfg.train.freeze)
        if self.dist.enabled and cfg.train.sync_bn and self.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # keeps the parameter objects

        augment = dataclasses.replace(cfg.augment, output_size=self.model.input_size)
        self.transform = TrainTransform(Augmenter(augment, self.hand_model, cfg.train.seed), cfg.train.seed)
        # the workers leave meshes (and shard joints) to one MANO forward per batch on the device: `losses`
        loader, sampler, self.sources = build_mixed_loader(
            cfg.data, self.hand_model, self.dist.rank, self.dist.world_size, self.transform, labels="mano"
        )
        self.best = ckpt.BestTracker(self.run_dir, cfg.train.best_metric, cfg.train.best_mode, repair=self.dist.is_main)
        self.setup_loop(self.model, loader, sampler, self.sources)
        self._setup_validation()
        if self.dist.is_main:
            total = sum(p.numel() for p in self.model.parameters())
            print(
                f"{cfg.model.name}: {total / 1e6:.2f} M parameters ({self.frozen / 1e6:.2f} M frozen) on {self.device} x "
                f"{self.dist.world_size}; {self.steps_per_epoch} steps an epoch, {self.total_steps} in all; run folder {self.run_dir}"
            )

    def start_epoch(self, epoch: int) -> None:
        super().start_epoch(epoch)
        self.transform.epoch = epoch  # before the epoch's iterator starts its workers

    def train_mode(self) -> None:
        self.model.train()
        for name, module in self.model.named_modules():  # frozen parts keep their normalisation statistics as loaded
            if name and any(name.startswith(p) for p in self.cfg.train.freeze):
                module.eval()

    def losses(self, batch: dict, index: int) -> dict[str, torch.Tensor]:
        batch = labels_from_mano(batch, self.model.hand_model)
        with self.autocast():
            out = self.net(batch)
        return self.model.losses(out, batch)

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
