"""Run folders for the resume tests of the trainers."""
from __future__ import annotations

import shutil
from pathlib import Path

from handrecon.engine import checkpoint as ckpt


def stopped_after(run: Path, step: int, copy: Path) -> Path:
    """`copy`: a run folder holding only `run`'s config.yaml and its step-`step` checkpoint, as a
    run that stopped after that checkpoint leaves it."""
    (copy / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.yaml", copy / "config.yaml")
    shutil.copytree(ckpt.step_dir(run, step), ckpt.step_dir(copy, step))
    return copy
