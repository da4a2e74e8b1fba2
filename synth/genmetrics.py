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

The AttentionHand protocol (Park et al., ECCV 2024; docs/generation_protocol.md gives the sources
and what is not published) has its own image views and label scores:

* Canvas: AttentionHand's data loader and sampler resize every image and rendered mesh image to
  512 x 512 (aspect not kept); `canvas_image` does the same here (PIL bilinear).
* Hand crops (`attentionhand_box`, `attentionhand_crop`): the tight bounding box of the hand mesh
  silhouette in the 512 x 512 image, no margin, stretched to a square (their loader takes the
  bounding rectangle of the thresholded mesh image and resizes it to 512 x 512; here it goes
  straight to the Inception size). The silhouette's box is taken in closed form as the box of the
  projected label vertices of the hands with a mesh; a sample without any mesh falls back to its
  label boxes.
* MSE-2D / MSE-3D (`label_mse`): the paper names them but publishes no definition, so these are
  this toolkit's: the mean squared error (averaged over joints and coordinates) between the
  regressor's joints and the conditioning label's joints, 2D in pixels of the 512 x 512 canvas
  (px^2), 3D root-relative (wrist) in centimetres (cm^2).
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
#: AttentionHand's working resolution: images and mesh images are resized to 512 x 512.
AH_CANVAS = 512


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
                image = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # a writable copy
                if batch and image.shape != batch[0].shape:  # images of another size (whole COCO images): a batch of their own
                    out.append(self._model(torch.stack(batch).to(self.device)).double().cpu().numpy())
                    batch = []
                batch.append(image)
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


def _read_back(model: torch.nn.Module, samples, hand_model, batch_size: int, device) -> dict[str, torch.Tensor]:
    """The regressor's joints on every sample next to the sample's labels: 'pred3d', 'gt3d' (N, 42, 3)
    metres, camera frame; 'pred2d', 'gt2d' (N, 42, 2) pixels; 'valid' (N, 2) hands with a label
    mesh; 'size' (N, 2) image (H, W)."""
    from handrecon.camera import project
    from handrecon.engine.predict import predict_dataset

    pred = predict_dataset(model, samples, batch_size, device, progress=False)
    items = [samples[i] for i in range(len(samples))]
    stack = lambda key, dtype=torch.float64: torch.as_tensor(np.stack([np.asarray(s[key]) for s in items]), dtype=dtype)  # noqa: E731
    pred3d = hand_model.regress_joints(torch.as_tensor(pred["verts"], dtype=torch.float32)).double()
    focal, princpt = stack("focal"), stack("princpt")
    return {
        "pred3d": pred3d,
        "gt3d": stack("joints3d"),
        "pred2d": project(pred3d, focal, princpt, behind="clamp"),  # a prediction behind the camera stays finite
        "gt2d": stack("joints2d"),
        "valid": stack("mesh_valid", torch.bool),
        "size": stack("image_size"),
    }


