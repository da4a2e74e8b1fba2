"""InterHand2.6M (v1.0 release, 5 or 30 fps): reader, and writer of the same layout.

Layout under `root` (see datasets/interhand26m.md)::

    images/<split>/<file_name>                                   file_name as in data.json
    annotations/<split>/InterHand2.6M_<split>_data.json           COCO images + annotations
    annotations/<split>/InterHand2.6M_<split>_camera.json         per capture, per camera
    annotations/<split>/InterHand2.6M_<split>_joint_3d.json       per capture, per frame
    annotations/<split>/InterHand2.6M_<split>_MANO_NeuralAnnot.json
    aid_human_annot_<split>.txt                                   optional, see `human_annot_ids`

Conventions of the release: camera.json gives campos (camera centre, world, mm) and camrot
(world -> camera), X_cam = camrot (X_world - campos). joint_3d.json world_coord is 42x3 mm in the
InterHand2.6M joint order (per hand tip first, wrist last; right 0-20, left 21-41).
MANO_NeuralAnnot.json holds world-frame parameters in metres for smplx's MANO with use_pca=False,
flat_hand_mean=False; a hand without a fit is null. JSON keys for capture, frame and camera are
strings.

The writer `write_interhand_split` is the exact inverse of `load_interhand_split`: records
written and loaded back compare equal. The procedural stand-in dataset is written through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ...camera import project
from ...hand_model.constants import IH26M_TO_OURS, NUM_JOINTS, OURS_TO_IH26M
from ...hand_model.mano import SIDES, HandModel
from ...io import atomic_write_json, atomic_write_text
from . import register_dataset, register_reader
from .common import (
    BaseReader,
    DataFormatError,
    ManoParams,
    box_from_points,
    boxes_from_points,
    card_hint,
    coco_annotation_keys,
    field_array,
    field_value,
    load_json,
    mano_to_camera,
    new_sample,
    put_mano_meshes,
    require_dir,
)

CARD = "interhand26m"
SPLITS = ("train", "val", "test")
SUBSETS = ("all", "human_annot")
KINDS = ("data", "camera", "joint_3d", "MANO_NeuralAnnot")
NUM_IH26M_JOINTS = 2 * NUM_JOINTS
# Index of the wrist of each hand in the InterHand2.6M order.
IH26M_WRISTS = (20, 41)


def annotation_path(root: str | Path, split: str, kind: str) -> Path:
    """root/annotations/<split>/InterHand2.6M_<split>_<kind>.json, kind one of KINDS."""
    return Path(root) / "annotations" / split / f"InterHand2.6M_{split}_{kind}.json"


def image_path(root: str | Path, split: str, file_name: str) -> Path:
    """root/images/<split>/<file_name>: where the image of a data.json entry lives."""
    return Path(root) / "images" / split / file_name


def to_ih26m_order(joints_ours: np.ndarray) -> np.ndarray:
    """(42, ...) two hands in our order (right first, wrist first) -> InterHand2.6M order."""
    index = list(OURS_TO_IH26M) + [NUM_JOINTS + i for i in OURS_TO_IH26M]
    return np.asarray(joints_ours)[index]


def from_ih26m_order(joints_ih26m: np.ndarray) -> np.ndarray:
    """(42, ...) InterHand2.6M order (tip first, wrist last per hand) -> our order."""
    index = list(IH26M_TO_OURS) + [NUM_JOINTS + i for i in IH26M_TO_OURS]
    return np.asarray(joints_ih26m)[index]


@dataclass
class InterHandCamera:
    """One camera of a capture: campos (3,) mm camera centre in the world, camrot (3, 3)
    world -> camera rotation (X_cam = camrot (X - campos)), focal (2,) and princpt (2,) pixels."""

    campos: np.ndarray
    camrot: np.ndarray
    focal: np.ndarray
    princpt: np.ndarray

    def extrinsics_m(self) -> tuple[np.ndarray, np.ndarray]:
        """(rot, trans) with X_cam = rot X + trans in metres."""
        return self.camrot, -self.camrot @ (self.campos / 1000.0)

    def equals(self, other: "InterHandCamera") -> bool:
        return all(np.array_equal(getattr(self, k), getattr(other, k)) for k in ("campos", "camrot", "focal", "princpt"))


@dataclass
class InterHandFrame:
    """One frame of a capture: world_coord (42, 3) mm in InterHand2.6M order, joint_valid (42,)
    3D validity, optional frame-level hand_type / hand_type_valid, and MANO fits per side
    (world frame, metres; None where the release has no fit)."""

    world_coord: np.ndarray
    joint_valid: np.ndarray
    mano: dict[str, ManoParams | None]
    hand_type: str | None = None
    hand_type_valid: bool | None = None

    def equals(self, other: "InterHandFrame") -> bool:
        same_mano = all(
            (self.mano[s] is None and other.mano[s] is None) or (self.mano[s] is not None and self.mano[s].equals(other.mano[s]))
            for s in SIDES
        )
        return (
            same_mano
            and np.array_equal(self.world_coord, other.world_coord, equal_nan=True)
            and np.array_equal(self.joint_valid, other.joint_valid)
            and self.hand_type == other.hand_type
            and self.hand_type_valid == other.hand_type_valid
        )


@dataclass
class InterHandRecord:
    """One annotation with its image, camera and frame: a row of an InterHand2.6M split.

    joint_valid (42,) is the annotation's flag (annotated and inside the image), InterHand2.6M
    order; bbox (4,) is x, y, w, h pixels (None: the writer computes it from the valid joints).
    """

    annot_id: int
    image_id: int
    file_name: str
    width: int
    height: int
    capture: int
    camera: str
    frame_idx: int
    hand_type: str
    joint_valid: np.ndarray
    cam: InterHandCamera
    frame: InterHandFrame
    bbox: np.ndarray | None = None
    hand_type_valid: bool = True
    subject: int = 0
    seq_name: str = ""
    extra: dict = field(default_factory=dict)  # other keys of the image entry, kept for the writer


# ----------------------------------------------------------------------------------------- load


class _Parser:
    """Validates the four JSON files lazily per capture / camera / frame, caching results."""

    def __init__(self, root: Path, split: str):
        self.names = {k: annotation_path(root, split, k).name for k in KINDS}
        self.cameras_json = load_json(annotation_path(root, split, "camera"), "InterHand2.6M camera file", CARD)
        self.joints_json = load_json(annotation_path(root, split, "joint_3d"), "InterHand2.6M 3D joint file", CARD)
        self.mano_json = load_json(annotation_path(root, split, "MANO_NeuralAnnot"), "InterHand2.6M MANO file", CARD)
        for kind, value in (("camera", self.cameras_json), ("joint_3d", self.joints_json), ("MANO_NeuralAnnot", self.mano_json)):
            if not isinstance(value, dict):
                raise DataFormatError(f"{self.names[kind]}: expected an object keyed by capture id, got {type(value).__name__}")
        self._cams: dict[tuple[str, str], InterHandCamera] = {}
        self._frames: dict[tuple[str, str], InterHandFrame] = {}

    def camera(self, capture: str, cam: str, needed_by: str) -> InterHandCamera:
        key = (capture, cam)
        if key not in self._cams:
            file = self.names["camera"]
            if capture not in self.cameras_json:
                raise DataFormatError(f"{file}: no capture '{capture}' ({needed_by} needs it)")
            entry = self.cameras_json[capture]
            where = f"capture '{capture}' camera '{cam}'"
            values = {}
            for name, shape in (("campos", (3,)), ("camrot", (3, 3)), ("focal", (2,)), ("princpt", (2,))):
                table = field_value(entry, name, file, f"capture '{capture}'", dict)
                if cam not in table:
                    raise DataFormatError(f"{file}: {where}: field '{name}' has no entry for camera '{cam}' ({needed_by} needs it)")
                values[name] = field_array(table[cam], shape, file, where, name)
            self._cams[key] = InterHandCamera(**values)
        return self._cams[key]

    def frame(self, capture: str, frame: str, needed_by: str) -> InterHandFrame:
        key = (capture, frame)
        if key not in self._frames:
            file = self.names["joint_3d"]
            where = f"capture '{capture}' frame '{frame}'"
            if capture not in self.joints_json or not isinstance(self.joints_json[capture], dict) or frame not in self.joints_json[capture]:
                raise DataFormatError(f"{file}: no entry for {where} ({needed_by} needs it)")
            entry = self.joints_json[capture][frame]
            # non-finite coordinates are allowed: those joints are treated as invalid
            world = field_value(entry, "world_coord", file, where, list)
            world = field_array(world, (NUM_IH26M_JOINTS, 3), file, where, "world_coord", finite=False)
            valid = np.ones(NUM_IH26M_JOINTS, dtype=bool)
            if "joint_valid" in entry:
                valid = field_array(entry["joint_valid"], (NUM_IH26M_JOINTS,), file, where, "joint_valid") > 0
            hand_type = field_value(entry, "hand_type", file, where, (str, type(None))) if "hand_type" in entry else None
            hand_type_valid = None
            if entry.get("hand_type_valid") is not None:
                hand_type_valid = bool(field_value(entry, "hand_type_valid", file, where, (int, float, bool)))
            self._frames[key] = InterHandFrame(world, valid, self._mano(capture, frame), hand_type, hand_type_valid)
        return self._frames[key]

    def _mano(self, capture: str, frame: str) -> dict[str, ManoParams | None]:
        # A frame without any fit is simply absent from the MANO file (as InterWild reads it).
        entry = self.mano_json.get(capture, {})
        entry = entry.get(frame) if isinstance(entry, dict) else None
        if entry is None:
            return {side: None for side in SIDES}
        file, where = self.names["MANO_NeuralAnnot"], f"capture '{capture}' frame '{frame}'"
        if not isinstance(entry, dict):
            raise DataFormatError(f"{file}: {where}: expected an object with 'right' and 'left', got {type(entry).__name__}")
        return {side: None if entry.get(side) is None else ManoParams.parse(entry[side], file, f"{where} hand '{side}'") for side in SIDES}


def human_annot_ids(root: str | Path, split: str, path: str | Path | None = None) -> set[int]:
    """Annotation ids of the human-annotated ('H') subset of a split.

    The v1.0 release ships only the H+M annotations per split; InterWild selects the human-annotated
    subset with a list of annotation ids, `aid_human_annot_<split>.txt` (one id per line), looked for
    at `path`, then root/, then root/annotations/<split>/. The older v0.0 release instead has a
    folder annotations/human_annot/ with its own InterHand2.6M_<split>_data.json, whose ids are used
    when no list is found.
    """
    root = Path(root)
    name = f"aid_human_annot_{split}.txt"
    candidates = [Path(path)] if path is not None else [root / name, root / "annotations" / split / name]
    for candidate in candidates:
        if candidate.is_file():
            ids = set()
            for n, line in enumerate(candidate.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        ids.add(int(line))
                    except ValueError:
                        raise DataFormatError(f"{candidate}: line {n}: expected an annotation id (integer), got {line.strip()!r}") from None
            return ids
    if path is not None:
        raise DataFormatError(f"human-annotated id list not found: {path}; {card_hint(CARD)}")
    v0 = root / "annotations" / "human_annot" / f"InterHand2.6M_{split}_data.json"
    if v0.is_file():
        data = load_json(v0, "InterHand2.6M human_annot data file", CARD)
        return {int(a["id"]) for a in field_value(data, "annotations", v0.name, "", list)}
    raise DataFormatError(
        f"subset='human_annot' needs the list of human-annotated annotation ids: put InterWild's {name} "
        f"(one annotation id per line) at {root / name}; {card_hint(CARD)}"
    )


def load_interhand_split(
    root: str | Path, split: str, subset: str = "all", human_annot_file: str | Path | None = None
) -> list[InterHandRecord]:
    """Parse and validate one split into records, in data.json's annotation order.

    subset='all' keeps every annotation (H+M); 'human_annot' keeps the human-annotated ones
    (see `human_annot_ids`). Errors name the file, the record and the field.
    """
    root = require_dir(Path(root), "InterHand2.6M root folder", CARD)
    if subset not in SUBSETS:
        raise DataFormatError(f"InterHand2.6M: subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    data_path = annotation_path(root, split, "data")
    data = load_json(data_path, "InterHand2.6M data file", CARD)
    file = data_path.name
    images = field_value(data, "images", file, "", list)
    annotations = field_value(data, "annotations", file, "", list)
    keep = human_annot_ids(root, split, human_annot_file) if subset == "human_annot" else None
    parser = _Parser(root, split)

    images_by_id: dict[int, dict] = {}
    for n, img in enumerate(images):
        image_id = field_value(img, "id", file, f"images[{n}]", int)
        images_by_id[image_id] = img

    records, seen = [], set()
    for n, ann in enumerate(annotations):
        aid = field_value(ann, "id", file, f"annotations[{n}]", int)
        if keep is not None and aid not in keep:
            continue
        if aid in seen:
            raise DataFormatError(f"{file}: annotation {aid}: duplicate annotation id")
        seen.add(aid)
        records.append(_record(ann, aid, images_by_id, parser, file))
    return records


def _record(ann: dict, aid: int, images_by_id: dict[int, dict], parser: _Parser, file: str) -> InterHandRecord:
    where = f"annotation {aid}"
    image_id, hand_type = coco_annotation_keys(ann, images_by_id, file, where)
    joint_valid = field_array(field_value(ann, "joint_valid", file, where, list), (NUM_IH26M_JOINTS,), file, where, "joint_valid") > 0
    bbox = field_array(ann["bbox"], (4,), file, where, "bbox") if ann.get("bbox") is not None else None
    hand_type_valid = bool(field_value(ann, "hand_type_valid", file, where, (int, float, bool))) if "hand_type_valid" in ann else True

    img = images_by_id[image_id]
    iwhere = f"image {image_id}"
    capture = field_value(img, "capture", file, iwhere, int)
    camera = str(field_value(img, "camera", file, iwhere, (str, int)))
    frame_idx = field_value(img, "frame_idx", file, iwhere, int)
    known = {"id", "file_name", "width", "height", "capture", "camera", "frame_idx", "subject", "seq_name"}
    return InterHandRecord(
        annot_id=aid,
        image_id=image_id,
        file_name=field_value(img, "file_name", file, iwhere, str),
        width=field_value(img, "width", file, iwhere, int),
        height=field_value(img, "height", file, iwhere, int),
        capture=capture,
        camera=camera,
        frame_idx=frame_idx,
        hand_type=hand_type,
        joint_valid=joint_valid,
        cam=parser.camera(str(capture), camera, where),
        frame=parser.frame(str(capture), str(frame_idx), where),
        bbox=bbox,
        hand_type_valid=hand_type_valid,
        subject=field_value(img, "subject", file, iwhere, int) if "subject" in img else 0,
        seq_name=field_value(img, "seq_name", file, iwhere, str) if "seq_name" in img else "",
        extra={k: v for k, v in img.items() if k not in known},
    )


# ---------------------------------------------------------------------------------------- write


def _bbox_xywh(rec: InterHandRecord) -> np.ndarray:
    """Box of the annotation's valid joints in the image (x, y, w, h), as the writer's default."""
    rot, trans = rec.cam.extrinsics_m()
    joints_cam = rec.frame.world_coord / 1000.0 @ rot.T + trans
    box = box_from_points(project(joints_cam, rec.cam.focal, rec.cam.princpt), rec.joint_valid, (rec.height, rec.width))
    return np.array([box[0], box[1], box[2] - box[0], box[3] - box[1]], dtype=np.float64)


def _put_once(table: dict, key: Any, value: Any, what: str) -> None:
    if key in table and table[key] is not value and not table[key].equals(value):
        raise ValueError(f"records disagree about {what}: two different values were given for the same key")
    table.setdefault(key, value)


def write_interhand_split(
    root: str | Path, split: str, records: Iterable[InterHandRecord], human_annot: Iterable[int] | None = None
) -> dict[str, Path]:
    """Write records as the four annotation files of `split` under root/annotations/<split>/.

    Images are not written: save each one at `image_path(root, split, rec.file_name)`. Records
    sharing a (capture, camera) or (capture, frame_idx) must carry equal cameras / frames.
    `human_annot`, when given, is written as root/aid_human_annot_<split>.txt. Returns the paths.
    """
    images: dict[int, dict] = {}
    annotations: list[dict] = []
    cams: dict[tuple[int, str], InterHandCamera] = {}
    frames: dict[tuple[int, int], InterHandFrame] = {}
    for rec in records:
        image = {
            "id": rec.image_id, "file_name": rec.file_name, "width": rec.width, "height": rec.height,
            "capture": rec.capture, "subject": rec.subject, "seq_name": rec.seq_name, "camera": rec.camera,
            "frame_idx": rec.frame_idx, **rec.extra,
        }  # fmt: skip
        if rec.image_id in images and images[rec.image_id] != image:
            raise ValueError(f"records disagree about image {rec.image_id}")
        images[rec.image_id] = image
        bbox = rec.bbox if rec.bbox is not None else _bbox_xywh(rec)
        annotations.append({
            "id": rec.annot_id, "image_id": rec.image_id, "bbox": np.asarray(bbox, float).tolist(),
            "joint_valid": np.asarray(rec.joint_valid, int).tolist(), "hand_type": rec.hand_type,
            "hand_type_valid": int(rec.hand_type_valid),
        })  # fmt: skip
        _put_once(cams, (rec.capture, rec.camera), rec.cam, f"capture {rec.capture} camera {rec.camera}")
        _put_once(frames, (rec.capture, rec.frame_idx), rec.frame, f"capture {rec.capture} frame {rec.frame_idx}")

    camera_json: dict = {}
    for (capture, cam), c in cams.items():
        entry = camera_json.setdefault(str(capture), {"campos": {}, "camrot": {}, "focal": {}, "princpt": {}})
        for name in ("campos", "camrot", "focal", "princpt"):
            entry[name][cam] = np.asarray(getattr(c, name), float).tolist()
    joints_json: dict = {}
    mano_json: dict = {}
    for (capture, frame_idx), f in frames.items():
        entry = {"world_coord": np.asarray(f.world_coord, float).tolist(), "joint_valid": np.asarray(f.joint_valid, int).tolist()}
        if f.hand_type is not None:
            entry["hand_type"] = f.hand_type
        if f.hand_type_valid is not None:
            entry["hand_type_valid"] = int(f.hand_type_valid)
        joints_json.setdefault(str(capture), {})[str(frame_idx)] = entry
        mano_json.setdefault(str(capture), {})[str(frame_idx)] = {s: None if f.mano[s] is None else f.mano[s].to_json() for s in SIDES}

    contents = {
        "data": {"images": list(images.values()), "annotations": annotations},
        "camera": camera_json,
        "joint_3d": joints_json,
        "MANO_NeuralAnnot": mano_json,
    }
    written = {}
    for kind, content in contents.items():
        written[kind] = atomic_write_json(annotation_path(root, split, kind), content)
    if human_annot is not None:
        path = Path(root) / f"aid_human_annot_{split}.txt"
        written["human_annot"] = atomic_write_text(path, "".join(f"{int(a)}\n" for a in human_annot))
    return written


# --------------------------------------------------------------------------------------- reader


def _interwild_box_ok(points: np.ndarray, width: int, height: int, extend: float = 1.2) -> bool:
    """Whether InterWild's get_bbox + sanitize_bbox give a box for these (k >= 1, 2) pixels:
    the points' extent grown `extend` times about its centre, clipped to the image, non-empty."""
    lo, hi = points.min(0), points.max(0)
    size = (hi - lo) * extend
    x, y = (lo + hi) / 2 - size / 2
    w, h = size
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1)), min(height - 1.0, y1 + max(0.0, h - 1))
    return bool(w * h > 0 and x2 > x1 and y2 > y1)


