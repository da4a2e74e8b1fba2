"""Hand detectors for the hand-confidence score, behind one interface: `scores(images) -> (N,)`.

`mediapipe`: MediaPipe Hands, which needs numpy < 2 and protobuf < 5, so it runs in its own
Python environment through a worker process (`mediapipe_worker.py`). Set it up once:

    python3 -m venv .venv-mediapipe && .venv-mediapipe/bin/pip install "mediapipe==0.10.21" "numpy<2"

and give `detector.python=.venv-mediapipe/bin/python`.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from handrecon.config import check_fields
from handrecon.errors import UserError

WORKER = Path(__file__).with_name("mediapipe_worker.py")


@dataclass
class DetectorConfig:
    name: str = "none"  # none | mediapipe
    python: str = ""  # mediapipe: the interpreter of the environment MediaPipe is installed in
    min_confidence: float = 0.1  # detections below this do not count; in [0, 1]

    def __post_init__(self) -> None:
        check_fields(self, "in [0, 1]", "min_confidence")


class HandDetector(Protocol):
    def scores(self, images: list[np.ndarray]) -> np.ndarray:
        """(N,) the highest hand confidence in each uint8 RGB image, 0 where no hand is found."""


class MediaPipeDetector:
    def __init__(self, cfg: DetectorConfig):
        if not cfg.python or not Path(cfg.python).is_file():
            raise UserError(
                f"detector.python={cfg.python!r} is not an interpreter; set up MediaPipe once with: python3 -m venv .venv-mediapipe && "
                '.venv-mediapipe/bin/pip install "mediapipe==0.10.21" "numpy<2", then set detector.python=.venv-mediapipe/bin/python'
            )
        self.cfg = cfg

    def scores(self, images: list[np.ndarray]) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "images.npz", Path(tmp) / "scores.json"
            np.savez(src, *[np.asarray(im, np.uint8) for im in images])
            done = subprocess.run([self.cfg.python, str(WORKER), str(src), str(dst), str(self.cfg.min_confidence)], capture_output=True, text=True)
            if done.returncode != 0:
                raise UserError(f"the MediaPipe worker ({self.cfg.python}) failed: {done.stderr.strip()[-500:]}")
            return np.asarray(json.loads(dst.read_text()), dtype=np.float64)


DETECTORS: dict[str, Callable[[DetectorConfig], HandDetector] | None] = {"none": None, "mediapipe": MediaPipeDetector}


def build_detector(cfg: DetectorConfig) -> HandDetector | None:
    if cfg.name not in DETECTORS:
        raise UserError(f"detector.name must be one of {sorted(DETECTORS)}, got {cfg.name!r}")
    factory = DETECTORS[cfg.name]
    return None if factory is None else factory(cfg)
