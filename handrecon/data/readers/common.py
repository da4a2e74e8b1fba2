"""Helpers shared by the dataset readers: checked JSON and array loading, projection, boxes,
images, and the base `Dataset` every reader derives from. The pinhole projection is
`handrecon.camera.project` (its default policy gives pixel (0, 0) for points at or behind the camera,
as the fisheye model here does).

Units: 3D points in metres unless a name says mm; pixels for 2D; image coordinates follow
`handrecon.data.sample` (pixel centre of column c, row r at x=c, y=r).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ...errors import UserError
from ...hand_model.constants import NUM_JOINTS, NUM_VERTS
from ...hand_model.mano import SIDES, HandModel
from ..sample import HAND_TYPES, check_label_mode, empty_sample

# Hand boxes: the tight box of the hand's points, grown about its centre by this factor
# (InterWild's extend_ratio for hand boxes), then clipped to the image.
BOX_EXTEND = 1.2
# A box is never thinner than this many pixels (a hand seen through a single joint).
BOX_MIN_SIZE = 2.0


class DataFormatError(UserError):
    """A dataset file is missing or holds a field with the wrong shape, type or value.

    The message names the file, the record (capture / frame / annotation id ...) and the field,
    shows the offending value, and says where the dataset card is.
    """


def card_hint(card: str) -> str:
    """The sentence pointing users at a dataset card, e.g. card='interhand26m'."""
    return f"see datasets/{card}.md for the expected layout and how to obtain the files"


def require_dir(path: Path, what: str, card: str) -> Path:
    """`path` if it is a directory, else a DataFormatError saying what belongs there."""
    if not path.is_dir():
        raise DataFormatError(f"{what} not found: {path} is not a directory; {card_hint(card)}")
    return path


def require_file(path: Path, what: str, card: str) -> Path:
    """`path` if it is a file, else a DataFormatError saying what belongs there."""
    if not path.is_file():
        raise DataFormatError(f"{what} not found: expected the file {path}; {card_hint(card)}")
    return path


def load_json(path: Path, what: str, card: str) -> Any:
    """Parse a JSON file; a missing file or invalid JSON is a DataFormatError naming the path."""
    require_file(path, what, card)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {card_hint(card)}") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not a UTF-8 JSON text file ({exc}); {card_hint(card)}") from exc


def _shape_text(shape: Sequence[int]) -> str:
    if len(shape) == 1:
        return f"a list of {shape[0]} numbers"
    return "x".join(str(s) for s in shape)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_array(
    value: Any, shape: Sequence[int], file: str, where: str, field: str, dtype: type = np.float64, finite: bool = True
) -> np.ndarray:
    """`value` as an array of exactly `shape`, else a DataFormatError naming file, record and field.

    `file` is the file name shown, `where` the record inside it (e.g. "capture '0' camera '400262'").
    Shapes that differ only by singleton axes of the same size (42 vs 42x1) are accepted.
    """
    prefix = f"{file}: {where}: " if where else f"{file}: "
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise DataFormatError(f"{prefix}field '{field}' must be {_shape_text(shape)} (numbers), got {_short(value)}") from None
    if arr.shape != tuple(shape):
        if arr.size == int(np.prod(shape)) and tuple(s for s in arr.shape if s != 1) == tuple(s for s in shape if s != 1):
            arr = arr.reshape(shape)
        else:
            raise DataFormatError(f"{prefix}field '{field}' must be {_shape_text(shape)}, got shape {arr.shape}: {_short(value)}")
    if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataFormatError(f"{prefix}field '{field}' has non-finite values: {_short(value)}")
    return arr


def field_value(record: Any, key: str, file: str, where: str, kinds: type | tuple[type, ...]) -> Any:
    """record[key] checked to be one of `kinds`, else a DataFormatError naming file, record and field."""
    prefix = f"{file}: {where}: " if where else f"{file}: "
    if not isinstance(record, dict):
        raise DataFormatError(f"{prefix}expected an object with field '{key}', got {type(record).__name__}: {_short(record)}")
    if key not in record:
        raise DataFormatError(f"{prefix}missing field '{key}' (found: {', '.join(sorted(map(str, record))) or 'none'})")
    value = record[key]
    names = kinds if isinstance(kinds, tuple) else (kinds,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in names)
    if not ok:
        wanted = " or ".join(k.__name__ for k in names)
        raise DataFormatError(f"{prefix}field '{key}' must be {wanted}, got {type(value).__name__}: {_short(value)}")
    return value


def project_fisheye(points: np.ndarray, focal: np.ndarray, princpt: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points -> (N, 2) pixels by the equidistant fisheye model with
    coefficients dist = (k1, k2, k3, k4): theta_d = theta (1 + k1 t^2 + k2 t^4 + k3 t^6 + k4 t^8)."""
    z = points[:, 2:3]
    safe = np.where(z > 1e-9, z, 1.0)
    xy = points[:, :2] / safe
    r = np.linalg.norm(xy, axis=1, keepdims=True)
    theta = np.arctan(r)
    theta_d = theta * (1 + dist[0] * theta**2 + dist[1] * theta**4 + dist[2] * theta**6 + dist[3] * theta**8)
    scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
    uv = xy * scale * focal + princpt
    return np.where(z > 1e-9, uv, 0.0)


