"""HIC (Tzionas et al., hand-hand and hand-object sequences) as packaged by InterWild: reader,
and a small PLY vertex reader / writer (ASCII and binary; no extra dependency).

Layout under `root` (or root/data, as InterWild keeps it); see datasets/hic.md::

    HIC.json          COCO: images {id, file_name, width, height},
                      annotations {id, image_id, hand_type, right_mano_path, left_mano_path}
    <file_name>       the images, paths relative to root
    <*_mano_path>     one PLY mesh per hand (778 vertices, camera frame, metres); null when absent

Intrinsics are fixed for every image: focal (525, 525), principal point (319.5, 239.5). There are
no MANO parameters, only meshes. Test split only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...camera import project
from ...hand_model.constants import NUM_JOINTS, NUM_VERTS
from ...hand_model.mano import SIDES, HandModel
from . import register_dataset, register_reader
from .common import (
    BaseReader,
    DataFormatError,
    box_from_points,
    card_hint,
    coco_annotation_keys,
    field_value,
    load_json,
    new_sample,
    put_hand,
    require_dir,
    require_file,
)

CARD = "hic"
FOCAL = np.array([525.0, 525.0], dtype=np.float32)
PRINCPT = np.array([319.5, 239.5], dtype=np.float32)

# ------------------------------------------------------------------------------------------ PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


def _ply_header(path: Path, raw: bytes) -> tuple[str | None, list[tuple[str, int, list[tuple]]], int]:
    """(byte order or None for ascii, [(element, count, [(name, type) or (name, count_type, item_type)])], body offset)."""
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise DataFormatError(f"{path}: not a PLY file (no 'ply' magic line or no 'end_header')")
    body = raw.index(b"\n", end) + 1
    order, elements = "missing", []
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if len(words) < 2 or words[1] not in _PLY_FORMATS:
                raise DataFormatError(f"{path}: unsupported PLY format line {line.strip()!r} (ascii or binary expected)")
            order = _PLY_FORMATS[words[1]]
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            types = words[2:-1] if words[1] == "list" else words[1:-1]
            if any(t not in _PLY_TYPES for t in types):
                raise DataFormatError(f"{path}: unknown PLY property type in {line.strip()!r}")
            prop = (words[-1], *(_PLY_TYPES[t] for t in types))
            elements[-1][2].append(prop)
        else:
            raise DataFormatError(f"{path}: malformed PLY header line {line.strip()!r}")
    if order == "missing":
        raise DataFormatError(f"{path}: PLY header has no 'format' line")
    return order, elements, body


def read_ply_vertices(path: str | Path) -> np.ndarray:
    """(N, 3) float64 vertex positions (x, y, z properties of the 'vertex' element) of a PLY file,
    ASCII or binary of either byte order. Other elements (faces ...) are skipped."""
    path = Path(path)
    raw = path.read_bytes()
    order, elements, offset = _ply_header(path, raw)
    lines = [line for line in raw[offset:].splitlines() if line.strip()] if order is None else []
    for name, count, props in elements:
        names = [p[0] for p in props]
        if name == "vertex" and not all(k in names for k in "xyz"):
            raise DataFormatError(f"{path}: PLY 'vertex' element lacks x, y or z properties (has {', '.join(names)})")
        scalar = all(len(p) == 2 for p in props)
        if order is None:  # ascii: one line per element entry
            rows, lines = lines[:count], lines[count:]
            if name == "vertex":
                return _ascii_rows(path, rows, props, count)
        elif scalar:
            dtype = np.dtype([(p[0], order + p[1]) for p in props])
            if name == "vertex":
                if len(raw) < offset + count * dtype.itemsize:
                    raise DataFormatError(f"{path}: PLY file ends inside the vertex block ({count} vertices declared)")
                table = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
                return np.stack([table[k].astype(np.float64) for k in "xyz"], axis=1)
            offset += count * dtype.itemsize
        else:
            values, offset = _binary_rows(raw, offset, count, props, order)
            if name == "vertex":
                return np.array([[row[names.index(k)] for k in "xyz"] for row in values], dtype=np.float64)
    raise DataFormatError(f"{path}: PLY file has no 'vertex' element")


def _ascii_rows(path: Path, rows: list[bytes], props: list[tuple], count: int) -> np.ndarray:
    if len(rows) < count:
        raise DataFormatError(f"{path}: PLY file ends inside the vertex block ({count} vertices declared, {len(rows)} found)")
    out = np.empty((count, 3), dtype=np.float64)
    for n, row in enumerate(rows):
        words, values, k = row.split(), {}, 0
        for prop in props:
            if k >= len(words):
                raise DataFormatError(f"{path}: PLY vertex {n} has too few values: {row.decode(errors='replace').strip()!r}")
            if len(prop) == 2:
                values[prop[0]] = words[k]
                k += 1
            else:
                k += 1 + int(words[k])
        try:
            out[n] = [float(values[c]) for c in "xyz"]
        except ValueError:
            raise DataFormatError(f"{path}: PLY vertex {n} has a non-numeric coordinate: {row.decode(errors='replace').strip()!r}") from None
    return out


def _binary_rows(raw: bytes, offset: int, count: int, props: list[tuple], order: str) -> tuple[list[list], int]:
    """Rows of an element with list properties, walked one value at a time."""
    rows = []
    for _ in range(count):
        row = []
        for prop in props:
            if len(prop) == 2:
                dt = np.dtype(order + prop[1])
                row.append(np.frombuffer(raw, dt, 1, offset)[0])
                offset += dt.itemsize
            else:
                ct, it = np.dtype(order + prop[1]), np.dtype(order + prop[2])
                n = int(np.frombuffer(raw, ct, 1, offset)[0])
                offset += ct.itemsize
                row.append(np.frombuffer(raw, it, n, offset))
                offset += n * it.itemsize
        rows.append(row)
    return rows, offset


# --------------------------------------------------------------------------------------- reader


register_dataset("hic", reader="hic", rules="hic", card="datasets/hic.md")


@register_reader("hic")
class HICReader(BaseReader):
    """HIC as samples (metres, camera frame, our joint order); sample_id = str(annotation id).

    Per hand: the PLY mesh when its path is not null and hand_type includes the hand
    (mesh_valid); joints3d regressed from that mesh with the model's 21-joint regressor, all
    valid; no MANO parameters (mano_valid False). Boxes: the projected mesh (as InterWild
    scores HIC boxes), grown by common.BOX_EXTEND and clipped to the image.

    Args:
        root: folder holding HIC.json (or its parent holding data/HIC.json).
        split: 'test' (HIC has no other split).
        labels: accepted like every reader's; HIC has meshes but no MANO parameters, so nothing
            is ever left pending.
    """

    source = "hic"
    card = CARD
    splits = ("test",)

    def __init__(self, root: str | Path, split: str, hand_model: HandModel, load_images: bool = True, labels: str = "full"):
        super().__init__(root, split, hand_model, load_images, labels)
        require_dir(self.root, "HIC root folder", CARD)
        self.data_root = self.root / "data" if not (self.root / "HIC.json").is_file() and (self.root / "data").is_dir() else self.root
        self.entries = self._index(self.data_root / "HIC.json")
        self._ids = [str(e["id"]) for e in self.entries]

    def _index(self, path: Path) -> list[dict]:
        data = load_json(path, "HIC annotation file HIC.json", CARD)
        file = path.name
        images = {}
        for n, img in enumerate(field_value(data, "images", file, "", list)):
            image_id = field_value(img, "id", file, f"images[{n}]", int)
            where = f"image {image_id}"
            images[image_id] = {
                "file_name": field_value(img, "file_name", file, where, str),
                "size": (field_value(img, "height", file, where, int), field_value(img, "width", file, where, int)),
            }
        entries = []
        for n, ann in enumerate(field_value(data, "annotations", file, "", list)):
            aid = field_value(ann, "id", file, f"annotations[{n}]", int)
            where = f"annotation {aid}"
            image_id, hand_type = coco_annotation_keys(ann, images, file, where)
            meshes = {side: field_value(ann, f"{side}_mano_path", file, where, (str, type(None))) for side in SIDES}
            entries.append({"id": aid, "hand_type": hand_type, "meshes": meshes, **images[image_id]})
        return entries

    def _meta(self, i: int) -> dict:
        e = self.entries[i]
        return {
            "sample_id": self._ids[i],
            "source": self.source,
            "image_path": str(self.data_root / e["file_name"]),
            "image_size": e["size"],
            "hand_type": e["hand_type"],
        }

    def _mesh(self, rel_path: str) -> np.ndarray:
        path = require_file(self.data_root / rel_path, "HIC hand mesh", CARD)
        verts = read_ply_vertices(path)
        if verts.shape != (NUM_VERTS, 3):
            raise DataFormatError(f"{path}: a MANO hand mesh must have {NUM_VERTS} vertices, got {len(verts)}; {card_hint(CARD)}")
        if not np.isfinite(verts).all():
            raise DataFormatError(f"{path}: mesh has non-finite vertex coordinates")
        return verts

    @torch.no_grad()
    def _labels(self, i: int) -> dict:
        e = self.entries[i]
        sample = new_sample(self._ids[i], self.source, self.data_root / e["file_name"], e["size"], FOCAL, PRINCPT, e["hand_type"])
        wanted = {"right": e["hand_type"] in ("right", "interacting"), "left": e["hand_type"] in ("left", "interacting")}
        for hand, side in enumerate(SIDES):
            if wanted[side] and e["meshes"][side] is not None:
                put_hand(sample, hand, verts=self._mesh(e["meshes"][side]), mesh_valid=True)
        joints = self.hand_model.regress_joints(torch.as_tensor(sample["verts"])[None])[0].numpy()
        for hand in range(2):
            if sample["mesh_valid"][hand]:
                verts = sample["verts"][hand * NUM_VERTS : (hand + 1) * NUM_VERTS]
                part = joints[hand * NUM_JOINTS : (hand + 1) * NUM_JOINTS]
                put_hand(
                    sample, hand,
                    joints3d=part, joints2d=project(part, FOCAL, PRINCPT), joints_valid=np.ones(NUM_JOINTS, dtype=bool),
                    boxes=box_from_points(project(verts, FOCAL, PRINCPT), np.ones(NUM_VERTS, dtype=bool), e["size"]),
                )  # fmt: skip
        return sample


__all__ = ["FOCAL", "PRINCPT", "HICReader", "read_ply_vertices"]
