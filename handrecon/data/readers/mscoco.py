"""MSCOCO-WholeBody (COCO 2017 people with whole-body keypoints, v1.0) and the optional
NeuralAnnot MANO pseudo-ground-truth, as InterWild trains on them: reader.

Layout under `root` (InterWild's data/MSCOCO/; see datasets/mscoco.md)::

    images/train2017/<file_name>                        COCO 2017 images
    images/val2017/<file_name>
    annotations/coco_wholebody_train_v1.0.json          COCO-WholeBody v1.0
    annotations/coco_wholebody_val_v1.0.json
    annotations/MSCOCO_train_MANO_NeuralAnnot.json      optional MANO fits (the release has train only)

Fields read. images: id, file_name, width, height. annotations (one per person): id, image_id,
iscrowd, num_keypoints (body), bbox (x, y, w, h) and per hand, `righthand` / `lefthand`:
`<hand>_valid` (bool), `<hand>_box` (x, y, w, h) and `<hand>_kpts` (63 numbers, 21 x (x, y, score)
in COCO_HAND_JOINT_NAMES order, which is ours; score > 0 marks an annotated keypoint).

The fits file maps str(annotation id) to {right, left}, each null or {mano_param: {pose 48,
shape 10, trans 3}, cam_param: {focal 2, princpt 2}}: MANO parameters (smplx MANO, use_pca=False,
flat_hand_mean=False, metres) in the camera frame of that hand's own pinhole camera, given in
original image pixels. NeuralAnnot fitted each hand in its own crop, so the two hands of a person
usually have different cameras.

Selection, as InterWild's data/MSCOCO/MSCOCO.py: a person is kept unless it is a crowd (iscrowd),
has no body keypoint (num_keypoints == 0), has neither hand valid, or its body box is empty once
clipped to the image. A hand has a box when its valid flag is set and its box is not empty once
clipped (`clip_box`). A keypoint is valid where its score is > 0, whatever the hand's flag.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...camera import project, unproject
from ...hand_model.constants import COCO_TO_OURS, NUM_JOINTS
from ...hand_model.mano import SIDES, HandModel
from ...metrics import register_dataset_rules
from . import register_dataset, register_reader
from .common import (
    BaseReader,
    DataFormatError,
    ManoParams,
    card_hint,
    field_array,
    field_value,
    load_json,
    mano_in_camera,
    new_sample,
    put_hand,
    require_dir,
)

CARD = "mscoco"
SPLITS = ("train", "val")
IMAGE_FOLDERS = {"train": "train2017", "val": "val2017"}
CROPS = ("person", "hand")
# hand index (0 right, 1 left) -> the COCO-WholeBody field prefix
HAND_KEYS = ("righthand", "lefthand")
NUM_COCO_HAND_KEYPOINTS = 21


def annotation_file(root: str | Path, split: str) -> Path:
    """root/annotations/coco_wholebody_<split>_v1.0.json."""
    return Path(root) / "annotations" / f"coco_wholebody_{split}_v1.0.json"


def fits_file(root: str | Path, split: str) -> Path:
    """root/annotations/MSCOCO_<split>_MANO_NeuralAnnot.json (where mano_fits='auto' looks)."""
    return Path(root) / "annotations" / f"MSCOCO_{split}_MANO_NeuralAnnot.json"


def image_file(root: str | Path, split: str, file_name: str) -> Path:
    """root/images/<train2017|val2017>/<file_name>."""
    return Path(root) / "images" / IMAGE_FOLDERS[split] / file_name


def clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """A COCO box (x, y, w, h) clipped to the image as InterWild's sanitize_bbox does, as
    (x0, y0, x1, y1): x0 = max(0, x), x1 = min(W - 1, x0 + max(0, w - 1)), likewise y. None when
    w * h <= 0 or the clipped box has no width or height."""
    x, y, w, h = (float(v) for v in box)
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(width - 1.0, x0 + max(0.0, w - 1)), min(height - 1.0, y0 + max(0.0, h - 1))
    if w * h <= 0 or x1 <= x0 or y1 <= y0:
        return None
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def nominal_camera(image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(focal, princpt) of samples without a MANO fit: focal max(H, W) pixels on both axes and the
    principal point at the image centre. The 2D labels do not depend on it; it gives augmentation
    and the models' projections a camera."""
    h, w = image_size
    return np.array([max(h, w)] * 2, dtype=np.float32), np.array([(w - 1) / 2.0, (h - 1) / 2.0], dtype=np.float32)