def inside_image(points2d: np.ndarray, image_size: Sequence[int]) -> np.ndarray:
    """(N,) bool: the point lies in the image area [0, W) x [0, H); image_size is (H, W)."""
    h, w = image_size
    return (points2d[:, 0] >= 0) & (points2d[:, 0] < w) & (points2d[:, 1] >= 0) & (points2d[:, 1] < h)


def box_from_points(points2d: np.ndarray, valid: np.ndarray, image_size: Sequence[int], extend: float = BOX_EXTEND) -> np.ndarray:
    """Box x0, y0, x1, y1 (pixels) around the valid points, grown by `extend` about its centre,
    at least BOX_MIN_SIZE wide and high, clipped to [0, W] x [0, H]; zeros when no point is valid."""
    pts = points2d[np.asarray(valid, dtype=bool)]
    if len(pts) == 0:
        return np.zeros(4, dtype=np.float32)
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    half = np.maximum((hi - lo) * extend, BOX_MIN_SIZE) / 2
    h, w = image_size
    box = np.concatenate([centre - half, centre + half])
    box = np.clip(box, 0, [w, h, w, h])
    return box.astype(np.float32)


def boxes_from_points(points: torch.Tensor, valid: torch.Tensor, image_size: torch.Tensor, extend: float = BOX_EXTEND) -> torch.Tensor:
    """`box_from_points` over a batch in torch, the same rule and (in float64) the same numbers:
    points (..., N, 2) pixels, valid (..., N) bool, image_size (..., 2) as (H, W) -> (..., 4) boxes
    in the points' dtype; zeros where no point is valid."""
    big = torch.finfo(points.dtype).max
    mask = valid[..., None]
    lo = torch.where(mask, points, big).amin(-2)
    hi = torch.where(mask, points, -big).amax(-2)
    centre = (lo + hi) / 2
    half = torch.clamp((hi - lo) * extend, min=BOX_MIN_SIZE) / 2
    size = image_size.to(points.dtype)
    upper = torch.stack([size[..., 1], size[..., 0]], -1)  # (W, H)
    box = torch.cat([centre - half, centre + half], -1)
    box = torch.minimum(torch.clamp(box, min=0), torch.cat([upper, upper], -1))
    return torch.where(valid.any(-1, keepdim=True), box, torch.zeros((), dtype=box.dtype, device=box.device))


def image_size_of(path: Path, card: str) -> tuple[int, int]:
    """(H, W) of an image file from its header (no pixel decoding)."""
    require_file(path, "image", card)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as exc:
        raise DataFormatError(f"{path}: not a readable image ({exc})") from exc
    return h, w


