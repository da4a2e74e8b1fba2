"""Training-time augmentation of samples: exact geometry as a camera change, photometry by albumentations.

Every geometric change of the image is expressed as a change of the camera that took it, so the
3D labels stay exact and the rule "joints2d == projection of joints3d with (focal, princpt)"
keeps holding after augmentation (to float32 rounding, ~1e-4 px):

* **Crop, scale, in-plane rotation, translation** are one 2D affine warp ``p' = A p + b`` (pixels,
  pixel centres at integer coordinates as cv2 and the sample layout) from the source image to
  an output of fixed size, with ``A = diag(f') R(a) diag(f)^-1``: the camera turns by ``R_z(a)``
  about its optical axis (3D points ``X' = R_z(a) X``), its focal length becomes ``f'`` and its
  principal point ``c' = A c + b``. With square pixels (fx == fy) ``A`` is ``s R(a)``, a
  similarity; otherwise the small shear of ``diag(f) R diag(f)^-1`` is what keeps labels exact.
  The image is resampled once (bilinear); crop and augmentation share that warp.
* **Horizontal flip** about ``x = (W-1)/2`` is a mirror of the camera frame ``x -> -x`` with
  ``cx -> W-1-cx``; the mirrored right hand is a valid left hand (the left MANO model is the
  mirror of the right, vertex for vertex), so the two hands swap.
* **Photometric** changes (colour jitter, blur, noise, JPEG, occlusion patches) touch the image only,
  after the warp, on the output-size image.

How each label follows (A, b: the warp; R_z: the camera roll; S = diag(-1, 1, 1): the mirror):

=============== ======================================== ============================================
label           affine warp (crop, scale, rotate, shift) horizontal flip
=============== ======================================== ============================================
image           cv2.warpAffine bilinear, constant border columns reversed (exact, no resampling)
extra_maps      cv2.warpAffine nearest, border 0         columns reversed; values NOT renamed
image_size      output size                              unchanged
focal           f' (= s f with square pixels)            unchanged
princpt         A c + b                                  (W-1-cx, cy)
verts, joints3d R_z X (zeros stay zeros)                 S X, right and left blocks swapped
joints2d        A p + b, 2D-valid joints (= projection)  (W-1-x, y), hands swapped
joints_valid    unchanged (see below)                    hands swapped
joints2d_valid  unchanged                                hands swapped
boxes           readers' rule on the new 2D joints       readers' rule on the new 2D joints
mano_pose       orient -> R_z R(orient); rest unchanged  (a, b, c) -> (a, -b, -c), 16 joints; swapped
mano_transl     exact, HandModel.to_camera               exact: t' = S (J0_src + t) - J0_dst
mano_shape      unchanged                                hands swapped
mano/mesh_valid unchanged                                hands swapped
pending flags   unchanged                                hands swapped
hand_type       unchanged                                'right' <-> 'left', 'interacting' stays
=============== ======================================== ============================================

Nothing here needs a mesh: crops frame the boxes, boxes follow the 2D joints, and MANO parameters
are mapped exactly, so a sample whose MANO-derived labels are pending (`labels="mano"`, see
`handrecon.data.sample`) is augmented as it is, and `handrecon.data.labels.labels_from_mano`
computes its mesh (and, for shards, joints and boxes) from the augmented parameters afterwards.

A joint warped out of the output stays valid: its 3D label is still right, and truncation can
be derived from joints2d and image_size where a loss needs it.

Boxes: a hand with 2D-valid joints gets ``box_from_points`` of its warped valid joints (the same
margin and clipping as the readers, clipped to the output image); a hand with a box but no
valid joint gets the bounding box of its warped box corners; a box left with no area (the hand
was warped out of the output) becomes zeros. Its 3D labels and validity are kept.

Reproducibility: call ``augmenter(sample, rng_for(seed, epoch, index, repeat))`` with the
sample's index in its dataset and the number of its earlier draws in the epoch (the DataLoader
worker's own random state is never used), so an epoch's augmentations are a pure function of
(seed, epoch, index, repeat): identical across runs, numbers of workers and resumption
mid-epoch, and different for each draw of a sample that is read more than once per epoch. Without an rng the augmenter derives one from
(seed, its ``epoch`` attribute, the sample's source and id); set the epoch with ``set_epoch``.
"""
from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass

# albumentations asks PyPI for a newer version on every import (each DataLoader worker, up to a
# 2 s timeout offline); a training job must not depend on the network. A user's own setting wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from ..config import FieldError, check_fields
from ..hand_model.constants import NUM_JOINTS, NUM_VERTS
from ..hand_model.mano import SIDES, HandModel
from .readers.common import box_from_points

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "affine_sample",
    "camera_affine",
    "FRAMINGS",
    "crop_region",
    "crop_to_input",
    "flip_sample",
    "rng_for",
]

# Tag mixed into every augmentation seed, so an rng_for stream never equals another stream the
# project draws from the same small integers (e.g. the procedural dataset's default_rng([seed, i])).
_RNG_TAG = 0x61756775  # 'augu'
# A crop never magnifies a region smaller than this (pixels of the source image): a hand seen
# through one joint has a 2-pixel box, which would otherwise fill the whole output.
MIN_CROP_PX = 16.0
# The mirror of the camera frame, x -> -x.
_MIRROR = np.diag([-1.0, 1.0, 1.0])
# Axis-angle of a mirrored rotation: S R(w) S = R(-S w), i.e. (a, b, c) -> (a, -b, -c).
_MIRROR_AXIS_ANGLE = np.array([1.0, -1.0, -1.0])
_HAND_TYPE_FLIP = {"right": "left", "left": "right", "interacting": "interacting"}


@dataclass
class AugmentConfig:
    """Training-time augmentation. Sizes (H, W) in pixels, angles in degrees.

    The crop frames the union of the sample's hand boxes grown by `crop_margin` in the output
    (`output_size`), or the whole image with ``framing: image`` (InterWild's framing of
    InterHand2.6M; evaluation of the run uses the same framing); `scale_range` then zooms about the crop centre (>1 shows the hands larger),
    `rotation_range_deg` rolls the camera with probability `rotation_prob`, and
    `translation_range` shifts the image by up to that fraction of the output size per axis.
    Photometric probabilities are per call; strengths follow albumentations' parameters.
    `enabled=False` gives only the deterministic crop (as `crop_to_input`).
    """

    enabled: bool = True
    output_size: tuple[int, int] = (256, 256)  # >= 1 each
    crop_margin: float = 1.25  # > 0
    framing: str = "hands"  # 'hands' or 'image' (see FRAMINGS)
    scale_range: tuple[float, float] = (0.8, 1.25)  # 0 < lo <= hi
    rotation_prob: float = 0.6
    rotation_range_deg: tuple[float, float] = (-45.0, 45.0)  # lo <= hi
    translation_range: float = 0.1  # >= 0
    flip_prob: float = 0.5
    border_value: int = 0  # in [0, 255]
    # photometric; every *_prob is in [0, 1]
    color_jitter_prob: float = 0.8
    brightness: float = 0.3  # >= 0
    contrast: float = 0.3  # >= 0
    saturation: float = 0.3  # >= 0
    hue: float = 0.05  # in [0, 0.5]
    blur_prob: float = 0.2
    blur_limit: tuple[int, int] = (3, 7)  # odd kernel sides, 3 <= lo <= hi
    noise_prob: float = 0.2
    noise_std_range: tuple[float, float] = (0.01, 0.05)  # fraction of 255; 0 <= lo <= hi
    jpeg_prob: float = 0.3
    jpeg_quality_range: tuple[int, int] = (40, 95)  # 1 <= lo <= hi <= 100
    occlusion_prob: float = 0.3
    occlusion_holes: tuple[int, int] = (1, 3)  # 1 <= lo <= hi
    occlusion_size_range: tuple[float, float] = (0.05, 0.3)  # side, fraction of the output side; 0 < lo <= hi <= 1

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise FieldError("framing", f"one of {sorted(FRAMINGS)}", self.framing)
        check_fields(self, ">= 1", "output_size", "occlusion_holes")
        check_fields(self, "> 0", "crop_margin", "scale_range")
        check_fields(self, "finite", "rotation_range_deg")
        check_fields(self, ">= 0", "translation_range", "brightness", "contrast", "saturation", "noise_std_range")
        check_fields(self, "in [0, 0.5]", "hue")
        check_fields(self, "in [0, 255]", "border_value")
        check_fields(self, ">= 3", "blur_limit")
        if not all(k % 2 for k in self.blur_limit):
            raise FieldError("blur_limit", "odd kernel sides", self.blur_limit)
        check_fields(self, "in [1, 100]", "jpeg_quality_range")
        check_fields(self, "in (0, 1]", "occlusion_size_range")
        pairs = ("scale_range", "rotation_range_deg", "blur_limit", "noise_std_range", "jpeg_quality_range", "occlusion_holes", "occlusion_size_range")
        check_fields(self, "lo <= hi", *pairs)
        probs = ("rotation_prob", "flip_prob", "color_jitter_prob", "blur_prob", "noise_prob", "jpeg_prob", "occlusion_prob")
        check_fields(self, "in [0, 1]", *probs)


