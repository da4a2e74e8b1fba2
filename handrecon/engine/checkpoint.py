"""Run folders and checkpoints.

    RUN_DIR/
      config.yaml                     the experiment as run
      tb/                             TensorBoard events
      images/step_XXXXXXXX.png        validation overlays
      checkpoints/
        step_XXXXXXXX/
          model.safetensors           weights (what --init and tools/eval.py --checkpoint read)
          trainer.pt                  optimizer, scheduler, scaler, RNG and sampler state, step
          config.yaml
        best.json                     {"step", "metric", "value", "checkpoint"}

A checkpoint folder is written under a temporary name and renamed when complete, so a crash
never leaves a half-written `step_*`; keep-last-k pruning never removes the best one.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ..errors import UserError, refused_pickle_reason
from ..io import atomic_write_bytes, atomic_write_json, give_open_modes, named_os_error

_STEP_DIR = re.compile(r"^step_(\d{8})$")
WEIGHTS, TRAINER_STATE, CONFIG = "model.safetensors", "trainer.pt", "config.yaml"


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    # a step folder appears by rename once complete, so its trainer state marks it as such
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"no checkpoint to resume from in {Path(run_dir) / 'checkpoints'} (expected step_XXXXXXXX folders)")
    return found[-1]


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, trainer_state: dict[str, Any], config_yaml: str) -> Path:
    """Write `step_XXXXXXXX/` atomically (temporary folder, then rename); replaces an existing one."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return write_checkpoint(run_dir, step, lambda tmp: atomic_write_bytes(tmp / WEIGHTS, safetensors_bytes(state)), trainer_state, config_yaml)


def write_checkpoint(
    run_dir: str | Path, step: int, write_weights: Callable[[Path], None], trainer_state: dict[str, Any], config_yaml: str
) -> Path:
    """The atomic part of every checkpoint: `write_weights(folder)` plus trainer state and config
    into a temporary folder, renamed to `step_XXXXXXXX/` when complete."""
    final = step_dir(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_weights(tmp)
        torch.save(trainer_state, tmp / TRAINER_STATE)
        (tmp / CONFIG).write_text(config_yaml)
    except SafetensorError as exc:  # safetensors reports a failed write (disk full) as its own error
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(tmp)) from exc
    except OSError as exc:
        raise named_os_error(exc, tmp) from exc
    give_open_modes(tmp)  # third-party writers (safetensors, diffusers) create 0o600 files
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def loop_state(step: int, optimizer, scheduler, scaler, sampler, batches_consumed: int) -> dict[str, Any]:
    """Everything besides the weights that a training loop needs to continue exactly."""
    return {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "sampler": sampler.state_dict(batches_consumed=batches_consumed),
    }


