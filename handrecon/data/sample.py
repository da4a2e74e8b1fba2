"""The one sample layout every reader, source and model in the toolkit speaks.

A sample is a plain dict (so it collates with torch's default collate) with these fields.
Right hand first everywhere; index 0 = right, 1 = left. Camera frame: x right, y down, z
forward; pixel (row r, col c) has its centre at image coordinates (x=c, y=r).

| key            | type / shape              | meaning                                                      |
|----------------|---------------------------|--------------------------------------------------------------|
| sample_id      | str                       | unique within the dataset (IH2.6M-format data: the annotation id) |
| source         | str                       | dataset tag: 'ih26m', 'reih', 'hic', 'procedural', 'synth', ... |
| image          | uint8 (H, W, 3) RGB       | absent when the reader was built with load_images=False       |
| image_path     | str                       | absolute path of the image file                              |
| image_size     | int64 (2,)                | (H, W)                                                       |
| focal          | float32 (2,)              | (fx, fy) pixels                                              |
| princpt        | float32 (2,)              | (cx, cy) pixels                                              |
| hand_type      | str                       | 'right', 'left' or 'interacting'                             |
| mano_valid     | bool (2,)                 | MANO parameters present for (right, left)                    |
| mano_pose      | float32 (2, 48)           | axis-angle, global orient then 15 joints, relative to MANO's hand mean (flat_hand_mean=False), camera frame |
| mano_shape     | float32 (2, 10)           | betas                                                        |
| mano_transl    | float32 (2, 3)            | metres; with mano_pose and mano_shape, HandModel gives `verts` |
| mesh_valid     | bool (2,)                 | a ground-truth mesh exists for (right, left)                 |
| verts          | float32 (1556, 3)         | two-hand mesh, metres, camera frame; zeros where not valid   |
| joints3d       | float32 (42, 3)           | metres, camera frame, our 21-joint order per hand (constants.JOINT_NAMES) |
| joints2d       | float32 (42, 2)           | pixels                                                       |
| joints_valid   | bool (42,)                | per joint: the 3D label (joints3d) and its 2D label are valid |
| joints2d_valid | bool (42,)                | per joint: the 2D label is valid; True wherever joints_valid is, and also where only 2D was annotated (MSCOCO) |
| boxes          | float32 (2, 4)            | per-hand box x0, y0, x1, y1 in pixels; zeros where the hand is absent |
| mesh_pending   | bool (2,)                 | verts of (right, left) not filled yet: `labels_from_mano` computes them from the MANO parameters |
| joints_pending | bool (2,)                 | joints3d, joints2d, joint validity and box of the hand not filled yet either (MANO joints, projected) |

Absent values are zeros with the matching validity flag False, never NaN, so batches stay finite.
3D losses and metrics read `joints_valid`; 2D losses and the 2D label transforms read
`joints2d_valid`, so a sample with 2D keypoints only has joints_valid False and joints2d_valid True.

Pending labels. A source built with `labels="mano"` (the training loader) leaves what a MANO
forward gives to one batched step on the training device, `handrecon.data.labels.labels_from_mano`:
a hand with MANO parameters then has `mesh_pending` True and zero `verts` (mesh_valid still says
whether it has a mesh), and where its joints come from MANO too (shards) `joints_pending` True with
zero, invalid joints (3D and 2D) and the source's box until the step fills them. Annotated joints
(readers) never pend. With `labels="full"` (the default: evaluation, tools) both flags are False and
every label is filled per sample.
"""
from __future__ import annotations

import numpy as np

from ..hand_model.constants import NUM_VERTS

HAND_TYPES = ("right", "left", "interacting")

# key -> (dtype kind, shape); str fields have shape None
SAMPLE_FIELDS: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "sample_id": ("str", None),
    "source": ("str", None),
    "image_path": ("str", None),
    "image_size": ("i", (2,)),
    "focal": ("f", (2,)),
    "princpt": ("f", (2,)),
    "hand_type": ("str", None),
    "mano_valid": ("b", (2,)),
    "mano_pose": ("f", (2, 48)),
    "mano_shape": ("f", (2, 10)),
    "mano_transl": ("f", (2, 3)),
    "mesh_valid": ("b", (2,)),
    "verts": ("f", (2 * NUM_VERTS, 3)),
    "joints3d": ("f", (42, 3)),
    "joints2d": ("f", (42, 2)),
    "joints_valid": ("b", (42,)),
    "joints2d_valid": ("b", (42,)),
    "boxes": ("f", (2, 4)),
    "mesh_pending": ("b", (2,)),
    "joints_pending": ("b", (2,)),
}

#: What a source fills per sample: "full" every label; "mano" leaves the MANO-derived ones pending
#: (see the module doc) for `handrecon.data.labels.labels_from_mano`.
LABEL_MODES = ("full", "mano")


def check_label_mode(labels: str) -> str:
    """`labels` if it is one of LABEL_MODES, else a ValueError naming them."""
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}")
    return labels


def check_sample(sample: dict, where: str = "sample") -> None:
    """Raise ValueError naming the field if `sample` does not follow the layout above."""
    for key, (kind, shape) in SAMPLE_FIELDS.items():
        if key not in sample:
            raise ValueError(f"{where}: missing field '{key}'")
        value = sample[key]
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"{where}: field '{key}' must be a str, got {type(value).__name__}")
            continue
        arr = np.asarray(value)
        if arr.shape != shape or arr.dtype.kind != kind:
            raise ValueError(f"{where}: field '{key}' must be {kind}{shape}, got {arr.dtype}{arr.shape}")
        if kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{where}: field '{key}' has non-finite values")
    if np.any(np.asarray(sample["joints_valid"]) & ~np.asarray(sample["joints2d_valid"])):
        raise ValueError(f"{where}: field 'joints2d_valid' must be True wherever 'joints_valid' is")
    if sample["hand_type"] not in HAND_TYPES:
        raise ValueError(f"{where}: field 'hand_type' must be one of {HAND_TYPES}, got {sample['hand_type']!r}")
    if "image" in sample:
        img = np.asarray(sample["image"])
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or tuple(img.shape[:2]) != tuple(sample["image_size"]):
            raise ValueError(f"{where}: field 'image' must be uint8 (H, W, 3) matching image_size, got {img.dtype}{img.shape}")


def empty_sample(sample_id: str, source: str) -> dict:
    """A sample with every array field zero/False, to be filled in by a reader."""
    out: dict = {"sample_id": sample_id, "source": source, "image_path": "", "hand_type": "interacting"}
    dtypes = {"i": np.int64, "f": np.float32, "b": bool}
    for key, (kind, shape) in SAMPLE_FIELDS.items():
        if kind != "str":
            out[key] = np.zeros(shape, dtype=dtypes[kind])
    return out