def _keypoints(ann: dict, key: str, file: str, where: str) -> np.ndarray:
    """(21, 3) x, y, score of one hand; the release stores 63 numbers (21 x 3 is accepted too)."""
    value = field_value(ann, key, file, where, list)
    if value and all(isinstance(row, list) and len(row) == 3 for row in value):  # 21 x 3 rather than flat
        return field_array(value, (NUM_COCO_HAND_KEYPOINTS, 3), file, where, key)
    return field_array(value, (3 * NUM_COCO_HAND_KEYPOINTS,), file, where, key).reshape(NUM_COCO_HAND_KEYPOINTS, 3)


def _fit(entry: Any, file: str, where: str) -> tuple[ManoParams, np.ndarray, np.ndarray]:
    """One hand's {mano_param, cam_param} -> (ManoParams, focal (2,), princpt (2,))."""
    mano = ManoParams.parse(field_value(entry, "mano_param", file, where, dict), file, where)
    cam = field_value(entry, "cam_param", file, where, dict)
    focal = field_array(field_value(cam, "focal", file, where, list), (2,), file, where, "focal")
    princpt = field_array(field_value(cam, "princpt", file, where, list), (2,), file, where, "princpt")
    if not (focal > 0).all():
        raise DataFormatError(f"{file}: {where}: field 'focal' must be positive, got {focal.tolist()}")
    return mano, focal, princpt


class _Index:
    """The kept people of a split as flat arrays (parsed once; cheap to share with workers)."""

    def __init__(self, n: int):
        self.aid = np.zeros(n, dtype=np.int64)
        self.image_id = np.zeros(n, dtype=np.int64)
        self.file_name: list[str] = []
        self.size = np.zeros((n, 2), dtype=np.int64)  # (H, W)
        self.body_box = np.zeros((n, 4), dtype=np.float32)  # x0, y0, x1, y1
        self.flag = np.zeros((n, 2), dtype=bool)  # <hand>_valid, (right, left)
        self.has_box = np.zeros((n, 2), dtype=bool)
        self.box = np.zeros((n, 2, 4), dtype=np.float32)
        self.kpts = np.zeros((n, 2, NUM_JOINTS, 2), dtype=np.float32)  # our order
        self.kpts_valid = np.zeros((n, 2, NUM_JOINTS), dtype=bool)
        self.has_fit = np.zeros((n, 2), dtype=bool)
        self.pose = np.zeros((n, 2, 48), dtype=np.float32)
        self.shape = np.zeros((n, 2, 10), dtype=np.float32)
        self.trans = np.zeros((n, 2, 3), dtype=np.float32)
        self.focal = np.zeros((n, 2, 2), dtype=np.float32)
        self.princpt = np.zeros((n, 2, 2), dtype=np.float32)


