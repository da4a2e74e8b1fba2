"""Generation quality: FID / KID on whole images and on hand crops (FID-H / KID-H), and label
consistency (does a regressor read the label back from the generated image).

* Features: the standard FID InceptionV3 (torch-fidelity's "inception-v3-compat", 2048-d pool
  features) with weights from a local file only, loaded as tensors only (torch-fidelity's own
  torch.load would unpickle anything; see `_tensors_only_torch_load`); its sha256 goes into the
  report's provenance. Features of an image set are cached as .npy
  under a key of the set's identity (ids, sizes, crop rule, weights), so scoring a new
  generated set against the same real set extracts only the new one.
* FID / KID: torchmetrics' implementations, fed the cached features through an identity
  "feature extractor".
* Hand crops: the square around the union of the sample's hand boxes, side = `margin` x the
  longer box side, clipped to the image, resized to 299 x 299; the same rule for real and
  generated samples (both carry boxes in the sample layout).
* Label consistency: a trained regressor of this toolkit run on each generated image; per sample
  the root-relative 3D joint error (mm) and the 2D joint error (px) against the labels the image
  was conditioned on.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from handrecon.errors import UserError, refused_pickle_reason
from handrecon.io import atomic_write_bytes

FID_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SIZE = 299


@contextlib.contextmanager
def _tensors_only_torch_load():
    """torch-fidelity reads the weights file with a full unpickle (weights_only off), which would
    run any code a pickle names; torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD turns that into a tensors-only
    load for the duration, so a tampered file is refused instead (the FID weights are a plain
    state dict and load unchanged)."""
    key, old = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


class Inception(nn.Module):
    """The FID InceptionV3 pool features (N, 2048) of uint8 (N, 3, H, W) images, weights from a local file."""

    def __init__(self, weights: str | Path):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = Path(weights)
        if not path.is_file():
            raise UserError(
                f"FID needs the standard FID InceptionV3 weights at {path} ({FID_WEIGHTS_NAME}, torch-fidelity's conversion of "
                "the TF 2015-12-05 graph); nothing is downloaded: put the file there or set inception_weights"
            )
        try:
            with _tensors_only_torch_load():
                self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path))
        except pickle.UnpicklingError as exc:
            raise UserError(f"{path}: refused to load: it holds objects other than tensors ({refused_pickle_reason(exc)})") from exc

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).reshape(images.shape[0], -1)


class _Given(nn.Module):
    """An identity 'feature extractor': torchmetrics' FID/KID then read precomputed features."""

    num_features = 2048

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between two feature sets (N, 2048)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Given())
    metric.update(torch.as_tensor(real, dtype=torch.float64), real=True)
    metric.update(torch.as_tensor(fake, dtype=torch.float64), real=False)
    return float(metric.compute())


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel): mean and std over subsets."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(fake))
    metric = KernelInceptionDistance(feature=_Given(), subsets=subsets, subset_size=size)
    metric.update(torch.as_tensor(real, dtype=torch.float64), real=True)
    metric.update(torch.as_tensor(fake, dtype=torch.float64), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # KID draws its subsets with torch's global generator
        mean, std = metric.compute()
    return float(mean), float(std)


def hand_crop(image: np.ndarray, boxes: np.ndarray, margin: float = 1.5, size: int = INCEPTION_SIZE) -> np.ndarray | None:
    """The hand crop of one sample (see the module docstring); None when no hand box is present."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if not len(boxes):
        return None
    x0, y0 = boxes[:, :2].min(0)
    x1, y1 = boxes[:, 2:].max(0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * margin / 2
    h, w = image.shape[:2]
    box = (max(0, round(cx - half)), max(0, round(cy - half)), min(w, round(cx + half) + 1), min(h, round(cy + half) + 1))
    return np.asarray(Image.fromarray(image).crop(box).resize((size, size), Image.BICUBIC))


class FeatureCache:
    """Inception features of image sets, extracted once per set and kept as .npy files."""

    def __init__(self, weights: str | Path, folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 32):
        self.weights, self.folder = Path(weights), Path(folder)
        self.device, self.batch_size = torch.device(device), batch_size
        self._model = None

    def key(self, ids: Sequence[str], rule: str) -> str:
        digest = hashlib.sha256(json.dumps([list(map(str, ids)), rule, self.weights.name, self.weights.stat().st_size]).encode())
        return digest.hexdigest()[:20]

    def features(self, images, ids: Sequence[str], rule: str) -> np.ndarray:
        """(N, 2048) features of `images` (an iterable of uint8 HWC arrays in `ids` order)."""
        if not self.weights.is_file():
            Inception(self.weights)  # raises the clear error
        path = self.folder / f"{self.key(ids, rule)}.npy"
        if path.is_file():
            return np.load(path)
        if self._model is None:
            self._model = Inception(self.weights).to(self.device).eval()
        out, batch = [], []
        with torch.no_grad():
            for image in images:
                batch.append(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1))  # a writable copy
                if len(batch) == self.batch_size:
                    out.append(self._model(torch.stack(batch).to(self.device)).double().cpu().numpy())
                    batch = []
            if batch:
                out.append(self._model(torch.stack(batch).to(self.device)).double().cpu().numpy())
        feats = np.concatenate(out) if out else np.zeros((0, 2048))
        buf = io.BytesIO()
        np.save(buf, feats)
        atomic_write_bytes(path, buf.getvalue())
        return feats


def label_consistency(model: torch.nn.Module, samples, hand_model, batch_size: int = 16, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Per sample: 'mpjpe_mm' (root-relative 3D joints, mean over valid hands) and 'joints2d_px'
    (2D joints) of `model`'s prediction on the generated image against the sample's labels."""
    from handrecon.camera import project
    from handrecon.engine.predict import predict_dataset
    from handrecon.losses import root_relative_joints

    pred = predict_dataset(model, samples, batch_size, device, progress=False)
    crops = [samples[i] for i in range(len(samples))]
    gt3d = torch.as_tensor(np.stack([s["joints3d"] for s in crops]), dtype=torch.float64)
    valid = torch.as_tensor(np.stack([s["mesh_valid"] for s in crops]))
    pred3d = hand_model.regress_joints(torch.as_tensor(pred["verts"], dtype=torch.float32)).double()
    err3d = (root_relative_joints(pred3d) - root_relative_joints(gt3d)).norm(dim=-1).reshape(-1, 2, 21).mean(-1) * 1000  # (N, 2)
    mpjpe = torch.where(valid, err3d, torch.nan).nanmean(1)
    focal = torch.as_tensor(np.stack([s["focal"] for s in crops]), dtype=torch.float64)
    princpt = torch.as_tensor(np.stack([s["princpt"] for s in crops]), dtype=torch.float64)
    pred2d = project(pred3d, focal, princpt, behind="clamp")  # a prediction behind the camera stays finite
    gt2d = torch.as_tensor(np.stack([s["joints2d"] for s in crops]), dtype=torch.float64)
    err2d = (pred2d - gt2d).norm(dim=-1).reshape(-1, 2, 21).mean(-1)
    return {"mpjpe_mm": mpjpe.numpy(), "joints2d_px": torch.where(valid, err2d, torch.nan).nanmean(1).numpy()}