def _per_sample(per_hand: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """(N, 2) per-hand values -> (N,) mean over the hands with a label mesh (NaN without one)."""
    return torch.where(valid, per_hand, torch.nan).nanmean(1).numpy()


def label_consistency(model: torch.nn.Module, samples, hand_model, batch_size: int = 16, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Per sample: 'mpjpe_mm' (root-relative 3D joints, mean over valid hands) and 'joints2d_px'
    (2D joints) of `model`'s prediction on the generated image against the sample's labels."""
    from handrecon.losses import root_relative_joints

    got = _read_back(model, samples, hand_model, batch_size, device)
    err3d = (root_relative_joints(got["pred3d"]) - root_relative_joints(got["gt3d"])).norm(dim=-1).reshape(-1, 2, 21).mean(-1) * 1000
    err2d = (got["pred2d"] - got["gt2d"]).norm(dim=-1).reshape(-1, 2, 21).mean(-1)
    return {"mpjpe_mm": _per_sample(err3d, got["valid"]), "joints2d_px": _per_sample(err2d, got["valid"])}


def label_mse(
    model: torch.nn.Module, samples, hand_model, canvas: int = AH_CANVAS, batch_size: int = 16, device: str | torch.device = "cpu"
) -> dict[str, np.ndarray]:
    """Per sample, the AttentionHand protocol's label scores as this toolkit defines them (the paper
    publishes none): 'mse_2d_px2', the squared 2D joint error in pixels of the image resized to
    `canvas` x `canvas` (x scaled by canvas / W, y by canvas / H), and 'mse_3d_cm2', the squared
    error of the wrist-relative 3D joints in centimetres; each averaged over the 21 joints and
    their coordinates per hand, then over the hands with a label mesh (NaN without one)."""
    from handrecon.losses import root_relative_joints

    got = _read_back(model, samples, hand_model, batch_size, device)
    scale = canvas / got["size"].flip(-1)  # (N, 2): canvas / W, canvas / H
    d2 = (got["pred2d"] - got["gt2d"]) * scale[:, None]
    d3 = (root_relative_joints(got["pred3d"]) - root_relative_joints(got["gt3d"])) * 100.0
    mse2d = d2.square().reshape(-1, 2, 21 * 2).mean(-1)
    mse3d = d3.square().reshape(-1, 2, 21 * 3).mean(-1)
    return {"mse_2d_px2": _per_sample(mse2d, got["valid"]), "mse_3d_cm2": _per_sample(mse3d, got["valid"])}


def to_canvas(points: np.ndarray, image_size, canvas: int = AH_CANVAS) -> np.ndarray:
    """(..., 2) pixel coordinates in an (H, W) image -> in that image resized to canvas x canvas
    (pixel centres at integers: x' = (x + 0.5) * canvas / W - 0.5, likewise y)."""
    h, w = (float(v) for v in image_size)
    return (np.asarray(points, np.float64) + 0.5) * np.array([canvas / w, canvas / h]) - 0.5


def canvas_image(image: np.ndarray, canvas: int = AH_CANVAS) -> np.ndarray:
    """The image resized to canvas x canvas (aspect not kept), as AttentionHand's loader does."""
    if image.shape[:2] == (canvas, canvas):
        return image
    return np.asarray(Image.fromarray(image).resize((canvas, canvas), Image.BILINEAR))


def attentionhand_box(sample: dict, canvas: int = AH_CANVAS) -> tuple[tuple[int, int, int, int], str] | None:
    """AttentionHand's hand crop box of a sample in its image resized to canvas x canvas, and what
    it came from: ((x0, y0, x1, y1), 'mesh' | 'boxes'), inclusive pixel columns and rows.

    'mesh': the pixels whose centres lie within the box of the projected label vertices of the
    hands with a mesh (in front of the camera), i.e. the bounding rectangle of the mesh
    silhouette; 'boxes': without any mesh, the same rule on the corners of the label hand boxes.
    Clipped to the canvas; None when nothing is left."""
    from handrecon.camera import MIN_DEPTH, project
    from handrecon.hand_model.constants import NUM_VERTS

    valid = np.asarray(sample["mesh_valid"], bool)
    if valid.any():
        verts = np.asarray(sample["verts"], np.float64).reshape(2, NUM_VERTS, 3)[valid].reshape(-1, 3)
        verts = verts[verts[:, 2] > MIN_DEPTH]
        points, source = project(verts, np.asarray(sample["focal"], np.float64), np.asarray(sample["princpt"], np.float64)), "mesh"
    else:
        boxes = np.asarray(sample["boxes"], np.float64).reshape(-1, 4)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        points, source = boxes.reshape(-1, 2), "boxes"
    if not len(points):
        return None
    points = to_canvas(points, sample["image_size"], canvas)
    (x0, y0), (x1, y1) = np.ceil(points.min(0)), np.floor(points.max(0))
    x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(canvas - 1, int(x1)), min(canvas - 1, int(y1))
    if x1 < x0 or y1 < y0:
        return None
    return (x0, y0, x1, y1), source


def attentionhand_crop(image: np.ndarray, box: tuple[int, int, int, int], canvas: int = AH_CANVAS, size: int = INCEPTION_SIZE) -> np.ndarray:
    """The crop at `box` (from `attentionhand_box`) of the image resized to canvas x canvas,
    stretched to size x size."""
    x0, y0, x1, y1 = box
    crop = canvas_image(image, canvas)[y0 : y1 + 1, x0 : x1 + 1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR))