def _sides_of(hand_type: str) -> tuple[bool, bool]:
    return hand_type in ("right", "interacting"), hand_type in ("left", "interacting")


# InterWild scores InterHand2.6M on its human-annotated test subset (aid_human_annot_<split>.txt)
register_dataset("ih26m", reader="ih26m", rules="ih26m", card="datasets/interhand26m.md", subset="human_annot")
register_dataset("procedural", reader="ih26m", rules="ih26m", card="datasets/procedural.md")  # written in InterHand2.6M format


@register_reader("ih26m")
class InterHandReader(BaseReader):
    """InterHand2.6M split as samples (metres, camera frame, our joint order).

    Per annotation: joints3d are the annotated 3D joints moved to the camera; joints_valid is the
    annotation's joint_valid AND the frame's 3D joint_valid, with a whole hand invalid when its
    wrist is (InterHand2.6M / InterWild rule). A hand is present when hand_type includes it and it
    has a valid joint; an absent hand is all zeros and invalid. mano_valid = mesh_valid: present
    and a MANO fit exists (InterWild drops the fit of a hand with no valid joint as well). Boxes:
    valid 2D joints, grown by common.BOX_EXTEND and clipped to the image.

    Every label but the mesh is computed once, at construction, for all annotations (arrays of
    `_TABLE` keys, camera-frame MANO parameters through one batched `HandModel.to_camera` per
    side); an item copies its rows and, with labels="full", runs MANO for its meshes.

    Args:
        root: folder holding annotations/ and images/ (datasets/interhand26m.md).
        split: 'train', 'val' or 'test'.
        subset: 'all' (H+M) or 'human_annot' (the human-annotated subset, InterWild's test set).
        human_annot_file: explicit path of aid_human_annot_<split>.txt (see `human_annot_ids`).
        labels: 'full' or 'mano' (meshes left to `labels_from_mano`; see `BaseReader`).
    """

    source = "ih26m"
    card = CARD
    splits = SPLITS
    # sample fields held per annotation by the reader, (N, ...) arrays in the sample's dtypes
    _TABLE = ("joints3d", "joints2d", "joints_valid", "boxes", "mano_valid", "mano_pose", "mano_shape", "mano_transl")
    _CHUNK = 65536  # annotations per step of the construction-time computation (bounded float64 temporaries)

    def __init__(
        self,
        root: str | Path,
        split: str,
        hand_model: HandModel,
        load_images: bool = True,
        subset: str = "all",
        human_annot_file: str | Path | None = None,
        labels: str = "full",
    ):
        super().__init__(root, split, hand_model, load_images, labels)
        self.subset = subset
        self.records = load_interhand_split(self.root, split, subset, human_annot_file)
        self._ids = [str(r.annot_id) for r in self.records]
        folder = image_path(self.root, split, "")
        self._paths = [str(folder / r.file_name) for r in self.records]  # once, not per item
        self._table = self._label_table()

    @staticmethod
    def _joint_valid(rec: InterHandRecord) -> np.ndarray:
        """(42,) bool in our order: annotated AND 3D-valid AND the hand's wrist valid."""
        valid = rec.joint_valid & rec.frame.joint_valid & np.isfinite(rec.frame.world_coord).all(1)
        for hand, wrist in enumerate(IH26M_WRISTS):
            valid[hand * NUM_JOINTS : (hand + 1) * NUM_JOINTS] &= valid[wrist]
        return from_ih26m_order(valid)

    def _label_table(self) -> dict[str, np.ndarray]:
        """The `_TABLE` fields of every annotation (see the class doc), built chunk by chunk."""
        n = len(self.records)
        table = {
            "joints3d": np.zeros((n, 2 * NUM_JOINTS, 3), np.float32),
            "joints2d": np.zeros((n, 2 * NUM_JOINTS, 2), np.float32),
            "joints_valid": np.zeros((n, 2 * NUM_JOINTS), bool),
            "boxes": np.zeros((n, 2, 4), np.float32),
            "mano_valid": np.zeros((n, 2), bool),
            "mano_pose": np.zeros((n, 2, 48), np.float32),
            "mano_shape": np.zeros((n, 2, 10), np.float32),
            "mano_transl": np.zeros((n, 2, 3), np.float32),
        }
        for lo in range(0, n, self._CHUNK):
            self._fill_table(table, lo, self.records[lo : lo + self._CHUNK])
        return table

    def _fill_table(self, table: dict[str, np.ndarray], lo: int, recs: list[InterHandRecord]) -> None:
        rows = slice(lo, lo + len(recs))
        rot = np.stack([r.cam.camrot for r in recs])
        trans = np.stack([r.cam.extrinsics_m()[1] for r in recs])
        focal, princpt = np.stack([r.cam.focal for r in recs]), np.stack([r.cam.princpt for r in recs])
        world = np.stack([from_ih26m_order(r.frame.world_coord) for r in recs]) / 1000.0
        joints_cam = world @ rot.transpose(0, 2, 1) + trans[:, None]
        joints_2d = project(joints_cam, focal, princpt)
        valid = np.stack([self._joint_valid(r) for r in recs]).reshape(len(recs), 2, NUM_JOINTS)
        wanted = np.array([_sides_of(r.hand_type) for r in recs], dtype=bool)
        present = wanted & valid.any(-1)  # (n, 2)
        hand_valid = (valid & present[..., None]).reshape(len(recs), 2 * NUM_JOINTS)
        table["joints_valid"][rows] = hand_valid
        table["joints3d"][rows] = np.where(hand_valid[..., None], joints_cam, 0.0)
        table["joints2d"][rows] = np.where(hand_valid[..., None], joints_2d, 0.0)
        sizes = torch.tensor([(r.height, r.width) for r in recs])[:, None].expand(-1, 2, -1)
        boxes = boxes_from_points(torch.from_numpy(joints_2d).reshape(len(recs), 2, NUM_JOINTS, 2), torch.from_numpy(valid), sizes)
        table["boxes"][rows] = np.where(present[..., None], boxes.numpy(), 0.0)
        for hand, side in enumerate(SIDES):
            fitted = [k for k, r in enumerate(recs) if present[k, hand] and r.frame.mano[side] is not None]
            if not fitted:
                continue
            fits = [recs[k].frame.mano[side] for k in fitted]
            shape = np.stack([m.shape for m in fits])
            pose, transl = mano_to_camera(self.hand_model, side, np.stack([m.pose for m in fits]), shape, np.stack([m.trans for m in fits]),
                                          rot[fitted], trans[fitted])  # fmt: skip
            at = lo + np.asarray(fitted)
            table["mano_valid"][at, hand] = True
            table["mano_pose"][at, hand] = pose
            table["mano_shape"][at, hand] = shape
            table["mano_transl"][at, hand] = transl

    def annotation_labels(self) -> dict[str, np.ndarray]:
        """What InterWild's InterHand26M.py evaluate() reads, for every annotation (our order):

        - annot_joints3d (N, 42, 3) m: the annotated joints moved to the camera, both hands
          whatever the hand_type; a joint without a 3D annotation (or whose hand's 3D wrist has
          none) at InterWild's placeholder, 1 mm on every axis.
        - annot_joints_valid (N, 42): the annotation's joint_valid times its hand's wrist flag
          (InterWild's joint_trunc), both hands; a hand whose box of valid projected joints
          (grown 1.2x, clipped to the image) is degenerate is all False, as InterWild drops it.
        - annot_sample_valid (N,): False for what InterWild's loader leaves out: no annotated
          joint, no 3D-valid joint, or no hand box.
        """
        n = len(self.records)
        joints = np.zeros((n, 2 * NUM_JOINTS, 3))
        valid = np.zeros((n, 2 * NUM_JOINTS), bool)
        kept = np.zeros(n, bool)
        hands = [np.arange(h * NUM_JOINTS, (h + 1) * NUM_JOINTS) for h in range(2)]  # InterHand2.6M order
        for k, rec in enumerate(self.records):
            trunc = np.asarray(rec.joint_valid, bool).copy()
            valid3d = np.asarray(rec.frame.joint_valid, bool) & np.isfinite(rec.frame.world_coord).all(1)
            for idx, wrist in zip(hands, IH26M_WRISTS):
                trunc[idx] &= trunc[wrist]
                valid3d[idx] &= valid3d[wrist]
            rot, trans = rec.cam.extrinsics_m()
            cam_mm = np.where(valid3d[:, None], np.nan_to_num(rec.frame.world_coord) @ rot.T + trans * 1000.0, 1.0)
            pixels = cam_mm[:, :2] / cam_mm[:, 2:] * np.asarray(rec.cam.focal) + np.asarray(rec.cam.princpt)
            boxes = [bool(trunc[idx].any()) and _interwild_box_ok(pixels[idx][trunc[idx]], rec.width, rec.height) for idx in hands]
            for idx, ok in zip(hands, boxes):
                trunc[idx] &= ok
            kept[k] = bool(valid3d.any()) and any(boxes)  # a box implies an annotated joint
            joints[k] = from_ih26m_order(cam_mm / 1000.0)
            valid[k] = from_ih26m_order(trunc)
        return {"annot_joints3d": joints, "annot_joints_valid": valid, "annot_sample_valid": kept}

    def _meta(self, i: int) -> dict:
        rec = self.records[i]
        return {
            "sample_id": self._ids[i],
            "source": self.source,
            "image_path": self._paths[i],
            "image_size": (rec.height, rec.width),
            "hand_type": rec.hand_type,
            "capture": rec.capture,
            "camera": rec.camera,
            "frame_idx": rec.frame_idx,
            "seq_name": rec.seq_name,
        }

    def _labels(self, i: int) -> dict:
        rec = self.records[i]
        sample = new_sample(self._ids[i], self.source, self._paths[i], (rec.height, rec.width), rec.cam.focal, rec.cam.princpt, rec.hand_type)
        for key, column in self._table.items():
            sample[key] = column[i].copy()
        sample["joints2d_valid"] = sample["joints_valid"].copy()  # every annotated 3D joint has its 2D label
        sample["mesh_valid"] = sample["mano_valid"].copy()
        if self.label_mode == "mano":
            sample["mesh_pending"] = sample["mano_valid"].copy()
        else:
            put_mano_meshes(sample, self.hand_model)
        return sample


__all__ = [
    "InterHandCamera",
    "InterHandFrame",
    "InterHandReader",
    "InterHandRecord",
    "annotation_path",
    "from_ih26m_order",
    "human_annot_ids",
    "image_path",
    "load_interhand_split",
    "to_ih26m_order",
    "write_interhand_split",
]
