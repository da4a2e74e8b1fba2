#!/usr/bin/env python
"""Reconstruct both hands in your own images with a trained checkpoint: overlay PNG, meshes, MANO JSON.

For each image IMG it writes, in --out:

* ``IMG_overlay.png``: the image with the right hand's mesh (orange) and the left hand's (blue)
  drawn over it, and each hand's predicted box in the same colour;
* ``IMG_right.obj`` / ``IMG_left.obj``: one mesh per detected hand, metres, in the camera frame of
  the image (x right, y down, z forward; the camera of --focal);
* ``IMG.json``: the camera, and per hand its box (pixels of the image), MANO parameters (global
  orient, hand pose, betas, translation; camera frame; axis-angle relative to MANO's mean hand,
  ``flat_hand_mean=False``) and wrist, plus the relative translation (left wrist minus right
  wrist, metres). ``HandModel.hand(side, betas, global_orient, hand_pose, transl)`` on the saved
  parameters gives the saved mesh.

The image is framed exactly as ``tools/eval.py --checkpoint`` frames a whole image (a camera
change to the model's input size, ``handrecon.data.augment.crop_to_input``), so the meshes lie in
the image's own camera. A model that finds the hand boxes itself (interwild, interwild_tiny) reads
the whole image; a model that needs hand boxes (dir, dir_tiny) needs --boxes. Every hand counts as
detected unless --min-conf is set and the model outputs a per-hand confidence (``box_conf``, (B, 2)
in [0, 1]; interwild's); then a hand below it is reported undetected and gets no mesh file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from handrecon.cli import run_tool
from handrecon.errors import UserError

SIDES = ("right", "left")
COLOURS = {"right": (1.0, 0.55, 0.1), "left": (0.2, 0.5, 1.0)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MANO_CONVENTION = "smplx MANO, axis-angle relative to the mean hand (flat_hand_mean=False), camera frame (x right, y down, z forward), metres"


def default_camera(image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(focal, princpt) for an image without calibration: focal max(H, W) pixels and the principal
    point at the image centre, the toolkit's camera for images without one (MSCOCO-WholeBody)."""
    from handrecon.data.readers.mscoco import nominal_camera

    return nominal_camera(image_size)


def parse_box(text: str) -> np.ndarray:
    """'x0,y0,x1,y1' -> (4,) float32; 'none' -> zeros (the hand is absent)."""
    if text.lower() == "none":
        return np.zeros(4, dtype=np.float32)
    try:
        box = np.array([float(v) for v in text.split(",")], dtype=np.float32)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise UserError(f"--boxes: expected x0,y0,x1,y1 with x1 > x0 and y1 > y0 (or 'none'), got {text!r}")
    return box


def load_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB, turned upright by its EXIF orientation; a UserError names a missing or
    unreadable file."""
    from PIL import Image, ImageOps

    if not path.is_file():
        raise UserError(f"image {path} does not exist" if not path.exists() else f"image {path} is not a file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise UserError(f"image {path}: not a readable image ({exc})") from exc


def list_images(images: list[Path], folder: Path | None) -> list[Path]:
    """The --image files, then the images of --images DIR (sorted); stems must be unique, since
    they name the outputs."""
    paths = list(images)
    if folder is not None:
        if not folder.is_dir():
            raise UserError(f"--images {folder} is not a folder")
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise UserError(f"--images {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        paths += found
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems and stems[p.stem] != p:
            raise UserError(f"{stems[p.stem]} and {p} would write the same output files ({p.stem}_*): rename one")
        stems[p.stem] = p
    return list(dict.fromkeys(paths))


def load_model(checkpoint: Path, mano_dir: Path | None):
    """(model in eval mode, checkpoint folder, MANO folder) from a run or checkpoint folder, as
    `tools/eval.py --checkpoint` loads it."""
    from handrecon.config import load_config
    from handrecon.engine import Experiment
    from handrecon.engine.checkpoint import CONFIG, checkpoint_dir, load_weights
    from handrecon.hand_model.mano import HandModel
    from handrecon.models import build_model

    if not checkpoint.exists():
        raise UserError(f"--checkpoint {checkpoint} does not exist")
    folder = checkpoint_dir(checkpoint)
    if not (folder / CONFIG).is_file():
        raise UserError(f"checkpoint {folder} has no {CONFIG}: give a run folder or a checkpoint folder written by tools/train.py")
    cfg = load_config(Experiment, folder / CONFIG)
    mano = Path(mano_dir) if mano_dir is not None else Path(cfg.mano_dir)
    if not (mano / "MANO_RIGHT.pkl").is_file() or not (mano / "MANO_LEFT.pkl").is_file():
        raise UserError(f"no MANO files in {mano} (from {'--mano-dir' if mano_dir is not None else folder / CONFIG}): pass --mano-dir")
    model = build_model(cfg.model, HandModel(mano))
    load_weights(model, folder, strict=True)
    return model.eval(), folder, mano


def finds_boxes(model) -> bool:
    """Whether the model finds the hand boxes itself (and so reads the whole image), the rule of
    `tools/eval.py`'s framing."""
    from handrecon.models.interwild import InterWildNet

    return isinstance(model, InterWildNet)