def load_people(path: Path) -> _Index:
    """Parse and validate a COCO-WholeBody file into the kept people (see the module docstring).

    Errors name the file, the annotation (or image) and the field."""
    data = load_json(path, "COCO-WholeBody annotation file", CARD)
    file = path.name
    images: dict[int, tuple[str, int, int]] = {}
    for n, img in enumerate(field_value(data, "images", file, "", list)):
        image_id = field_value(img, "id", file, f"images[{n}]", int)
        where = f"image {image_id}"
        images[image_id] = (
            field_value(img, "file_name", file, where, str),
            field_value(img, "height", file, where, int),
            field_value(img, "width", file, where, int),
        )
    kept: list[tuple] = []
    seen: set[int] = set()
    for n, ann in enumerate(field_value(data, "annotations", file, "", list)):
        aid = field_value(ann, "id", file, f"annotations[{n}]", int)
        where = f"annotation {aid}"
        if aid in seen:
            raise DataFormatError(f"{file}: {where}: duplicate annotation id")
        seen.add(aid)
        image_id = field_value(ann, "image_id", file, where, int)
        if image_id not in images:
            raise DataFormatError(f"{file}: {where}: field 'image_id' is {image_id}, which is not the id of any entry in 'images'")
        crowd = field_value(ann, "iscrowd", file, where, (int, bool))
        if crowd or field_value(ann, "num_keypoints", file, where, int) == 0:
            continue
        flags = [field_value(ann, f"{key}_valid", file, where, bool) for key in HAND_KEYS]
        if not any(flags):
            continue
        file_name, height, width = images[image_id]
        body = clip_box(field_array(field_value(ann, "bbox", file, where, list), (4,), file, where, "bbox"), width, height)
        if body is None:
            continue
        boxes = []
        for key, flag in zip(HAND_KEYS, flags):
            box = field_array(field_value(ann, f"{key}_box", file, where, list), (4,), file, where, f"{key}_box")
            boxes.append(clip_box(box, width, height) if flag else None)
        kpts = [_keypoints(ann, f"{key}_kpts", file, where)[list(COCO_TO_OURS)] for key in HAND_KEYS]
        kept.append((aid, image_id, file_name, (height, width), body, flags, boxes, kpts))

    index = _Index(len(kept))
    for i, (aid, image_id, file_name, size, body, flags, boxes, kpts) in enumerate(kept):
        index.aid[i], index.image_id[i], index.size[i], index.body_box[i] = aid, image_id, size, body
        index.file_name.append(file_name)
        for hand in range(2):
            index.flag[i, hand] = flags[hand]
            if boxes[hand] is not None:
                index.has_box[i, hand], index.box[i, hand] = True, boxes[hand]
            valid = kpts[hand][:, 2] > 0
            index.kpts_valid[i, hand] = valid
            index.kpts[i, hand] = np.where(valid[:, None], kpts[hand][:, :2], 0.0)
    return index


def load_fits(path: Path, index: _Index) -> None:
    """Fill the index's MANO fits from a NeuralAnnot file; entries of people not kept are skipped
    unread, a kept person without an entry has no fit."""
    data = load_json(path, "MSCOCO MANO fits file", CARD)
    file = path.name
    if not isinstance(data, dict):
        raise DataFormatError(f"{file}: expected an object keyed by annotation id, got {type(data).__name__}; {card_hint(CARD)}")
    for i, aid in enumerate(index.aid.tolist()):
        entry = data.get(str(aid))
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise DataFormatError(f"{file}: annotation {aid}: expected an object with 'right' and 'left', got {type(entry).__name__}")
        for hand, side in enumerate(SIDES):
            if entry.get(side) is None:
                continue
            mano, focal, princpt = _fit(entry[side], file, f"annotation {aid} hand '{side}'")
            index.has_fit[i, hand] = True
            index.pose[i, hand], index.shape[i, hand], index.trans[i, hand] = mano.pose, mano.shape, mano.trans
            index.focal[i, hand], index.princpt[i, hand] = focal, princpt


# --------------------------------------------------------------------------------------- reader


@register_dataset_rules("mscoco", rel_from="mesh", joints_from="mesh")
def _select_mscoco(gt: dict) -> torch.Tensor:
    """No MRRPE / RRVE sample: the two hands' fits come from separate per-hand cameras, so their
    relative placement is not annotated (InterWild sets rel_trans_valid to 0 for MSCOCO). MPVPE and
    MPJPE (wrist-aligned) count the hands with a fit, against the pseudo-ground-truth; without fits
    no metric of handrecon.metrics is defined (the labels are 2D)."""
    return torch.zeros(gt["mesh_valid"].shape[0], dtype=torch.bool)


# InterWild scores MSCOCO val per person (hand box IoU)
register_dataset("mscoco", reader="mscoco", rules="mscoco", card="datasets/mscoco.md", crop="person")


