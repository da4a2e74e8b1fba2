"""Evaluation runs: ground truth from a reader, predictions from a file, per-sample CSV and pictures.

The metric arithmetic lives in `handrecon.metrics`, the table and metrics.json every scoring tool
writes in `handrecon.report`; this module gathers arrays, matches predictions to samples by id,
and writes the hand-specific outputs: a per-sample CSV and PNG overlays of the best and worst
samples.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .hand_model.constants import NUM_VERTS
from .io import atomic_save_figure, atomic_write_text
from .metrics import check_finite


@dataclass
class GroundTruth:
    sample_ids: list[str]
    verts: np.ndarray  # (N, 1556, 3) m
    mesh_valid: np.ndarray  # (N, 2)
    joints3d: np.ndarray  # (N, 42, 3) m
    joints_valid: np.ndarray  # (N, 42)
    hand_type: np.ndarray  # (N,) str
    # the raw annotation the InterWild protocol reads, where the reader has one
    # (`annotation_labels`: annot_joints3d, annot_joints_valid, annot_sample_valid)
    annotation: dict[str, np.ndarray] = field(default_factory=dict)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "verts": self.verts,
            "mesh_valid": self.mesh_valid,
            "joints3d": self.joints3d,
            "joints_valid": self.joints_valid,
            "hand_type": self.hand_type,
            **self.annotation,
        }


def annotation_labels(reader) -> dict[str, np.ndarray]:
    """The reader's `annotation_labels()` (a `torch.utils.data.Subset` of one: its rows), or {}."""
    import torch

    indices = None
    if isinstance(reader, torch.utils.data.Subset):
        reader, indices = reader.dataset, np.asarray(reader.indices, dtype=np.int64)
    labels = getattr(reader, "annotation_labels", None)
    if labels is None:
        return {}
    return {k: (v if indices is None else v[indices]) for k, v in labels().items()}


def load_ground_truth(reader, hand_model=None, chunk: int = 256) -> GroundTruth:
    """Stack the evaluation fields of every sample of a reader (built with load_images=False).

    Samples of a source built with labels="mano" get their pending meshes (and joints) from
    `handrecon.data.labels.labels_from_mano`, `chunk` samples per MANO forward; that needs
    `hand_model`. Sources with labels="full" (the default) need none.
    """
    import torch

    from .data.labels import PENDING_KEYS, labels_from_mano

    fields = ("verts", "mesh_valid", "joints3d", "joints_valid")
    step = fields + ("mano_valid", "mano_pose", "mano_shape", "mano_transl", "joints2d", "boxes", "focal", "princpt", "image_size")
    rows: dict[str, list] = {k: [] for k in fields + ("hand_type", "sample_id")}
    batch: list[dict] = []

    def flush() -> None:
        collated = torch.utils.data.default_collate(batch)
        if any(collated[k].any() for k in PENDING_KEYS if k in collated):
            if hand_model is None:
                raise ValueError("load_ground_truth: the samples have pending MANO labels (labels='mano'); pass the hand_model")
            collated = labels_from_mano(collated, hand_model)
        for k in fields:
            rows[k].extend(collated[k].numpy())
        batch.clear()

    for i in range(len(reader)):
        sample = reader[i]
        rows["hand_type"].append(sample["hand_type"])
        rows["sample_id"].append(sample["sample_id"])
        batch.append({k: sample[k] for k in step + PENDING_KEYS if k in sample})
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    if not rows["sample_id"]:
        raise UserError("the dataset split has no samples to evaluate")
    return GroundTruth(
        sample_ids=[str(s) for s in rows["sample_id"]],
        verts=np.stack(rows["verts"]).astype(np.float64),
        mesh_valid=np.stack(rows["mesh_valid"]),
        joints3d=np.stack(rows["joints3d"]).astype(np.float64),
        joints_valid=np.stack(rows["joints_valid"]),
        hand_type=np.array(rows["hand_type"]),
        annotation=annotation_labels(reader),
    )