def make_sample(name: str, image: np.ndarray, focal: np.ndarray, princpt: np.ndarray, boxes: np.ndarray | None) -> dict:
    """A label-free sample of the toolkit's layout (handrecon/data/sample.py) for one image."""
    from handrecon.data.sample import empty_sample

    sample = empty_sample(name, "demo")
    sample["image"] = image
    sample["image_size"] = np.array(image.shape[:2], dtype=np.int64)
    sample["focal"] = np.asarray(focal, dtype=np.float32)
    sample["princpt"] = np.asarray(princpt, dtype=np.float32)
    if boxes is not None:
        sample["boxes"] = np.asarray(boxes, dtype=np.float32)
    return sample


def input_to_image(points: np.ndarray, sample: dict, crop: dict) -> np.ndarray:
    """(..., 2) pixels of the model input -> pixels of the image: the crop is a camera change
    (same 3D frame), so x_in = s x + t with s = f_in / f and t = c_in - s c."""
    s = np.asarray(crop["focal"], np.float64) / np.asarray(sample["focal"], np.float64)
    t = np.asarray(crop["princpt"], np.float64) - s * np.asarray(sample["princpt"], np.float64)
    return (np.asarray(points, np.float64) - t) / s


def predict_image(model, sample: dict, framing: str) -> tuple[dict, dict]:
    """One forward pass on the image framed by `framing` (as tools/eval.py frames it); returns the
    model's outputs for the image (numpy, batch dimension dropped) and the framed input sample."""
    import torch
    from torch.utils.data import default_collate

    from handrecon.data.augment import crop_to_input

    crop = crop_to_input(sample, model.input_size, framing=framing)
    batch = default_collate([crop])
    with torch.no_grad():
        out = model(batch)
    return {k: v[0].float().cpu().numpy() for k, v in out.items() if torch.is_tensor(v) and v.shape[:1] == (1,)}, crop