@register_reader("mscoco")
class MSCOCOReader(BaseReader):
    """MSCOCO-WholeBody as samples (pixels for 2D; metres, camera frame for the MANO fits).

    Per hand: joints2d are the annotated keypoints, joints2d_valid where the score is > 0;
    joints_valid is False and joints3d zero (no 3D annotation); boxes are the annotated hand boxes
    clipped to the image (zeros for a hand without one). With a fit: mano_valid = mesh_valid, the
    parameters and mesh in the sample's camera. The sample's camera is the fit camera of its first
    fitted hand (right first), else `nominal_camera`. A second fit with another camera is moved
    into the sample's camera by `camera_change` (a turn about the camera centre and a depth scale):
    its projection matches that of its own camera to first order (hundredths of a pixel at
    NeuralAnnot's focal lengths), and its hand pose is unchanged.

    Args:
        root: folder holding images/ and annotations/ (datasets/mscoco.md).
        split: 'train' or 'val'.
        crop: 'person' (default): one sample per kept person with both hands, sample_id
            str(annotation id), hand_type from the hands' valid flags ('interacting' when both
            are set): InterWild's training samples. 'hand': one sample per hand that has a box,
            sample_id '<annotation id>_<right|left>', only that hand labelled and hand_type its
            side, so a crop around the sample's boxes frames that hand (the generator and its
            hand-crop metrics).
        mano_fits: 'auto' (default): fits_file(root, split) when it exists (the release has one
            for train only); 'none': no fits; or the path of a NeuralAnnot fits file.
        require_fit: keep only samples with a MANO fit: with crop 'hand', hands with a fit; with
            'person', people with a fit for at least one hand. For the generator, whose condition is
            the rendered mesh (a hand without a fit would train on an empty condition); AttentionHand
            renders only fitted hands. Default False (InterWild trains on 2D-only hands too).
        labels: 'full' or 'mano' (meshes left to `labels_from_mano`; see `BaseReader`). A second
            fit with another camera still runs one MANO forward per item for `camera_change`.
    """

    source = "mscoco"
    card = CARD
    splits = SPLITS

    def __init__(
        self,
        root: str | Path,
        split: str,
        hand_model: HandModel,
        load_images: bool = True,
        crop: str = "person",
        mano_fits: str | Path = "auto",
        require_fit: bool = False,
        labels: str = "full",
    ):
        super().__init__(root, split, hand_model, load_images, labels)
        if crop not in CROPS:
            raise DataFormatError(f"MSCOCO: crop must be one of {', '.join(CROPS)}, got {crop!r}")
        self.crop = crop
        require_dir(self.root, "MSCOCO root folder", CARD)
        self.people = load_people(annotation_file(self.root, split))
        self.fits_path = self._fits_path(mano_fits)
        if self.fits_path is not None:
            load_fits(self.fits_path, self.people)
        p = self.people
        if require_fit and self.fits_path is None:
            raise DataFormatError(f"MSCOCO: require_fit is set but there is no MANO fits file for split {split!r}; {card_hint(CARD)}")
        if crop == "person":
            person = np.nonzero(p.has_fit.any(1))[0] if require_fit else np.arange(len(p.aid))
            self._person, self._hand = person, np.full(len(person), -1)
            self._ids = [str(a) for a in p.aid[person].tolist()]
        else:
            person, hand = np.nonzero(p.has_box & p.has_fit if require_fit else p.has_box)  # row-major: a person's right hand, then its left
            self._person, self._hand = person, hand
            self._ids = [f"{p.aid[i]}_{SIDES[h]}" for i, h in zip(person.tolist(), hand.tolist())]

    def _fits_path(self, mano_fits: str | Path) -> Path | None:
        if str(mano_fits) == "none":
            return None
        if str(mano_fits) == "auto":
            path = fits_file(self.root, self.split)
            return path if path.is_file() else None
        path = Path(mano_fits)
        if not path.is_file():
            raise DataFormatError(f"MSCOCO MANO fits file not found: {path} (mano_fits='auto' or 'none' to go without); {card_hint(CARD)}")
        return path

    def _hand_type(self, i: int) -> str:
        person, hand = self._person[i], self._hand[i]
        if hand >= 0:
            return SIDES[hand]
        right, left = self.people.flag[person]
        return "interacting" if right and left else ("right" if right else "left")

    def _meta(self, i: int) -> dict:
        p, person = self.people, self._person[i]
        return {
            "sample_id": self._ids[i],
            "source": self.source,
            "image_path": str(image_file(self.root, self.split, p.file_name[person])),
            "image_size": tuple(int(v) for v in p.size[person]),
            "hand_type": self._hand_type(i),
            "annotation_id": int(p.aid[person]),
            "image_id": int(p.image_id[person]),
            "body_box": p.body_box[person].copy(),
        }

    @torch.no_grad()
    def _labels(self, i: int) -> dict:
        p, person = self.people, self._person[i]
        hands = [self._hand[i]] if self._hand[i] >= 0 else [0, 1]
        size = tuple(int(v) for v in p.size[person])
        fitted = [h for h in hands if p.has_fit[person, h]]
        focal, princpt = (p.focal[person, fitted[0]], p.princpt[person, fitted[0]]) if fitted else nominal_camera(size)
        path = image_file(self.root, self.split, p.file_name[person])
        sample = new_sample(self._ids[i], self.source, path, size, focal, princpt, self._hand_type(i))
        for hand in hands:
            put_hand(
                sample, hand,
                joints2d=p.kpts[person, hand], joints2d_valid=p.kpts_valid[person, hand], boxes=p.box[person, hand],
            )  # fmt: skip
            if hand in fitted:
                self._put_fit(sample, person, hand)
        return sample

    def _put_fit(self, sample: dict, person: int, hand: int) -> None:
        p, side = self.people, SIDES[hand]
        pose, shape, trans = p.pose[person, hand], p.shape[person, hand], p.trans[person, hand]
        focal, princpt = p.focal[person, hand], p.princpt[person, hand]
        rot, shift = np.eye(3), np.zeros(3)
        if not (np.array_equal(focal, sample["focal"]) and np.array_equal(princpt, sample["princpt"])):
            t = lambda a: torch.as_tensor(a)[None]  # noqa: E731
            wrist = self.hand_model.hand(side, t(shape), t(pose[:3]), t(pose[3:]), t(trans)).joints[0, 0].double().numpy()
            rot, shift = camera_change(wrist, focal, princpt, sample["focal"], sample["princpt"])
        mesh = self.label_mode == "full"
        pose, transl, verts, _ = mano_in_camera(self.hand_model, side, pose, shape, trans, rot, shift, mesh=mesh)
        put_hand(sample, hand, mano_pose=pose, mano_shape=shape, mano_transl=transl, mano_valid=True, mesh_valid=True)
        put_hand(sample, hand, **({"verts": verts} if mesh else {"mesh_pending": True}))