def _listing(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def load_predictions(path: str | Path, sample_ids: list[str], allow_extra: bool = False) -> dict[str, np.ndarray]:
    """Read a predictions .npz and order it like `sample_ids`.

    Fields: `sample_ids` (N,), `verts` (N, 1556, 3) metres, right hand first, camera frame of
    the annotation; optional `rel_trans` (N, 3) left-minus-right wrist offset in metres.
    Missing ids are an error listing a few of them; so are extra ids unless `allow_extra`
    (scoring a subset of the split the predictions cover). Dtypes are checked before anything
    else (pickled object arrays are refused), and NaN or infinite values are an error naming the
    field and the sample ids: they must never reach the metrics, where they would improve scores.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"predictions file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = npz.files
            data = {key: _prediction_array(npz, key, path) for key in found if key in _PREDICTION_DTYPES}
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: not a readable .npz ({exc})") from exc
    for key in ("sample_ids", "verts"):
        if key not in data:
            raise UserError(f"{path}: missing field '{key}' (found: {', '.join(found)})")
    if data["sample_ids"].ndim != 1:
        raise UserError(f"{path}: field 'sample_ids' must have shape (N,), got {data['sample_ids'].shape}")
    ids = [str(x) for x in data["sample_ids"].tolist()]
    verts = data["verts"]
    if verts.ndim != 3 or verts.shape[1:] != (2 * NUM_VERTS, 3) or verts.shape[0] != len(ids):
        raise UserError(f"{path}: field 'verts' must have shape ({len(ids)}, {2 * NUM_VERTS}, 3), got {verts.shape}")
    if "rel_trans" in data and data["rel_trans"].shape != (len(ids), 3):
        raise UserError(f"{path}: field 'rel_trans' must have shape ({len(ids)}, 3), got {data['rel_trans'].shape}")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise UserError(f"{path}: duplicate sample ids: {_listing(dup)}")
    check_finite(data, ids, where=str(path))
    reach = float(np.abs(verts).max(initial=0.0))
    if reach > MAX_METRES:
        raise UserError(f"{path}: field 'verts' reaches {reach:g}, more than {MAX_METRES:g} m from the camera: predictions are in metres, not millimetres")
    position = {sid: k for k, sid in enumerate(ids)}
    missing = [sid for sid in sample_ids if sid not in position]
    wanted = set(sample_ids)
    extra = [sid for sid in ids if sid not in wanted]
    if missing:
        raise UserError(f"{path}: no prediction for {len(missing)} sample(s) of the split: {_listing(missing)}")
    if extra and not allow_extra:
        raise UserError(f"{path}: predictions for {len(extra)} id(s) not in the split: {_listing(extra)}")
    order = np.array([position[sid] for sid in sample_ids])
    return {key: data[key][order].astype(np.float64) for key in ("verts", "rel_trans") if key in data}


#: No camera sees a hand this far away (metres): larger predictions are in the wrong unit.
MAX_METRES = 100.0

# field -> numpy dtype kinds it may have (U/S: strings, i/u: integers, f: floats)
_PREDICTION_DTYPES = {"sample_ids": "USiu", "verts": "f", "rel_trans": "f"}


def _prediction_array(npz, key: str, path: Path) -> np.ndarray:
    """One field of a predictions .npz, its dtype checked before anything uses it."""
    try:
        array = npz[key]
    except ValueError as exc:  # object arrays (pickled) are refused by allow_pickle=False
        raise UserError(f"{path}: field '{key}' is a pickled object array; store it as {_dtype_words(key)} ({exc})") from exc
    if array.dtype.kind not in _PREDICTION_DTYPES[key]:
        raise UserError(f"{path}: field '{key}' has dtype {array.dtype}; it must hold {_dtype_words(key)}")
    return array


def _dtype_words(key: str) -> str:
    return "strings or integers" if key == "sample_ids" else "floating-point numbers (metres)"


def write_per_sample_csv(path: Path, sample_ids: list[str], hand_type: np.ndarray, per_sample: dict[str, np.ndarray]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = list(per_sample)
    writer.writerow(["sample_id", "hand_type", *keys])
    for i, sid in enumerate(sample_ids):
        writer.writerow([sid, hand_type[i], *(_fmt(per_sample[k][i]) for k in keys)])
    return atomic_write_text(path, buf.getvalue())


def _fmt(value: Any) -> str:
    value = float(value)
    return "" if np.isnan(value) else f"{value:.4f}"


def overlay_hands(
    image: np.ndarray, verts: np.ndarray, mesh_valid: np.ndarray, focal, princpt, faces, colours, weight: float = 0.6
) -> np.ndarray:
    """A two-hand mesh (1556, 3) rendered over a float image (H, W, 3) in [0, 1].

    Hands without a valid mesh are not drawn; `colours` is one RGB or per-vertex (1556, 3);
    mesh pixels show `weight` of the rendering blended over the image.
    """
    import torch

    from .render import render_mesh

    drawn = torch.as_tensor(np.repeat(np.asarray(mesh_valid, bool), NUM_VERTS))
    colours = torch.as_tensor(np.broadcast_to(colours, verts.shape).copy(), dtype=torch.float32)
    out = render_mesh(
        torch.as_tensor(verts, dtype=torch.float32)[None],
        faces,
        torch.as_tensor(focal)[None],
        torch.as_tensor(princpt)[None],
        image.shape[:2],
        vertex_colors=colours,
        valid=drawn,
    )
    mask = out["mask"][0].numpy()[..., None]
    return np.where(mask, (1 - weight) * image + weight * out["image"][0].numpy(), image)


def save_overlays(
    path: Path, reader, indices: list[int], pred_verts: np.ndarray, gt_verts: np.ndarray, mesh_valid: np.ndarray, titles: list[str], faces
) -> Path:
    """One PNG: per sample, the image with the ground-truth mesh (green) and the prediction (red).

    Only hands with a ground-truth mesh are drawn (a prediction for an absent hand is not scored).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(indices)
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 5.0), squeeze=False)
    for col, (i, title) in enumerate(zip(indices, titles)):
        sample = reader[i]
        image = sample["image"].astype(np.float32) / 255
        for row, (verts, colour) in enumerate(((gt_verts[i], (0.2, 0.9, 0.3)), (pred_verts[i], (0.95, 0.25, 0.2)))):
            blend = overlay_hands(image, verts, mesh_valid[i], sample["focal"], sample["princpt"], faces, colour)
            ax = axes[row, col]
            ax.imshow(blend)
            ax.set_axis_off()
            ax.set_title(("gt " if row == 0 else "pred ") + title, fontsize=7)
    fig.tight_layout()
    return atomic_save_figure(path, fig, dpi=100)