def rng_for(seed: int, epoch: int, index: int, repeat: int = 0) -> np.random.Generator:
    """The generator of one augmentation call: a pure function of (seed, epoch, sample index,
    repeat), all non-negative ints, so augmentation is reproducible and resumable whatever the
    workers. `repeat` (earlier draws of the sample in the epoch) keeps a sample drawn twice from
    getting the same augmentation; repeat 0 gives the generator of the 3-number key."""
    key = [int(seed), int(epoch), int(index), _RNG_TAG]
    return np.random.default_rng(key + [int(repeat)] if repeat else key)


def _sample_key(sample: dict) -> int:
    """A stable integer naming a sample (crc32 of source and id), for rng=None calls."""
    return zlib.crc32(f"{sample.get('source', '')}\0{sample.get('sample_id', '')}".encode())


# --------------------------------------------------------------------------------- affine maths
def _rot2(angle: float) -> np.ndarray:
    """2x2 rotation of image coordinates by `angle` radians from +x towards +y (clockwise on screen)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _rot_z(angle: float) -> np.ndarray:
    """3x3 camera roll about the optical axis matching `_rot2`: X' = R_z X, camera frame."""
    r = np.eye(3)
    r[:2, :2] = _rot2(angle)
    return r


def camera_affine(
    focal: np.ndarray, centre: np.ndarray, out_size: tuple[int, int], scale: float, angle: float = 0.0, shift: np.ndarray | None = None
) -> np.ndarray:
    """The 2x3 warp (source pixels -> output pixels) that puts source point `centre` at the output
    centre (+ `shift` output pixels), magnified by `scale` and with the camera rolled by `angle`
    radians: ``A = scale diag(f) R(angle) diag(f)^-1`` (so the new focal is scale * f).

    focal: (fx, fy) of the source camera, pixels; centre: (x, y) source pixels; out_size (H, W).
    """
    f = np.diag(np.asarray(focal, dtype=np.float64))
    lin = scale * f @ _rot2(angle) @ np.linalg.inv(f)
    h, w = out_size
    target = np.array([(w - 1) / 2.0, (h - 1) / 2.0]) + (0.0 if shift is None else np.asarray(shift, dtype=np.float64))
    return np.concatenate([lin, (target - lin @ np.asarray(centre, dtype=np.float64))[:, None]], axis=1)