def camera_change(wrist: np.ndarray, focal_from: np.ndarray, princpt_from: np.ndarray, focal: np.ndarray, princpt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rot (3, 3), trans (3,)), X' = rot X + trans, moving a hand seen by the pinhole camera
    (focal_from, princpt_from) into the camera (focal, princpt) of the same image: the hand turns
    about the camera centre so that its wrist's viewing ray becomes that of the wrist's pixel in the
    new camera, and its wrist depth scales by mean(focal) / mean(focal_from). The wrist lands on the
    same pixel and the rest of the hand on the same pixels to first order in the hand's extent over
    its distance. Identity for the same camera."""
    focal_from, princpt_from = np.asarray(focal_from, np.float64), np.asarray(princpt_from, np.float64)
    focal, princpt = np.asarray(focal, np.float64), np.asarray(princpt, np.float64)
    if np.array_equal(focal_from, focal) and np.array_equal(princpt_from, princpt):
        return np.eye(3), np.zeros(3)
    pixel = project(wrist[None], focal_from, princpt_from)[0]
    ray_from, ray_to = (np.append((pixel - c) / f, 1.0) for f, c in ((focal_from, princpt_from), (focal, princpt)))
    rot = _rotation_between(ray_from / np.linalg.norm(ray_from), ray_to / np.linalg.norm(ray_to))
    moved = unproject(pixel[None], np.array([wrist[2] * focal.mean() / focal_from.mean()]), focal, princpt)[0]
    return rot, moved - rot @ wrist


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation about a x b taking unit vector a to unit vector b (a and b not opposite)."""
    axis, cos = np.cross(a, b), float(a @ b)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + cos)


__all__ = [
    "CROPS",
    "IMAGE_FOLDERS",
    "MSCOCOReader",
    "annotation_file",
    "camera_change",
    "clip_box",
    "fits_file",
    "image_file",
    "load_fits",
    "load_people",
    "nominal_camera",
]
