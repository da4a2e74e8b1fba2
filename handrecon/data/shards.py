"""Synthetic-sample shards: webdataset tar files plus an index for random access.

A shard is a plain webdataset tar (readable by `webdataset.WebDataset` in streaming order);
each sample has three members under one key:

| member          | content                                                              |
|-----------------|----------------------------------------------------------------------|
| `<key>.jpg`     | the generated image                                                  |
| `<key>.cond.png`| the condition image it was generated from (rendered hand mesh)       |
| `<key>.json`    | labels: the sample layout's camera and MANO fields (camera frame),   |
|                 | boxes, hand_type, plus prompt, seed and generator hash               |

Meshes and joints are not stored: `ShardSource` recomputes them from the MANO parameters with
the hand model, exactly as the generator's condition was rendered from them, and projects the
joints with the stored intrinsics. So every joint of a hand with MANO labels is valid and its 2D
position is where the generator drew it, even where the source annotation had lost the joint.
For training (`labels="mano"`) the source reads every label record once when it is built and
leaves those meshes, joints and boxes to one batched MANO forward per batch
(`handrecon.data.labels.labels_from_mano`), which applies the same rule to the batch.

`index.json` beside the shards lists, per sample, the shard file and the byte offset and size
of each member, so `ShardSource[i]` seeks straight to a sample (no scan, any order), which is
what a `MixedBatchSampler` needs. Shards are written to a temporary name and renamed when
complete; the index is rebuilt from the finished shards only. A damaged shard (not a readable
tar, truncated, undecodable labels or image) is a one-line UserError naming its file, whether
found when indexing or when reading.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..camera import project
from ..errors import UserError
from ..hand_model.constants import NUM_JOINTS, NUM_VERTS
from ..hand_model.mano import SIDES, HandModel
from ..io import atomic_write_bytes, atomic_write_json
from .sample import check_label_mode, empty_sample

INDEX = "index.json"
MEMBERS = ("jpg", "cond.png", "json")
# label JSON fields copied into the sample (all camera frame / pixels)
LABEL_FIELDS = ("focal", "princpt", "image_size", "mano_valid", "mano_pose", "mano_shape", "mano_transl", "boxes")


def encode_image(image: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def labels_from_sample(sample: dict, **extra) -> dict:
    """The JSON-able label record of a sample (camera frame), plus extra fields (prompt, seed...)."""
    out = {k: np.asarray(sample[k]).tolist() for k in LABEL_FIELDS}
    out.update(sample_id=str(sample["sample_id"]), hand_type=sample["hand_type"])
    out.update(extra)
    return out


def write_shard(path: str | os.PathLike, records: Iterable[tuple[str, bytes, bytes, dict]]) -> Path:
    """Write (key, jpg bytes, condition png bytes, labels) records as one tar, atomically."""
    import webdataset as wds

    buf = io.BytesIO()  # a shard is a few hundred images: built in memory, written atomically
    writer = wds.TarWriter(buf, encoder=False, mtime=0.0)  # fixed mtime: identical bytes on rerun
    for key, jpg, cond, labels in records:
        writer.write({"__key__": key, "jpg": jpg, "cond.png": cond, "json": json.dumps(labels).encode()})
    writer.close()
    return atomic_write_bytes(path, buf.getvalue())


def scan_shard(path: Path) -> list[dict]:
    """Index entries of one shard: key and (offset, size) of each member, in file order. A
    damaged tar (unreadable, truncated, a sample without all its members) is a UserError."""
    entries: dict[str, dict] = {}
    size = path.stat().st_size
    try:
        with tarfile.open(path, "r:") as tar:  # plain tar: a damaged file gives one reason, not one per compression
            for member in tar:
                end = member.offset_data + member.size
                if end > size:
                    raise UserError(f"{path}: truncated: member {member.name} ends at byte {end}, the file has {size}")
                key, _, ext = member.name.partition(".")
                entry = entries.setdefault(key, {"key": key, "shard": path.name})
                entry[ext] = [member.offset_data, member.size]
    except tarfile.TarError as exc:
        raise UserError(f"{path}: not a readable tar ({exc})") from None
    for key, entry in entries.items():
        missing = [m for m in MEMBERS if m not in entry]
        if missing:
            raise UserError(f"{path}: sample '{key}' lacks member(s) {missing}")
    return list(entries.values())


def build_index(root: str | os.PathLike, pattern: str = "shard-*.tar") -> Path:
    """Scan every finished shard under `root` (sorted by name) and write index.json."""
    root = Path(root)
    samples = [entry for shard in sorted(root.glob(pattern)) for entry in scan_shard(shard)]
    keys = [s["key"] for s in samples]
    if len(set(keys)) != len(keys):
        raise UserError(f"{root}: duplicate sample keys across shards")
    return atomic_write_json(root / INDEX, {"version": 1, "samples": samples})


class ShardSource(torch.utils.data.Dataset):
    """Random-access dataset over indexed shards; samples follow the sample layout.

    Args:
        root: folder with shard-*.tar and index.json.
        hand_model: recomputes verts / joints3d from the stored MANO parameters.
        load_images: False skips decoding the image (labels only).
        source: the `source` tag of every sample.
        labels: "full" (default): every item reads its label record and runs MANO for its
            meshes and joints. "mano" (the training loader): every label record is read and
            checked once, at construction, into arrays, and an item leaves the meshes, joints and
            boxes of its MANO hands pending (`mesh_pending`, `joints_pending`) for the batched
            `handrecon.data.labels.labels_from_mano`; until then it keeps the stored boxes.
    """

    def __init__(self, root: str | os.PathLike, hand_model: HandModel, load_images: bool = True, source: str = "synth", labels: str = "full"):
        self.root = Path(root)
        index = self.root / INDEX
        if not index.is_file():
            raise UserError(f"no shard index at {index}: the cache job writes it when it finishes (or call build_index)")
        self.samples = json.loads(index.read_text())["samples"]
        self.hand_model = hand_model
        self.load_images = load_images
        self.source = source
        self.label_mode = check_label_mode(labels)
        self._table = self._label_table() if labels == "mano" else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> list[str]:
        return [s["key"] for s in self.samples]

    def read_member(self, i: int, member: str) -> bytes:
        entry = self.samples[i]
        offset, size = entry[member]
        with open(self.root / entry["shard"], "rb") as fh:  # opened per read: safe in forked workers
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise UserError(f"{self.root / entry['shard']}: truncated at sample '{entry['key']}' ({member})")
        return data

    def _parse_labels(self, i: int, data: bytes) -> dict:
        try:
            return json.loads(data)
        except ValueError as exc:
            entry = self.samples[i]
            raise UserError(f"{self.root / entry['shard']}: damaged labels of sample '{entry['key']}' ({exc})") from None

    def labels(self, i: int) -> dict:
        return self._parse_labels(i, self.read_member(i, "json"))

    def _label_table(self) -> dict:
        """Every sample's label fields as (N, ...) arrays (strings as lists): each shard is opened
        once and its label members read in file order."""
        n = len(self.samples)
        probe = empty_sample("", self.source)
        table: dict = {key: np.zeros((n, *probe[key].shape), probe[key].dtype) for key in LABEL_FIELDS}
        table["sample_id"], table["hand_type"] = [""] * n, [""] * n
        by_shard: dict[str, list[int]] = {}
        for i, entry in enumerate(self.samples):
            by_shard.setdefault(entry["shard"], []).append(i)
        for shard, rows in by_shard.items():
            with open(self.root / shard, "rb") as fh:
                for i in sorted(rows, key=lambda k: self.samples[k]["json"][0]):
                    offset, size = self.samples[i]["json"]
                    fh.seek(offset)
                    data = fh.read(size)
                    if len(data) != size:
                        raise UserError(f"{self.root / shard}: truncated at sample '{self.samples[i]['key']}' (json)")
                    record = self._parse_labels(i, data)
                    try:
                        for key in LABEL_FIELDS:
                            table[key][i] = record[key]
                        table["sample_id"][i], table["hand_type"][i] = str(record["sample_id"]), str(record["hand_type"])
                    except (KeyError, TypeError, ValueError) as exc:
                        raise UserError(f"{self.root / shard}: damaged labels of sample '{self.samples[i]['key']}' ({exc!r})") from None
        return table

    def __getitem__(self, i: int) -> dict:
        entry = self.samples[i]
        if self._table is not None:
            sample = self._pending_sample(i)
        else:
            sample = self._full_sample(i, self.labels(i))
        sample["image_path"] = f"{self.root / entry['shard']}#{entry['key']}"
        if self.load_images:
            data = self.read_member(i, "jpg")
            try:
                sample["image"] = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
            except OSError as exc:  # PIL's errors for a damaged image
                shard = self.root / entry["shard"]
                raise UserError(f"{shard}: damaged image of sample '{entry['key']}' ({exc})") from None
        return sample

    def _pending_sample(self, i: int) -> dict:
        """labels="mano": the stored fields; meshes, joints and boxes of MANO hands pending."""
        table = self._table
        sample = empty_sample(table["sample_id"][i], self.source)
        sample["hand_type"] = table["hand_type"][i]
        for key in LABEL_FIELDS:
            sample[key] = table[key][i].copy()
        for key in ("mesh_valid", "mesh_pending", "joints_pending"):
            sample[key] = sample["mano_valid"].copy()
        return sample

    def _full_sample(self, i: int, labels: dict) -> dict:
        """labels="full": meshes and joints from one MANO forward per hand, joints projected."""
        sample = empty_sample(labels["sample_id"], self.source)
        sample["hand_type"] = labels["hand_type"]
        for key in LABEL_FIELDS:
            sample[key] = np.asarray(labels[key], dtype=sample[key].dtype)
        sample["mesh_valid"] = sample["mano_valid"].copy()
        with torch.no_grad():
            for h, side in enumerate(SIDES):
                if not sample["mano_valid"][h]:
                    continue
                t = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]  # noqa: E731
                pose = sample["mano_pose"][h]
                out = self.hand_model.hand(
                    side, betas=t(sample["mano_shape"][h]), global_orient=t(pose[:3]), hand_pose=t(pose[3:]), transl=t(sample["mano_transl"][h])
                )
                sample["verts"][NUM_VERTS * h : NUM_VERTS * (h + 1)] = out.vertices[0].numpy()
                sample["joints3d"][NUM_JOINTS * h : NUM_JOINTS * (h + 1)] = out.joints[0].numpy()
                sample["joints_valid"][NUM_JOINTS * h : NUM_JOINTS * (h + 1)] = True
        sample["joints2d_valid"] = sample["joints_valid"].copy()
        uv = project(sample["joints3d"], sample["focal"], sample["princpt"])
        sample["joints2d"] = np.where(sample["joints_valid"][:, None], uv, 0.0).astype(np.float32)
        return sample