def mano_translations(hand_model, verts: np.ndarray, pose: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """(2, 3) MANO translations that place each hand's mesh (HandModel.hand with the predicted
    pose and betas) on the predicted mesh `verts` (1556, 3): the model predicts a root-relative mesh
    and a wrist position, and the translation is their offset."""
    import torch

    from handrecon.hand_model.constants import NUM_VERTS

    out = np.zeros((2, 3))
    for h, side in enumerate(SIDES):
        p = torch.as_tensor(pose[h : h + 1], dtype=torch.float32)
        with torch.no_grad():
            v = hand_model.hand(side, torch.as_tensor(betas[h : h + 1], dtype=torch.float32), p[:, :3], p[:, 3:]).vertices[0]
        out[h] = (verts[h * NUM_VERTS : (h + 1) * NUM_VERTS].astype(np.float64) - v.double().numpy()).mean(0)
    return out


def obj_text(verts: np.ndarray, faces: np.ndarray) -> str:
    """A Wavefront OBJ: vertices (metres) and 1-based triangle faces."""
    lines = [f"v {x:.8f} {y:.8f} {z:.8f}" for x, y, z in np.asarray(verts, np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces, np.int64)]
    return "\n".join(lines) + "\n"


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (N, 3) float64, faces (F, 3) 0-based) of an OBJ written by `obj_text`."""
    verts, faces = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(v) for v in line.split()[1:4]])
        elif line.startswith("f "):
            faces.append([int(v.split("/")[0]) - 1 for v in line.split()[1:4]])
    return np.array(verts, np.float64).reshape(-1, 3), np.array(faces, np.int64).reshape(-1, 3)


def draw_overlay(image: np.ndarray, verts: np.ndarray, detected: np.ndarray, boxes: np.ndarray, focal, princpt, faces) -> np.ndarray:
    """uint8 overlay: the detected hands' meshes blended over the image, and their boxes."""
    import cv2

    from handrecon.evaluation import overlay_hands
    from handrecon.hand_model.constants import NUM_VERTS

    colours = np.repeat(np.array([COLOURS[s] for s in SIDES], np.float32), NUM_VERTS, axis=0)
    blend = overlay_hands(image.astype(np.float32) / 255, verts, detected, focal, princpt, faces, colours, weight=0.75)
    out = np.ascontiguousarray(np.clip(blend * 255 + 0.5, 0, 255).astype(np.uint8))
    thick = max(1, round(max(image.shape[:2]) / 300))
    for h, side in enumerate(SIDES):
        if detected[h]:
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[h])
            cv2.rectangle(out, (x0, y0), (x1, y1), tuple(int(c * 255) for c in COLOURS[side]), thick)
    return out