def restore_loop_state(state: dict[str, Any], optimizer, scheduler, scaler, sampler) -> tuple[int, int]:
    """Load a `loop_state` back; returns (step, epoch)."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    sampler.load_state_dict(state["sampler"])
    return state["step"], state["sampler"]["epoch"]


def _numpy_array_globals() -> list:
    """What unpickling numpy's RNG key array (uint32) needs: array reconstruction, nothing else."""
    multiarray = getattr(np, "_core", np.core).multiarray
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The loop state of a checkpoint: tensors, plain Python values and numpy's RNG key array.
    Loaded with `weights_only=True`, so a trainer.pt from elsewhere cannot run code."""
    file = ckpt / TRAINER_STATE
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = refused_pickle_reason(exc)
        raise UserError(f"{file}: refused to load: it holds objects other than tensors, numbers and arrays ({reason})") from exc
    except (RuntimeError, EOFError) as exc:  # torch's zip reader on a truncated or foreign file
        raise UserError(f"{file}: not a readable trainer state ({str(exc).splitlines()[0]}); it may be truncated") from exc


def checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint folder as given, or a run folder's best checkpoint (best.json), else (a run
    without validation) its latest. A best.json naming a missing checkpoint is an error, never a
    silent fall-back to another checkpoint."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    if (path / "checkpoints").is_dir():
        best = path / "checkpoints" / "best.json"
        if best.is_file():
            record = read_best(best)
            folder = path / record["checkpoint"]
            if not (folder / WEIGHTS).is_file():
                found = list_checkpoints(path)
                latest = f"; the latest is {found[-1]}" if found else ""
                raise UserError(
                    f"{best} names {record['checkpoint']} (step {record['step']}), which has no {WEIGHTS}: "
                    f"give a checkpoint folder instead of the run folder{latest}"
                )
            return folder
        return latest_checkpoint(path)
    raise UserError(f"no checkpoint at {path}: give a checkpoint folder (with {WEIGHTS}) or a run folder")


def read_best(path: Path) -> dict[str, Any]:
    """A best.json record, its fields checked."""
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"expected an object, got {type(record).__name__}")
        for key, kind in (("step", int), ("metric", str), ("value", (int, float)), ("checkpoint", str)):
            if not isinstance(record.get(key), kind):
                raise ValueError(f"field '{key}' is missing or of the wrong type ({record.get(key)!r})")
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a valid best-checkpoint record ({exc})") from exc
    return record


def weights_file(path: str | Path) -> Path:
    """The weights of a .safetensors file, a checkpoint folder or a run folder (`checkpoint_dir`)."""
    path = Path(path)
    return path if path.is_file() else checkpoint_dir(path) / WEIGHTS


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True) -> dict[str, list[str]]:
    """Load weights into `model`. Non-strict (fine-tuning): tensors whose name or shape does not
    match are skipped and reported in the returned {'missing', 'unexpected', 'mismatched'}.
    A released checkpoint of the original code (InterWild's `snapshot_N.pth`, DIR's checkpoint:
    any file not ending in .safetensors) is read by `handrecon.models.released_checkpoint.load_snapshot`, strictly."""
    file = weights_file(path)
    from ..models.released_checkpoint import is_snapshot_file, load_snapshot

    if is_snapshot_file(file):  # a released .pth: always strict
        report = load_snapshot(model, file)
        return {k: report[k] for k in ("missing", "unexpected", "mismatched")}
    try:
        state = load_file(str(file))
    except SafetensorError as exc:
        raise UserError(f"{file}: not a readable safetensors file ({exc}); it may be truncated: use another checkpoint") from exc
    own = model.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    report = {"missing": sorted(set(own) - set(state)), "unexpected": sorted(set(state) - set(own)), "mismatched": mismatched}
    if strict and any(report.values()):
        raise UserError(f"weights in {file} do not fit the model: " + "; ".join(f"{k}: {v[:5]}" for k, v in report.items() if v))
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in mismatched}, strict=False)
    return report


class BestTracker:
    """The best checkpoint by one metric, persisted in checkpoints/best.json.

    best.json is written only after the checkpoint it names is complete (`update` refuses a step
    without one), so a run killed between the two leaves the previous record. A record naming a
    missing checkpoint (a run of an older version killed in that window) is dropped when the run
    is opened with `repair=True`, with a warning; the next validation sets a new best.
    """

    def __init__(self, run_dir: str | Path, metric: str, mode: str, repair: bool = False):
        if mode not in ("min", "max"):
            raise ValueError(f"best mode must be 'min' or 'max', got {mode!r}")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "checkpoints" / "best.json"
        self.metric, self.mode = metric, mode
        self.record = read_best(self.path) if self.path.is_file() else None
        if self.record is not None and not (self.run_dir / self.record["checkpoint"] / WEIGHTS).is_file():
            if repair:
                print(
                    f"warning: {self.path} named {self.record['checkpoint']}, which does not exist (a run killed before "
                    "that checkpoint was written); dropped, the next validation sets the best"
                )
                self.path.unlink()
            self.record = None

    def better(self, value: float) -> bool:
        if not np.isfinite(value):
            return False
        if self.record is None:
            return True
        best = self.record["value"]
        return value < best if self.mode == "min" else value > best

    def improves(self, metrics: dict[str, float]) -> bool:
        """Would `metrics` be the new best?"""
        if self.metric not in metrics:
            raise UserError(f"train.best_metric '{self.metric}' is not among the validation metrics {sorted(metrics)}")
        return self.better(float(metrics[self.metric]))

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Record `step` as best if its metric improves; True when it did. The step's checkpoint
        must already be complete."""
        if not self.improves(metrics):
            return False
        folder = step_dir(".", step).as_posix()
        if not (self.run_dir / folder / WEIGHTS).is_file():
            raise RuntimeError(f"best.json would name {folder}, which is not written yet: save the checkpoint first")
        self.record = {"step": step, "metric": self.metric, "value": float(metrics[self.metric]), "checkpoint": folder}
        atomic_write_json(self.path, self.record, indent=1)
        return True

    @property
    def step(self) -> int | None:
        return None if self.record is None else int(self.record["step"])


def prune_checkpoints(run_dir: str | Path, keep_last: int, keep_step: int | None = None) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (and the one of `keep_step`)."""
    found = list_checkpoints(run_dir)
    doomed = [p for p in found[: max(len(found) - keep_last, 0)] if keep_step is None or p != step_dir(run_dir, keep_step)]
    for p in doomed:
        shutil.rmtree(p)
    return doomed