def _whole_image(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    h, w = (int(v) for v in sample["image_size"])
    return np.array([(w - 1) / 2.0, (h - 1) / 2.0]), np.array([float(w), float(h)])


def _hands_region(sample: dict, margin: float) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(sample["boxes"], dtype=np.float64)
    has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not has_area.any():
        return _whole_image(sample)
    b = boxes[has_area]
    lo, hi = b[:, :2].min(0), b[:, 2:].max(0)
    return (lo + hi) / 2.0, np.maximum((hi - lo) * margin, MIN_CROP_PX)


#: What a crop frames. 'hands': the union of the hand boxes grown by the margin (DIR /
#: IntagHand-style two-hand crops); 'image': the whole image, margin unused (InterWild frames
#: InterHand2.6M images this way: its body box is the full image and the model finds the hands).
FRAMINGS: dict[str, Callable[[dict, float], tuple[np.ndarray, np.ndarray]]] = {
    "hands": _hands_region,
    "image": lambda sample, margin: _whole_image(sample),
}


def crop_region(sample: dict, margin: float, framing: str = "hands") -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) and extent (w, h) in source pixels of the region to show, by `framing`
    (see FRAMINGS): for 'hands' the union of the hand boxes with area grown by `margin` (at
    least MIN_CROP_PX), the whole image if no box has area."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {sorted(FRAMINGS)}, got {framing!r}")
    return FRAMINGS[framing](sample, margin)


def _fit_scale(extent: np.ndarray, out_size: tuple[int, int]) -> float:
    """Magnification at which a source region of `extent` (w, h) fits inside the output."""
    h, w = out_size
    return float(min(w / extent[0], h / extent[1]))


# ------------------------------------------------------------------------------- label helpers
def _copy(sample: dict) -> dict:
    """Copy with every label array copied, so callers' samples stay intact; `image` and
    `extra_maps` are shared: both transforms replace them with new arrays."""
    return {k: (v.copy() if isinstance(v, np.ndarray) and k != "image" else v) for k, v in sample.items()}