def load_image(path: str | Path, card: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB, a new writable array (decoded once, copied once)."""
    try:
        with Image.open(path) as im:
            return np.array(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    except (FileNotFoundError, IsADirectoryError):
        require_file(Path(path), "image", card)  # the missing-file message
        raise
    except OSError as exc:
        raise DataFormatError(f"{path}: not a readable image ({exc})") from exc


@torch.no_grad()
def mano_to_camera(
    hand_model: HandModel, side: str, pose: np.ndarray, shape: np.ndarray, transl: np.ndarray, rot: np.ndarray, trans: np.ndarray,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """World-frame MANO parameters of M hands of one side (pose (M, 48) axis-angle with global
    orient first, shape (M, 10), transl (M, 3) m) seen by cameras X_cam = rot X + trans (rot
    (M, 3, 3), trans (M, 3) m), in float32 through `HandModel.to_camera`, `chunk` hands at a time.

    Returns (pose_cam (M, 48), transl_cam (M, 3)) float32; the hand pose (pose[:, 3:]) is
    unchanged, only the global orient turns.
    """
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    pose = np.asarray(pose, dtype=np.float32).reshape(-1, 48)
    pose_cam, transl_cam = pose.copy(), np.zeros((len(pose), 3), dtype=np.float32)
    for lo in range(0, len(pose), chunk):
        part = slice(lo, lo + chunk)
        orient, transl_part = hand_model.to_camera(side, t(pose[part, :3]), t(shape[part]), t(transl[part]), t(rot[part]), t(trans[part]))
        pose_cam[part, :3] = orient.numpy()
        transl_cam[part] = transl_part.numpy()
    return pose_cam, transl_cam


@torch.no_grad()
def mano_in_camera(
    hand_model: HandModel, side: str, pose: np.ndarray, shape: np.ndarray, transl: np.ndarray, rot: np.ndarray, trans: np.ndarray,
    mesh: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """World-frame MANO parameters of one hand (pose (48,) axis-angle with global orient first,
    shape (10,), transl (3,) m) seen by a camera X_cam = rot X + trans (trans in metres).

    Returns (pose_cam (48,), transl_cam (3,), verts (778, 3) m, joints (21, 3) m), all in the
    camera frame; the hand pose (pose[3:]) is unchanged, only the global orient turns. With
    mesh=False no MANO forward runs and verts and joints are None.
    """
    pose_cam, transl_cam = mano_to_camera(hand_model, side, pose, np.asarray(shape)[None], np.asarray(transl)[None], np.asarray(rot)[None],
                                          np.asarray(trans)[None])  # fmt: skip
    if not mesh:
        return pose_cam[0], transl_cam[0], None, None
    t = lambda a: torch.as_tensor(a)[None]  # noqa: E731
    out = hand_model.hand(side, t(np.asarray(shape, dtype=np.float32)), t(pose_cam[0, :3]), t(pose_cam[0, 3:]), t(transl_cam[0]))
    return pose_cam[0], transl_cam[0], out.vertices[0].numpy(), out.joints[0].numpy()


@torch.no_grad()
def put_mano_meshes(sample: dict, hand_model: HandModel) -> None:
    """Fill `verts` of every hand with MANO parameters (mano_valid) from its camera-frame
    parameters: one MANO forward per hand (the per-item path of labels="full")."""
    for hand, side in enumerate(SIDES):
        if sample["mano_valid"][hand]:
            t = lambda a: torch.as_tensor(a)[None]  # noqa: E731
            pose = sample["mano_pose"][hand]
            out = hand_model.hand(side, t(sample["mano_shape"][hand]), t(pose[:3]), t(pose[3:]), t(sample["mano_transl"][hand]))
            put_hand(sample, hand, verts=out.vertices[0].numpy())


def put_hand(sample: dict, hand: int, **fields: np.ndarray) -> None:
    """Write one hand's slice of the sample arrays: hand 0 = right, 1 = left.

    Keys: mano_pose (48,), mano_shape (10,), mano_transl (3,), verts (778, 3), joints3d (21, 3),
    joints2d (21, 2), joints_valid (21,), joints2d_valid (21,), boxes (4,), mano_valid / mesh_valid /
    mesh_pending / joints_pending (bool). joints2d_valid defaults to joints_valid (a 3D label comes
    with its 2D label).
    """
    joint_slice = slice(hand * NUM_JOINTS, (hand + 1) * NUM_JOINTS)
    vert_slice = slice(hand * NUM_VERTS, (hand + 1) * NUM_VERTS)
    if "joints_valid" in fields and "joints2d_valid" not in fields:
        fields["joints2d_valid"] = fields["joints_valid"]
    for key, value in fields.items():
        if key == "verts":
            sample[key][vert_slice] = value
        elif key in ("joints3d", "joints2d", "joints_valid", "joints2d_valid"):
            sample[key][joint_slice] = value
        else:
            sample[key][hand] = value


def new_sample(
    sample_id: str, source: str, image_path: Path, image_size: Sequence[int], focal: np.ndarray, princpt: np.ndarray, hand_type: str
) -> dict:
    """An empty sample (see `handrecon.data.sample`) with the camera and image fields filled."""
    sample = empty_sample(sample_id, source)
    sample["image_path"] = str(image_path)
    sample["image_size"] = np.asarray(image_size, dtype=np.int64)
    sample["focal"] = np.asarray(focal, dtype=np.float32)
    sample["princpt"] = np.asarray(princpt, dtype=np.float32)
    sample["hand_type"] = hand_type
    return sample


def coco_annotation_keys(ann: Any, images: Mapping[int, Any], file: str, where: str) -> tuple[int, str]:
    """The checked `image_id` (must name an entry of `images`) and `hand_type` of a COCO-style
    annotation (InterHand2.6M data.json, HIC.json)."""
    image_id = field_value(ann, "image_id", file, where, int)
    if image_id not in images:
        raise DataFormatError(f"{file}: {where}: field 'image_id' is {image_id}, which is not the id of any entry in 'images'")
    hand_type = field_value(ann, "hand_type", file, where, str)
    if hand_type not in HAND_TYPES:
        raise DataFormatError(f"{file}: {where}: field 'hand_type' must be one of {', '.join(HAND_TYPES)}, got {hand_type!r}")
    return image_id, hand_type


class BaseReader(torch.utils.data.Dataset):
    """A dataset in its release format, indexed at construction, meshes computed per item.

    Subclasses set `source` and `card`, fill `self._ids` in `__init__`, and implement
    `_meta(i)` (cheap: no image, no MANO) and `_labels(i)` (the full sample without the image).
    `__getitem__` returns a sample dict exactly per `handrecon.data.sample` (metres, camera frame).

    `labels`: "full" (default) fills every label per item, meshes included; "mano" (the training
    loader) leaves the mesh of each hand with MANO parameters pending (`mesh_pending`) for the
    batched `handrecon.data.labels.labels_from_mano`, so an item runs no MANO forward.
    """

    source: ClassVar[str] = ""
    card: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: str | Path, split: str, hand_model: HandModel, load_images: bool = True, labels: str = "full"):
        super().__init__()
        if self.splits and split not in self.splits:
            raise DataFormatError(f"{type(self).__name__}: split must be one of {', '.join(self.splits)}, got {split!r}")
        self.root = Path(root).absolute()  # image_path in samples is absolute
        self.split = split
        self.hand_model = hand_model
        self.load_images = load_images
        self.label_mode = check_label_mode(labels)
        self._ids: list[str] = []

    @property
    def ids(self) -> list[str]:
        """sample_id of every item, in index order."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def _check_index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return i % len(self)

    def get_meta(self, i: int) -> dict:
        """Cheap facts of item i without loading the image or running MANO: sample_id, source,
        image_path, hand_type and reader-specific keys (capture, camera, frame ...)."""
        return self._meta(self._check_index(i))

    def __getitem__(self, i: int) -> dict:
        i = self._check_index(i)
        sample = self._labels(i)
        if self.load_images:
            image = load_image(sample["image_path"], self.card)
            if tuple(image.shape[:2]) != tuple(sample["image_size"]):
                raise DataFormatError(
                    f"{sample['image_path']}: image is {image.shape[1]}x{image.shape[0]} (WxH) but the annotation says "
                    f"{sample['image_size'][1]}x{sample['image_size'][0]}"
                )
            sample["image"] = image
        return sample

    def _meta(self, i: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _labels(self, i: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class ManoParams:
    """One hand's MANO parameters as the releases store them (InterHand2.6M MANO_NeuralAnnot,
    Re:InterHand mano_fits): pose (48,) axis-angle, global orient first, the 15 joint rotations
    relative to MANO's mean hand (flat_hand_mean=False); shape (10,) betas; trans (3,) metres.
    World frame."""

    pose: np.ndarray
    shape: np.ndarray
    trans: np.ndarray

    @classmethod
    def parse(cls, value: Any, file: str, where: str) -> "ManoParams":
        """From a {'pose', 'shape', 'trans'} JSON object; DataFormatError naming the field otherwise."""
        return cls(
            pose=field_array(field_value(value, "pose", file, where, list), (48,), file, where, "pose"),
            shape=field_array(field_value(value, "shape", file, where, list), (10,), file, where, "shape"),
            trans=field_array(field_value(value, "trans", file, where, list), (3,), file, where, "trans"),
        )

    def to_json(self) -> dict:
        return {k: np.asarray(getattr(self, k), float).tolist() for k in ("pose", "shape", "trans")}

    def equals(self, other: "ManoParams | None") -> bool:
        return other is not None and all(np.array_equal(getattr(self, k), getattr(other, k)) for k in ("pose", "shape", "trans"))


__all__ = [
    "BOX_EXTEND",
    "BaseReader",
    "DataFormatError",
    "ManoParams",
    "box_from_points",
    "boxes_from_points",
    "card_hint",
    "field_array",
    "field_value",
    "image_size_of",
    "inside_image",
    "load_image",
    "load_json",
    "mano_in_camera",
    "mano_to_camera",
    "new_sample",
    "project_fisheye",
    "put_hand",
    "put_mano_meshes",
    "require_dir",
    "require_file",
]