def run_image(path: Path, model, args: argparse.Namespace, out_dir: Path) -> dict:
    """Predict one image and write its overlay, meshes and JSON; returns the JSON record."""
    from handrecon.hand_model.constants import NUM_JOINTS, NUM_VERTS
    from handrecon.io import atomic_save_image, atomic_write_json, atomic_write_text

    image = load_image(path)
    h, w = image.shape[:2]
    focal, princpt = default_camera((h, w))
    if args.focal is not None:
        focal = np.array([args.focal, args.focal], dtype=np.float32)
    if args.princpt is not None:
        princpt = np.asarray(args.princpt, dtype=np.float32)
    own_boxes = finds_boxes(model)
    boxes_in = None if args.boxes is None else np.stack([parse_box(b) for b in (*args.boxes, "none")[:2]])
    sample = make_sample(path.stem, image, focal, princpt, boxes_in)
    pred, crop = predict_image(model, sample, "image" if own_boxes else "hands")

    verts = pred["verts"]
    joints = pred["joints3d"]
    if own_boxes:
        corners = input_to_image(pred["boxes"].reshape(2, 2, 2), sample, crop)
        boxes = np.concatenate([corners.min(1), corners.max(1)], 1)  # interwild's box sizes are signed: x0 <= x1, y0 <= y1
        detected = np.ones(2, bool)
    else:
        boxes = boxes_in.astype(np.float64)
        detected = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # 'none' (a zero box): an absent hand
    conf = pred.get("box_conf")
    if conf is not None:
        detected &= conf.reshape(2) >= args.min_conf
    pose, betas = pred["mano_pose"].reshape(2, 48), pred["mano_shape"].reshape(2, 10)
    transl = mano_translations(model.hand_model, verts, pose, betas)

    stem = path.stem
    faces = {"right": model.hand_model.faces_right.cpu().numpy(), "left": model.hand_model.faces_left.cpu().numpy()}
    hands = {}
    for i, side in enumerate(SIDES):
        mesh = None
        if detected[i]:
            mesh = f"{stem}_{side}.obj"
            atomic_write_text(out_dir / mesh, obj_text(verts[i * NUM_VERTS : (i + 1) * NUM_VERTS], faces[side]))
        else:
            (out_dir / f"{stem}_{side}.obj").unlink(missing_ok=True)  # no stale mesh from an earlier run
        hands[side] = {
            "detected": bool(detected[i]),
            "confidence": None if conf is None else float(conf.reshape(2)[i]),
            "box": [float(v) for v in boxes[i]],
            "global_orient": pose[i, :3].tolist(),
            "hand_pose": pose[i, 3:].tolist(),
            "betas": betas[i].tolist(),
            "transl": transl[i].tolist(),
            "wrist": joints[i * NUM_JOINTS].tolist(),
            "mesh": mesh,
        }
    record = {
        "image": str(path),
        "image_size": [h, w],
        "focal": [float(v) for v in focal],
        "princpt": [float(v) for v in princpt],
        "framing": "image" if own_boxes else "hands",
        "mano": MANO_CONVENTION,
        "hands": hands,
        # the relative-translation branch's estimate (what the MRRPE metric reads)
        "rel_trans": pred["rel_trans"].reshape(3).tolist(),
        # the same offset between the two meshes' wrists
        "mesh_rel_trans": (joints[NUM_JOINTS] - joints[0]).tolist(),
    }
    atomic_write_json(out_dir / f"{stem}.json", record, indent=1)
    faces_two = model.hand_model.faces_two_hand
    overlay = draw_overlay(image, verts, detected, boxes, focal, princpt, faces_two)
    atomic_save_image(out_dir / f"{stem}_overlay.png", overlay)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run folder (its best checkpoint, else its latest) or a checkpoint folder")
    parser.add_argument("--image", type=Path, nargs="+", action="extend", default=[], help="image file(s), any size (jpg, png, ...)")
    parser.add_argument("--images", type=Path, default=None, help="a folder: every jpg / jpeg / png / bmp / webp in it")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument(
        "--focal",
        type=float,
        default=None,
        help="focal length in pixels of the original image (default: max(H, W), with the principal point at the image "
        "centre: the toolkit's camera for uncalibrated images; it sets the hands' depth, not their shape or image position)",
    )
    parser.add_argument("--princpt", type=float, nargs=2, default=None, metavar=("CX", "CY"), help="principal point in pixels (default: the image centre)")
    parser.add_argument(
        "--boxes",
        nargs="+",
        default=None,
        metavar="X0,Y0,X1,Y1",
        help="for models that need hand boxes (dir, dir_tiny): the right hand's box, then the left's, in image pixels; "
        "'none' for an absent hand (one image at a time)",
    )
    parser.add_argument("--min-conf", type=float, default=0.0,
                        help="hands whose predicted confidence is lower count as not detected (models with one; interwild's is the "
                             "softmax mass of its box-centre heatmap at the centre, so a useful threshold depends on the model); "
                             "default 0: every hand is reported")  # fmt: skip
    parser.add_argument("--mano-dir", type=Path, default=None, help="MANO folder (default: the run's mano_dir)")
    args = parser.parse_args(argv)

    import torch

    from handrecon.io import ensure_writable_dir

    if not args.image and args.images is None:
        parser.error("give --image IMG [IMG ...] and/or --images DIR")
    if args.focal is not None and not (np.isfinite(args.focal) and args.focal > 0):
        raise UserError(f"--focal must be a positive number of pixels, got {args.focal}")
    if args.boxes is not None and len(args.boxes) > 2:
        raise UserError(f"--boxes takes the right hand's box and the left's, got {len(args.boxes)} boxes")
    paths = list_images(args.image, args.images)
    if args.boxes is not None and len(paths) > 1:
        raise UserError("--boxes applies to one image; give a single --image")
    for p in paths:
        if not p.is_file():
            raise UserError(f"image {p} does not exist" if not p.exists() else f"image {p} is not a file")
    out_dir = ensure_writable_dir(args.out, "--out")
    model, folder, _ = load_model(args.checkpoint, args.mano_dir)
    if not finds_boxes(model) and args.boxes is None:
        raise UserError(
            f"the model of {folder} ({type(model).__name__}) reads hand crops and does not find hands itself: pass --boxes "
            "X0,Y0,X1,Y1 (right hand, then left; 'none' for an absent one), or use an interwild checkpoint"
        )
    print(f"model: {folder}")
    for p in paths:
        with torch.no_grad():
            record = run_image(p, model, args, out_dir)
        found = [s for s in SIDES if record["hands"][s]["detected"]]
        print(f"{p}: {', '.join(found) or 'no hand'} -> {out_dir}/{p.stem}_overlay.png, {p.stem}.json")
    return 0


if __name__ == "__main__":
    run_tool(main)