def _boxes_after(sample: dict, lin: np.ndarray, off: np.ndarray, joints2d: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """(2, 4) boxes after a 2D affine map (lin, off) of the image; `joints2d` are the mapped joints
    and `sample` holds validity and the old boxes in the same hand order (see the module doc)."""
    boxes = np.zeros((2, 4), dtype=np.float32)
    h, w = out_size
    for hand in range(2):
        part = slice(hand * NUM_JOINTS, (hand + 1) * NUM_JOINTS)
        valid = np.asarray(sample["joints2d_valid"][part], dtype=bool)
        old = np.asarray(sample["boxes"][hand], dtype=np.float64)
        if valid.any():
            box = box_from_points(joints2d[part].astype(np.float64), valid, out_size).astype(np.float64)
        elif old[2] > old[0] and old[3] > old[1]:
            corners = np.array([[old[0], old[1]], [old[2], old[1]], [old[0], old[3]], [old[2], old[3]]]) @ lin.T + off
            box = np.clip(np.concatenate([corners.min(0), corners.max(0)]), 0, [w, h, w, h])
        else:
            continue
        if box[2] > box[0] and box[3] > box[1]:
            boxes[hand] = box
    return boxes


def _swap_hands(arr: np.ndarray, block: int) -> np.ndarray:
    """Swap the right (first `block` rows) and left (next `block` rows) halves of an array."""
    return np.concatenate([arr[block : 2 * block], arr[:block]], axis=0)


def _rest_root(hand_model: HandModel, side: str, betas: np.ndarray) -> np.ndarray:
    """(3,) float64 rest wrist J0 of one hand (HandModel.rest_root in numpy: no torch per sample)."""
    template, dirs = hand_model.rest_root_affine[side]
    return template + dirs @ np.asarray(betas, dtype=np.float64)


# ----------------------------------------------------------------------------------------- flip
def flip_sample(sample: dict, hand_model: HandModel) -> dict:
    """Mirror a sample about the image's vertical centre line x = (W-1)/2 (see the module table).

    The camera frame is mirrored (x -> -x, cx -> W-1-cx), so the right hand becomes a left hand
    and vice versa; MANO parameters are mirrored exactly for a left model that is the mirror of
    the right one (the stand-in, real MANO up to its fitting noise). Returns a new dict.
    """
    out = _copy(sample)
    w = int(sample["image_size"][1])
    if "image" in sample:
        out["image"] = np.ascontiguousarray(np.asarray(sample["image"])[:, ::-1])
    if "extra_maps" in sample:
        out["extra_maps"] = {k: np.ascontiguousarray(np.asarray(v)[:, ::-1]) for k, v in sample["extra_maps"].items()}
    out["princpt"] = np.array([w - 1 - sample["princpt"][0], sample["princpt"][1]], dtype=np.float32)

    mirror3 = np.array([-1.0, 1.0, 1.0], dtype=np.float32)
    out["verts"] = _swap_hands(sample["verts"] * mirror3, NUM_VERTS).astype(np.float32)
    out["joints3d"] = _swap_hands(sample["joints3d"] * mirror3, NUM_JOINTS).astype(np.float32)
    valid2d = np.asarray(sample["joints2d_valid"], dtype=bool)
    j2d = np.where(valid2d[:, None], np.stack([w - 1 - sample["joints2d"][:, 0], sample["joints2d"][:, 1]], 1), 0.0)
    out["joints2d"] = _swap_hands(j2d, NUM_JOINTS).astype(np.float32)
    out["joints2d_valid"] = _swap_hands(valid2d, NUM_JOINTS)
    out["joints_valid"] = _swap_hands(np.asarray(sample["joints_valid"], dtype=bool), NUM_JOINTS)
    for key in ("mano_valid", "mesh_valid", "mano_shape", *(k for k in ("mesh_pending", "joints_pending") if k in sample)):
        out[key] = np.asarray(sample[key])[::-1].copy()
    pose = (np.asarray(sample["mano_pose"], dtype=np.float64).reshape(2, 16, 3) * _MIRROR_AXIS_ANGLE).reshape(2, 48)
    out["mano_pose"] = pose[::-1].astype(np.float32)
    out["mano_transl"] = np.zeros((2, 3), dtype=np.float32)
    for src in range(2):
        if not sample["mano_valid"][src]:
            continue
        dst = 1 - src
        # smplx turns each hand about its rest wrist J0; mirroring v = R (u - J0) + J0 + t gives
        # the other side's mesh with t' = S (J0_src + t) - J0_dst (= S t when J0_dst = S J0_src)
        betas = sample["mano_shape"][src]
        root_src, root_dst = _rest_root(hand_model, SIDES[src], betas), _rest_root(hand_model, SIDES[dst], betas)
        out["mano_transl"][dst] = _MIRROR @ (root_src + sample["mano_transl"][src]) - root_dst
    out["hand_type"] = _HAND_TYPE_FLIP[sample["hand_type"]]
    out["boxes"] = _boxes_after(
        {"joints2d_valid": out["joints2d_valid"], "boxes": sample["boxes"][::-1]},
        np.diag([-1.0, 1.0]), np.array([w - 1.0, 0.0]), out["joints2d"], (int(sample["image_size"][0]), w),
    )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------- affine
def _camera_of(matrix: np.ndarray, focal: np.ndarray, princpt: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """New (focal, princpt) of the camera whose image is the source warped by `matrix`, the camera
    having rolled by `angle`; ValueError if the warp is no such camera change."""
    lin, off = matrix[:, :2], matrix[:, 2]
    new_f = lin @ np.diag(focal) @ _rot2(angle).T  # must be diag(f') for a pinhole camera
    scale = np.abs(new_f).max()
    if abs(new_f[0, 1]) > 1e-6 * scale or abs(new_f[1, 0]) > 1e-6 * scale or new_f[0, 0] <= 0 or new_f[1, 1] <= 0:
        raise ValueError(
            f"affine_sample: the matrix {matrix.tolist()} is not a camera change for rotation_angle={angle} rad and "
            f"focal={focal.tolist()}: its 2x2 part must be diag(f') R(angle) diag(focal)^-1 with f' > 0 (see camera_affine)"
        )
    return np.diag(new_f), lin @ princpt + off


def _roll_mano(sample: dict, out: dict, rot: np.ndarray, hand_model: HandModel) -> None:
    """Global orient and translation of each valid hand seen by the camera rolled by `rot` (exact):
    `HandModel.to_camera` with no translation, in float64 numpy (orient composed as quaternions)."""
    turn = Rotation.from_matrix(rot)
    for hand, side in enumerate(SIDES):
        if not sample["mano_valid"][hand]:
            continue
        pose = np.asarray(sample["mano_pose"][hand], dtype=np.float64)
        root = _rest_root(hand_model, side, sample["mano_shape"][hand])
        out["mano_pose"][hand, :3] = (turn * Rotation.from_rotvec(pose[:3])).as_rotvec()
        out["mano_transl"][hand] = rot @ (root + sample["mano_transl"][hand]) - root


def affine_sample(
    sample: dict,
    matrix: np.ndarray,
    out_size: tuple[int, int],
    hand_model: HandModel | None,
    rotation_angle: float = 0.0,
    border_value: int = 0,
) -> dict:
    """Warp a sample by the 2x3 `matrix` (source pixels -> output pixels) to an (H, W) = `out_size`
    image, the camera having rolled by `rotation_angle` radians about its optical axis.

    `matrix` must be a camera change (build it with `camera_affine`): its 2x2 part is
    diag(f') R(angle) diag(f)^-1; anything else (a shear, a mirror) raises ValueError, since no
    pinhole camera sees that image. `hand_model` is needed only when the angle is not 0 and a
    hand has MANO parameters. Optional `sample['extra_maps']` ({name: (H, W) or (H, W, C<=4)
    label arrays}) are warped with nearest-neighbour interpolation and 0 outside. Returns a new dict.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"affine_sample: matrix must be 2x3, got shape {matrix.shape}")
    out_size = (int(out_size[0]), int(out_size[1]))
    focal = np.asarray(sample["focal"], dtype=np.float64)
    new_focal, new_princpt = _camera_of(matrix, focal, np.asarray(sample["princpt"], dtype=np.float64), rotation_angle)
    out = _copy(sample)
    dsize = (out_size[1], out_size[0])  # cv2 wants (W, H)
    if "image" in sample:
        out["image"] = cv2.warpAffine(
            np.ascontiguousarray(sample["image"]), matrix, dsize, flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(border_value,) * 3,
        )  # fmt: skip
    if "extra_maps" in sample:
        nearest = dict(flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out["extra_maps"] = {k: cv2.warpAffine(np.ascontiguousarray(v), matrix, dsize, **nearest) for k, v in sample["extra_maps"].items()}
    out["image_size"] = np.array(out_size, dtype=np.int64)
    out["focal"] = new_focal.astype(np.float32)
    out["princpt"] = new_princpt.astype(np.float32)

    if rotation_angle != 0.0:  # the 3D labels only move when the camera turns
        rot = _rot_z(rotation_angle)
        out["verts"] = (sample["verts"].astype(np.float64) @ rot.T).astype(np.float32)
        out["joints3d"] = (sample["joints3d"].astype(np.float64) @ rot.T).astype(np.float32)
        if np.any(sample["mano_valid"]):
            if hand_model is None:
                raise ValueError("affine_sample: a hand_model is needed to turn the MANO parameters of a rotated sample")
            _roll_mano(sample, out, rot, hand_model)

    lin, off = matrix[:, :2], matrix[:, 2]
    valid = np.asarray(sample["joints2d_valid"], dtype=bool)
    # 2D labels follow the image (exact: = projection with the new camera when they were one before)
    j2d = np.where(valid[:, None], sample["joints2d"].astype(np.float64) @ lin.T + off, 0.0)
    out["joints2d"] = j2d.astype(np.float32)
    out["boxes"] = _boxes_after(sample, lin, off, j2d, out_size)
    return out


def crop_to_input(
    sample: dict, out_size: tuple[int, int], margin: float = 1.25, border_value: int = 0, framing: str = "hands"
) -> dict:
    """Eval-time crop: the region of `framing` (by default the union of the hand boxes grown by
    `margin`), centred and scaled to fit an (H, W) = `out_size` output, by the same exact
    camera-change warp (no rotation, no randomness; 3D labels and MANO parameters are
    unchanged, focal and principal point follow)."""
    centre, extent = crop_region(sample, margin, framing)
    matrix = camera_affine(sample["focal"], centre, out_size, _fit_scale(extent, out_size))
    return affine_sample(sample, matrix, out_size, None, 0.0, border_value)


# ------------------------------------------------------------------------------------ augmenter
def _photometric(cfg: AugmentConfig) -> A.Compose:
    """The image-only albumentations pipeline (applied on the output-size image)."""
    occlusion = dict(
        num_holes_range=cfg.occlusion_holes, hole_height_range=cfg.occlusion_size_range, hole_width_range=cfg.occlusion_size_range, p=1.0
    )
    return A.Compose(
        [
            A.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.color_jitter_prob),
            A.OneOf([A.GaussianBlur(blur_limit=cfg.blur_limit, p=1.0), A.MotionBlur(blur_limit=cfg.blur_limit, p=1.0)], p=cfg.blur_prob),
            A.GaussNoise(std_range=cfg.noise_std_range, p=cfg.noise_prob),
            A.ImageCompression(quality_range=cfg.jpeg_quality_range, p=cfg.jpeg_prob),
            # occluders: patches of one random colour each, or of random noise
            A.OneOf([A.CoarseDropout(fill=fill, **occlusion) for fill in ("random_uniform", "random")], p=cfg.occlusion_prob),
        ],
        seed=0,
    )


class Augmenter:
    """Random crop/scale/rotation/translation (one exact warp), flip and photometric changes.

    `augmenter(sample, rng)` returns a new sample of size `cfg.output_size`; the same rng state
    gives the same output. Pass `rng_for(seed, epoch, index, repeat)` per call (see the module
    doc); with rng=None the rng is derived from (seed, self.epoch, the sample's source and id). Photometric
    transforms are albumentations', reseeded from `rng` on each call, so they are deterministic
    too. One instance per DataLoader worker is fine (each worker holds its own copy).
    """

    def __init__(self, cfg: AugmentConfig, hand_model: HandModel, seed: int = 0):
        self.cfg = cfg
        self.hand_model = hand_model
        self.seed = int(seed)
        self.epoch = 0
        self._photo = _photometric(cfg)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used to derive the rng of calls that pass none."""
        self.epoch = int(epoch)

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        cfg = self.cfg
        if not cfg.enabled:
            return crop_to_input(sample, cfg.output_size, cfg.crop_margin, cfg.border_value, cfg.framing)
        if rng is None:
            rng = rng_for(self.seed, self.epoch, _sample_key(sample))
        # every number is drawn on every call, in a fixed order, so one choice never shifts the others
        flip = rng.random() < cfg.flip_prob
        scale = rng.uniform(*cfg.scale_range)
        rotate = rng.random() < cfg.rotation_prob
        angle = math.radians(rng.uniform(*cfg.rotation_range_deg))
        angle = angle if rotate else 0.0
        h, w = cfg.output_size
        shift = rng.uniform(-cfg.translation_range, cfg.translation_range, size=2) * np.array([w, h])
        photo_seed = int(rng.integers(2**32))

        if flip:
            sample = flip_sample(sample, self.hand_model)
        centre, extent = crop_region(sample, cfg.crop_margin, cfg.framing)
        matrix = camera_affine(sample["focal"], centre, cfg.output_size, scale * _fit_scale(extent, cfg.output_size), angle, shift)
        out = affine_sample(sample, matrix, cfg.output_size, self.hand_model, angle, cfg.border_value)
        if "image" in out:
            self._photo.set_random_seed(photo_seed)
            out["image"] = self._photo(image=out["image"])["image"]
        return out
