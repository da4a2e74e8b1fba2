"""Run a regressor over a dataset split: the predictions file `tools/eval.py` reads.

Each sample is cropped to the model input by `crop_to_input` with the run's framing: around
its ground-truth hand boxes ('hands', the DIR / IntagHand two-hand crop) or the whole image
('image', as InterWild frames InterHand2.6M: its body box is the full image and the model
finds the hands). The crop only changes the intrinsics, so predictions are in the dataset's
own camera frame and compare directly with its labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.augment import crop_to_input
from ..data.loader import MappedDataset
from ..hand_model.constants import NUM_VERTS
from ..io import atomic_write_bytes
from .amp import autocast


def _crop(size: tuple[int, int], framing: str):
    return lambda sample, index, repeat: crop_to_input(sample, size, framing=framing)


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    amp: str = "off",
    indices: list[int] | None = None,
    num_workers: int = 0,
    progress: bool = True,
    framing: str = "hands",
) -> dict[str, np.ndarray]:
    """{'sample_ids' (N,), 'verts' (N, 1556, 3), 'rel_trans' (N, 3)} for the samples of `dataset`
    (all, or `indices`), in that order, each cropped by `framing` ('hands' or 'image'). The
    model is put in eval mode and left there."""
    device = torch.device(device)
    model.eval()
    data = MappedDataset(dataset, _crop(model.input_size, framing))
    if indices is not None:
        data = torch.utils.data.Subset(data, indices)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    out: dict[str, list] = {"sample_ids": [], "verts": [], "rel_trans": []}
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with autocast(device, amp):
            pred = model(batch)
        out["sample_ids"].extend(str(s) for s in batch["sample_id"])
        out["verts"].append(pred["verts"].float().cpu().numpy())
        out["rel_trans"].append(pred["rel_trans"].float().cpu().numpy())
    empty = {"verts": np.zeros((0, 2 * NUM_VERTS, 3), np.float32), "rel_trans": np.zeros((0, 3), np.float32)}
    return {
        "sample_ids": np.array(out["sample_ids"], dtype=str),
        **{key: np.concatenate(out[key]).astype(np.float32) if out[key] else zeros for key, zeros in empty.items()},
    }


def save_predictions(path: str | Path, pred: dict[str, np.ndarray]) -> Path:
    """The npz layout of `tools/eval.py --predictions`, written atomically."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **pred)
    return atomic_write_bytes(path, buf.getvalue())
