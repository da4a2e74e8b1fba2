"""Re:InterHand (Mugsy cameras, per-frame environment maps): reader and fixture writer helpers.

Layout, one folder per capture under `root` (or under root/data, as InterWild keeps it); see
datasets/reinterhand.md::

    <capture_id>/Mugsy_cameras/cam_params.json          {cam: {R 3x3, t [3] mm, focal [2], princpt [2], D [4]?}}
    <capture_id>/Mugsy_cameras/envmap_per_frame/images/<cam>/<frame:06d>.png
    <capture_id>/orig_fits/{right,left}/Keypoints/keypoint-<frame:06d>.json   24x3 world mm
    <capture_id>/mano_fits/params/<frame>_{right,left}.json                   {pose 48, shape 10, trans 3}

World to camera is X_cam = R X + t (t in mm), unlike InterHand2.6M's R (X - campos). The frames of
a camera are the images present: the per-frame environment-map renders exist at 5 fps only, so
frame_list.txt (30 fps) must not be used (InterWild issue #27). Test split = the three captures in
TEST_CAPTURES; train = every other capture folder.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...camera import project
from ...hand_model.constants import JOINT_NAMES
from ...hand_model.mano import SIDES, HandModel
from . import register_dataset, register_reader
from .common import (
    BaseReader,
    DataFormatError,
    ManoParams,
    box_from_points,
    card_hint,
    field_array,
    field_value,
    image_size_of,
    inside_image,
    load_json,
    mano_in_camera,
    new_sample,
    project_fisheye,
    put_hand,
    require_dir,
)

CARD = "reinterhand"
SPLITS = ("train", "test")
ON_MISSING = ("error", "skip")
TEST_CAPTURES = (
    "m--20221215--0949--RNS217--pilot--ProjectGoliathScript--Hands--two-hands",
    "m--20221216--0953--NKC880--pilot--ProjectGoliathScript--Hands--two-hands",
    "m--20230317--1130--QZX685--pilot--ProjectGoliath--Hands--two-hands",
)
# The 24 keypoints per hand of orig_fits, in file order (InterWild's ReInterHand joint set).
REIH_JOINT_NAMES = (
    "wrist",
    "thumb0", "thumb1", "thumb2", "thumb3", "thumb4",
    "index1", "index2", "index3", "index4",
    "middle1", "middle2", "middle3", "middle4",
    "ring1", "ring2", "ring3", "ring4",
    "pinky0", "pinky1", "pinky2", "pinky3", "pinky4",
    "forearm_stub",
)  # fmt: skip
NUM_REIH_JOINTS = len(REIH_JOINT_NAMES)
# joints_ours[i] = keypoints[REIH_TO_OURS[i]] per hand; thumb0, pinky0 and the forearm stub are dropped.
REIH_TO_OURS = tuple(REIH_JOINT_NAMES.index(name) for name in JOINT_NAMES)
_FRAME_IMAGE = re.compile(r"^(\d+)\.png$")


def camera_file(capture_dir: Path) -> Path:
    return capture_dir / "Mugsy_cameras" / "cam_params.json"


def image_file(capture_dir: Path, cam: str, frame: int) -> Path:
    return capture_dir / "Mugsy_cameras" / "envmap_per_frame" / "images" / cam / f"{frame:06d}.png"


def keypoint_file(capture_dir: Path, side: str, frame: int) -> Path:
    return capture_dir / "orig_fits" / side / "Keypoints" / f"keypoint-{frame:06d}.json"


def mano_file(capture_dir: Path, side: str, frame: int) -> Path:
    return capture_dir / "mano_fits" / "params" / f"{frame}_{side}.json"


@dataclass
class ReIHCamera:
    """R (3, 3) and t (3,) mm with X_cam = R X_world + t; focal, princpt (2,) pixels; D (4,)
    equidistant fisheye coefficients or None for a pinhole camera."""

    R: np.ndarray
    t: np.ndarray
    focal: np.ndarray
    princpt: np.ndarray
    D: np.ndarray | None = None

    def to_json(self) -> dict:
        out = {k: np.asarray(getattr(self, k), float).tolist() for k in ("R", "t", "focal", "princpt")}
        if self.D is not None:
            out["D"] = np.asarray(self.D, float).tolist()
        return out


def parse_cameras(path: Path) -> dict[str, ReIHCamera]:
    """cam_params.json -> {camera name: ReIHCamera}; errors name the file, camera and field."""
    data = load_json(path, "Re:InterHand camera file", CARD)
    name = f"{path.parent.parent.name}/Mugsy_cameras/cam_params.json"
    if not isinstance(data, dict) or not data:
        raise DataFormatError(f"{name}: expected an object keyed by camera name, got {type(data).__name__}: {str(data)[:60]}")
    cams = {}
    for cam, entry in data.items():
        where = f"camera '{cam}'"
        arr = lambda key, shape: field_array(field_value(entry, key, name, where, list), shape, name, where, key)  # noqa: E731
        dist = arr("D", (4,)) if isinstance(entry, dict) and entry.get("D") is not None else None
        cams[cam] = ReIHCamera(R=arr("R", (3, 3)), t=arr("t", (3,)), focal=arr("focal", (2,)), princpt=arr("princpt", (2,)), D=dist)
    return cams


@dataclass
class _Item:
    capture: str
    cam: str
    frame: int


def _list_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


register_dataset("reih", reader="reih", rules="reih", card="datasets/reinterhand.md")


@register_reader("reih")
class ReInterHandReader(BaseReader):
    """Re:InterHand as samples (metres, camera frame, our joint order). One item per (capture,
    camera, frame) whose image exists; sample_id '<capture>/<camera>/<frame:06d>'.

    hand_type is 'interacting' for every item (all captures are two-hand sequences, and the
    InterWild protocol scores every hand of every sample). joints3d: the orig_fits keypoints
    moved to the camera; joints_valid: finite keypoints (the forearm stub is not one of our 21).
    mano_valid = mesh_valid: the hand's MANO fit was read. Boxes: the valid joints inside the
    image, grown by common.BOX_EXTEND and clipped (zeros when no joint of the hand is in view).
    joints2d use the fisheye model for cameras with D, else the pinhole model.

    Args:
        root: folder of the capture folders (or its parent holding data/).
        split: 'train' or 'test' (the three TEST_CAPTURES).
        on_missing: 'error' (default) raises DataFormatError when a selected capture lacks
            annotation files for some of its images, or lacks its folder or camera file;
            'skip' leaves those images (or the capture) out with one warning per capture.
            Real releases do miss files (InterWild issue #27).
        labels: 'full' or 'mano' (meshes left to `labels_from_mano`; see `BaseReader`).
    """

    source = "reih"
    card = CARD
    splits = SPLITS

    def __init__(
        self, root: str | Path, split: str, hand_model: HandModel, load_images: bool = True, on_missing: str = "error", labels: str = "full"
    ):
        super().__init__(root, split, hand_model, load_images, labels)
        if on_missing not in ON_MISSING:
            raise DataFormatError(f"Re:InterHand: on_missing must be one of {', '.join(ON_MISSING)}, got {on_missing!r}")
        self.on_missing = on_missing
        require_dir(self.root, "Re:InterHand root folder", CARD)
        self.data_root = self.root / "data" if (self.root / "data").is_dir() else self.root
        self.cameras: dict[str, dict[str, ReIHCamera]] = {}
        self.items: list[_Item] = []
        for capture in self._captures():
            self._index_capture(capture)
        self._ids = [f"{it.capture}/{it.cam}/{it.frame:06d}" for it in self.items]
        self._sizes: dict[tuple[str, str], tuple[int, int]] = {}  # image size per camera, read on first use

    def _captures(self) -> list[str]:
        present = sorted(p.name for p in self.data_root.iterdir() if p.is_dir() and p.name != "data")
        if self.split == "test":
            for capture in TEST_CAPTURES:
                if capture not in present:
                    self._missing(capture, [self.data_root / capture], "the capture folder is missing")
            return [c for c in TEST_CAPTURES if c in present]
        chosen = [c for c in present if c not in TEST_CAPTURES]
        if not chosen:
            raise DataFormatError(f"Re:InterHand: no training capture folders in {self.data_root}; {card_hint(CARD)}")
        return chosen

    def _missing(self, capture: str, paths: list[Path], what: str, skipped: str = "") -> None:
        example = ", ".join(str(p) for p in paths[:2]) + (f" and {len(paths) - 2} more" if len(paths) > 2 else "")
        if self.on_missing == "error":
            raise DataFormatError(
                f"Re:InterHand capture {capture}: {what}: {example}. Real releases miss files (InterWild issue #27): "
                f"re-download the capture, or pass on_missing='skip' to leave these out with a warning; {card_hint(CARD)}"
            )
        warnings.warn(f"Re:InterHand capture {capture}: {what}{skipped}, e.g. {example}", stacklevel=4)

    def _index_capture(self, capture: str) -> None:
        cap_dir = self.data_root / capture
        cam_path = camera_file(cap_dir)
        if not cam_path.is_file():
            return self._missing(capture, [cam_path], "the camera file is missing, capture skipped")
        cams = parse_cameras(cam_path)
        keypoints = {side: _list_names(keypoint_file(cap_dir, side, 0).parent) for side in SIDES}
        manos = _list_names(mano_file(cap_dir, "right", 0).parent)
        kept, lacking, total = [], [], 0
        for cam in sorted(cams):
            cam_dir = image_file(cap_dir, cam, 0).parent
            frames = sorted(int(m.group(1)) for m in map(_FRAME_IMAGE.match, _list_names(cam_dir)) if m)
            for frame in frames:
                total += 1
                needed = [keypoint_file(cap_dir, s, frame) for s in SIDES if keypoint_file(cap_dir, s, frame).name not in keypoints[s]]
                needed += [mano_file(cap_dir, s, frame) for s in SIDES if mano_file(cap_dir, s, frame).name not in manos]
                if needed:
                    lacking.extend(needed)
                else:
                    kept.append(_Item(capture, cam, frame))
        if total == 0:
            return self._missing(capture, [cap_dir / "Mugsy_cameras" / "envmap_per_frame" / "images"], "no images found, capture skipped")
        if lacking:
            skipped = f" ({total - len(kept)} of {total} images skipped)"
            self._missing(capture, sorted(set(lacking)), "annotation files missing for some images", skipped)
        self.cameras[capture] = cams
        self.items.extend(kept)

    def _image_size(self, it: _Item) -> tuple[int, int]:
        key = (it.capture, it.cam)
        if key not in self._sizes:
            self._sizes[key] = image_size_of(image_file(self.data_root / it.capture, it.cam, it.frame), CARD)
        return self._sizes[key]

    def _meta(self, i: int) -> dict:
        it = self.items[i]
        return {
            "sample_id": self._ids[i],
            "source": self.source,
            "image_path": str(image_file(self.data_root / it.capture, it.cam, it.frame)),
            "hand_type": "interacting",
            "capture": it.capture,
            "camera": it.cam,
            "frame_idx": it.frame,
        }

    def _keypoints(self, path: Path) -> np.ndarray:
        """(21, 3) world mm in our order; non-finite entries mark invalid joints."""
        value = load_json(path, "Re:InterHand keypoint file", CARD)
        name = "/".join(path.parts[-5:])
        kp = field_array(value, (NUM_REIH_JOINTS, 3), name, "", "keypoints", finite=False)
        return kp[list(REIH_TO_OURS)]

    def _labels(self, i: int) -> dict:
        it = self.items[i]
        cap_dir = self.data_root / it.capture
        cam = self.cameras[it.capture][it.cam]
        size = self._image_size(it)
        sample = new_sample(self._ids[i], self.source, image_file(cap_dir, it.cam, it.frame), size, cam.focal, cam.princpt, "interacting")
        trans = cam.t / 1000.0
        for hand, side in enumerate(SIDES):
            joints_world = self._keypoints(keypoint_file(cap_dir, side, it.frame))
            valid = np.isfinite(joints_world).all(1)
            joints_cam = np.where(valid[:, None], joints_world, 0.0) / 1000.0 @ cam.R.T + trans
            if cam.D is not None:
                joints_2d = project_fisheye(joints_cam, cam.focal, cam.princpt, cam.D)
            else:
                joints_2d = project(joints_cam, cam.focal, cam.princpt)
            mask = valid[:, None]
            put_hand(
                sample, hand,
                joints3d=np.where(mask, joints_cam, 0.0), joints2d=np.where(mask, joints_2d, 0.0), joints_valid=valid,
                boxes=box_from_points(joints_2d, valid & inside_image(joints_2d, size), size),
            )  # fmt: skip
            path = mano_file(cap_dir, side, it.frame)
            mano = ManoParams.parse(load_json(path, "Re:InterHand MANO file", CARD), "/".join(path.parts[-4:]), "")
            mesh = self.label_mode == "full"
            pose, transl, verts, _ = mano_in_camera(self.hand_model, side, mano.pose, mano.shape, mano.trans, cam.R, trans, mesh=mesh)
            put_hand(sample, hand, mano_pose=pose, mano_shape=mano.shape, mano_transl=transl, mano_valid=True, mesh_valid=True)
            put_hand(sample, hand, **({"verts": verts} if mesh else {"mesh_pending": True}))
        return sample


def ours_to_reih_keypoints(joints_ours: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """(21, 3) one hand in our order -> (24, 3) in the orig_fits order; the three keypoints we do
    not have (thumb0, pinky0, forearm stub) are `fill`."""
    out = np.full((NUM_REIH_JOINTS, 3), fill, dtype=np.float64)
    out[list(REIH_TO_OURS)] = joints_ours
    return out


__all__ = [
    "REIH_JOINT_NAMES",
    "REIH_TO_OURS",
    "TEST_CAPTURES",
    "ReIHCamera",
    "ReInterHandReader",
    "camera_file",
    "image_file",
    "keypoint_file",
    "mano_file",
    "ours_to_reih_keypoints",
    "parse_cameras",
]
