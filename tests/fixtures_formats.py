"""Writers of tiny datasets in the exact release layouts, from known ground truth.

Each `make_*` writes a dataset under a folder and returns the truth it was made from, in world
or camera frames as the format stores it, so tests can recompute the expected samples
independently of the readers (only the hand model's forward pass is shared).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from handrecon.camera import project
from handrecon.data.readers.common import ManoParams
from handrecon.data.readers.interhand import (
    InterHandCamera,
    InterHandFrame,
    InterHandRecord,
    image_path,
    to_ih26m_order,
    write_interhand_split,
)
from handrecon.data.readers.reinterhand import (
    TEST_CAPTURES,
    ReIHCamera,
    camera_file,
    image_file,
    keypoint_file,
    mano_file,
    ours_to_reih_keypoints,
)
from handrecon.hand_model.mano import SIDES, HandModel
from handrecon.io import atomic_write_json

IMAGE_HW = (48, 64)

TRAIN_CAPTURE = "m--20221111--0000--ABC123--pilot--ProjectGoliath--Hands--two-hands"


# Writers of the release formats that the toolkit only reads.
def write_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray | None = None, binary: bool = False) -> None:
    """Write a mesh as PLY: float32 x, y, z per vertex and int32 triangle indices; ASCII or
    binary in the machine's byte order (coordinates written with 9 significant digits in ASCII,
    so float32 values round-trip exactly)."""
    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.zeros((0, 3), dtype=np.int32) if faces is None else np.asarray(faces, dtype=np.int32)
    fmt = "ascii" if not binary else ("binary_little_endian" if sys.byteorder == "little" else "binary_big_endian")
    header = (
        f"ply\nformat {fmt} 1.0\ncomment written by sesahand\nelement vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        if binary:
            fh.write(vertices.tobytes())
            face_rows = np.zeros(len(faces), dtype=[("n", "u1"), ("idx", "i4", (3,))])
            face_rows["n"], face_rows["idx"] = 3, faces
            fh.write(face_rows.tobytes())
        else:
            fh.write("".join(f"{x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in vertices).encode("ascii"))
            fh.write("".join(f"3 {a} {b} {c}\n" for a, b, c in faces).encode("ascii"))


def write_capture_files(
    capture_dir: str | Path,
    cameras: dict[str, ReIHCamera] | None = None,
    keypoints: dict[tuple[str, int], np.ndarray] | None = None,
    manos: dict[tuple[str, int], ManoParams] | None = None,
) -> None:
    """Write Re:InterHand annotation files of one capture in the release layout (images are the
    caller's: save them at `image_file(capture_dir, cam, frame)`).

    cameras: {cam: ReIHCamera}; keypoints: {(side, frame): (24, 3) world mm, file order};
    manos: {(side, frame): ManoParams, world metres}.
    """
    capture_dir = Path(capture_dir)

    if cameras is not None:
        atomic_write_json(camera_file(capture_dir), {cam: c.to_json() for cam, c in cameras.items()})
    for (side, frame), kp in (keypoints or {}).items():
        atomic_write_json(keypoint_file(capture_dir, side, frame), np.asarray(kp, float).tolist())
    for (side, frame), mano in (manos or {}).items():
        atomic_write_json(mano_file(capture_dir, side, frame), mano.to_json())


@torch.no_grad()
def mano_world(hand_model: HandModel, side: str, params: ManoParams) -> tuple[np.ndarray, np.ndarray]:
    """(verts (778, 3), joints (21, 3)) in metres, the frame the parameters are given in."""
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))[None]  # noqa: E731
    out = hand_model.hand(side, t(params.shape), t(params.pose[:3]), t(params.pose[3:]), t(params.trans))
    return out.vertices[0].numpy().astype(np.float64), out.joints[0].numpy().astype(np.float64)


def random_mano(rng: np.random.Generator, offset: np.ndarray) -> ManoParams:
    return ManoParams(
        pose=np.concatenate([rng.normal(0, 1.0, 3), rng.normal(0, 0.25, 45)]),
        shape=rng.normal(0, 0.5, 10),
        trans=np.asarray(offset, float) + rng.normal(0, 0.01, 3),
    )


def look_at_camera(rng: np.random.Generator, points: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random camera looking at the centroid of `points` (metres): (rot, centre m, focal, princpt)
    with the focal length chosen so that every point projects inside IMAGE_HW."""
    rot = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
    centre = points.mean(0) - rot.T @ np.array([0.0, 0.0, distance])
    cam = (points - centre) @ rot.T
    h, w = IMAGE_HW
    ratio = np.abs(cam[:, :2] / cam[:, 2:]).max(0)
    f = float(min(0.4 * w / ratio[0], 0.4 * h / ratio[1]))
    return rot, centre, np.array([f, f * 1.01]), np.array([w / 2 - 0.5, h / 2 + 0.25])


def write_noise_image(path: Path, hw: tuple[int, int], rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)


# ---------------------------------------------------------------------------------- InterHand2.6M


@dataclass
class IHTruth:
    """Per annotation id: the camera (camrot, campos mm, focal, princpt), hand_type, world-frame
    meshes / joints (metres, our order) and which hands have MANO, which joints are annotated."""

    camrot: dict[int, np.ndarray] = field(default_factory=dict)
    campos_mm: dict[int, np.ndarray] = field(default_factory=dict)
    focal: dict[int, np.ndarray] = field(default_factory=dict)
    princpt: dict[int, np.ndarray] = field(default_factory=dict)
    hand_type: dict[int, str] = field(default_factory=dict)
    verts_world: dict[int, dict[str, np.ndarray | None]] = field(default_factory=dict)
    joints_world: dict[int, np.ndarray] = field(default_factory=dict)  # (42, 3) m, our order
    joint_valid: dict[int, np.ndarray] = field(default_factory=dict)  # (42,) our order, as annotated
    records: list[InterHandRecord] = field(default_factory=list)
    human_annot: list[int] = field(default_factory=list)


# frame -> (hand_type, hands with a MANO fit, joints (our order) annotated invalid)
IH_FRAMES = {
    10: ("interacting", ("right", "left"), ()),
    20: ("right", ("right",), ()),
    30: ("left", ("left",), ()),
    40: ("interacting", ("right",), (8,)),  # left fit missing; right index tip not annotated
    50: ("interacting", ("right", "left"), (21,)),  # left wrist not annotated -> left hand invalid
}
IH_CAMERAS = ("400262", "400263")


def make_interhand_fixture(root: Path, split: str, hand_model: HandModel, seed: int = 0) -> IHTruth:
    """Capture 0, frames IH_FRAMES seen by the fixed cameras IH_CAMERAS: one image + annotation
    per (frame, camera)."""
    rng = np.random.default_rng(seed)
    truth = IHTruth()
    frames, worlds, valids = {}, {}, {}
    for frame_idx, (hand_type, fitted, unannotated) in IH_FRAMES.items():
        present = [s for s in SIDES if hand_type in (s, "interacting")]
        params = {s: random_mano(rng, np.array([0.09 if s == "right" else -0.09, 0.0, 0.0])) for s in SIDES}
        world = {s: mano_world(hand_model, s, params[s]) for s in SIDES}
        joints_world = np.concatenate([world["right"][1], world["left"][1]])
        valid = np.zeros(42, dtype=bool)
        for h, s in enumerate(SIDES):
            if s in present:
                valid[21 * h : 21 * h + 21] = True
            else:
                # garbage (or NaN, which the JSON files may hold), flagged invalid
                joints_world[21 * h : 21 * h + 21] = np.nan if frame_idx == 30 else rng.normal(0, 5, (21, 3))
        valid[list(unannotated)] = False
        frames[frame_idx] = InterHandFrame(
            world_coord=to_ih26m_order(joints_world * 1000.0),
            joint_valid=np.ones(42, dtype=bool),
            mano={s: params[s] if s in fitted else None for s in SIDES},
            hand_type=hand_type,
            hand_type_valid=True,
        )
        worlds[frame_idx] = ({s: world[s][0] if s in fitted else None for s in SIDES}, joints_world, np.concatenate([world[s][0] for s in present]))
        valids[frame_idx] = valid
    everything = np.concatenate([w[2] for w in worlds.values()])
    cameras = {}
    for cam_name in IH_CAMERAS:
        rot, centre, focal, princpt = look_at_camera(rng, everything, distance=1.0)
        cameras[cam_name] = InterHandCamera(campos=centre * 1000.0, camrot=rot, focal=focal, princpt=princpt)
    aid = 1000
    for frame_idx, frame in frames.items():
        for cam_name, cam in cameras.items():
            file_name = f"Capture0/0001_test_seq/cam{cam_name}/image{frame_idx}.jpg"
            rec = InterHandRecord(
                annot_id=aid, image_id=aid + 5000, file_name=file_name, width=IMAGE_HW[1], height=IMAGE_HW[0],
                capture=0, camera=cam_name, frame_idx=frame_idx, hand_type=frame.hand_type,
                joint_valid=to_ih26m_order(valids[frame_idx]), cam=cam, frame=frame, subject=3, seq_name="0001_test_seq",
            )  # fmt: skip
            write_noise_image(image_path(root, split, file_name), IMAGE_HW, rng)
            truth.records.append(rec)
            truth.camrot[aid], truth.campos_mm[aid] = cam.camrot, cam.campos
            truth.focal[aid], truth.princpt[aid] = cam.focal, cam.princpt
            truth.hand_type[aid] = frame.hand_type
            truth.verts_world[aid], truth.joints_world[aid] = worlds[frame_idx][0], worlds[frame_idx][1]
            truth.joint_valid[aid] = valids[frame_idx]
            aid += 1
    truth.human_annot = [r.annot_id for r in truth.records[::2]]
    write_interhand_split(root, split, truth.records, human_annot=truth.human_annot)
    return truth


# ----------------------------------------------------------------------------------- Re:InterHand


@dataclass
class ReIHTruth:
    """Per sample id '<capture>/<cam>/<frame:06d>': R, t (mm), world meshes and joints (m)."""

    R: dict[str, np.ndarray] = field(default_factory=dict)
    t_mm: dict[str, np.ndarray] = field(default_factory=dict)
    focal: dict[str, np.ndarray] = field(default_factory=dict)
    princpt: dict[str, np.ndarray] = field(default_factory=dict)
    verts_world: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    joints_world: dict[str, np.ndarray] = field(default_factory=dict)


REIH_CAMERAS = ("401645", "401650")
REIH_FRAMES = (12, 18)


def make_reinterhand_fixture(root: Path, hand_model: HandModel, seed: int = 0) -> ReIHTruth:
    """One training capture and the three test captures, REIH_CAMERAS x REIH_FRAMES each."""
    rng = np.random.default_rng(seed)
    truth = ReIHTruth()
    for capture in (TRAIN_CAPTURE, *TEST_CAPTURES):
        cap_dir = root / capture
        keypoints, manos, world = {}, {}, {}
        for frame in REIH_FRAMES:
            for s in SIDES:
                manos[(s, frame)] = random_mano(rng, np.array([0.09 if s == "right" else -0.09, 0.0, 0.0]))
                verts, joints = mano_world(hand_model, s, manos[(s, frame)])
                world[(s, frame)] = (verts, joints)
                keypoints[(s, frame)] = ours_to_reih_keypoints(joints * 1000.0, fill=0.0)
        all_verts = np.concatenate([v for v, _ in world.values()])
        cameras = {}
        for cam in REIH_CAMERAS:
            rot, centre, focal, princpt = look_at_camera(rng, all_verts, distance=1.2)
            t_mm = -rot @ centre * 1000.0  # X_cam = R X + t
            cameras[cam] = ReIHCamera(R=rot, t=t_mm, focal=focal, princpt=princpt)
            for frame in REIH_FRAMES:
                write_noise_image(image_file(cap_dir, cam, frame), IMAGE_HW, rng)
                sid = f"{capture}/{cam}/{frame:06d}"
                truth.R[sid], truth.t_mm[sid], truth.focal[sid], truth.princpt[sid] = rot, t_mm, focal, princpt
                truth.verts_world[sid] = {s: world[(s, frame)][0] for s in SIDES}
                truth.joints_world[sid] = np.concatenate([world[(s, frame)][1] for s in SIDES])
        write_capture_files(cap_dir, cameras, keypoints, manos)
    return truth


# -------------------------------------------------------------------------------------------- HIC


@dataclass
class HICTruth:
    """Per annotation id: hand_type and camera-frame meshes (metres, float32 as stored) or None."""

    hand_type: dict[int, str] = field(default_factory=dict)
    verts: dict[int, dict[str, np.ndarray | None]] = field(default_factory=dict)


# annotation id -> (hand_type, hands with a mesh, write binary PLY)
HIC_ANNOTATIONS = {
    7: ("interacting", ("right", "left"), False),
    8: ("right", ("right",), True),
    9: ("interacting", ("right",), True),  # left mesh path is null
}


def make_hic_fixture(root: Path, hand_model: HandModel, seed: int = 0) -> HICTruth:
    """HIC.json, 640x480 images and per-hand PLY meshes in the camera frame."""
    import json

    rng = np.random.default_rng(seed)
    truth = HICTruth()
    images, annotations = [], []
    for aid, (hand_type, meshed, binary) in HIC_ANNOTATIONS.items():
        file_name = f"{aid:02d}/{aid:06d}.jpg"
        path = root / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (640, 480), (90, 120, 150)).save(path)
        images.append({"id": aid + 100, "file_name": file_name, "width": 640, "height": 480})
        ann = {"id": aid, "image_id": aid + 100, "hand_type": hand_type}
        truth.hand_type[aid], truth.verts[aid] = hand_type, {}
        for s in SIDES:
            if s in meshed:
                params = random_mano(rng, np.array([0.09 if s == "right" else -0.09, 0.0, 0.6]))
                verts = mano_world(hand_model, s, params)[0].astype(np.float32)
                rel = f"mano_fits/{aid:06d}_{s}.ply"
                write_ply(root / rel, verts, hand_model.layers[s].faces_tensor.numpy(), binary=binary)
                ann[f"{s}_mano_path"] = rel
                truth.verts[aid][s] = verts
            else:
                ann[f"{s}_mano_path"] = None
                truth.verts[aid][s] = None
        annotations.append(ann)
    with open(root / "HIC.json", "w") as fh:
        json.dump({"images": images, "annotations": annotations}, fh)
    return truth


# ------------------------------------------------------------------------------- MSCOCO-WholeBody


@dataclass
class COCOTruth:
    """Per annotation id: the written annotation (its hand keypoints 21 x 3 in file order, boxes
    x, y, w, h, valid flags) and, for fitted hands, the camera-frame MANO parameters with their
    camera and the mesh / joints they give (metres, that hand's own camera)."""

    annotations: dict[int, dict] = field(default_factory=dict)
    fits: dict[int, dict[str, dict]] = field(default_factory=dict)  # aid -> side -> {mano, focal, princpt, verts, joints}


COCO_IMAGE_HW = (96, 128)
# annotation id -> (image id, what it tests); the kept people are 101, 102, 107, 108, 109
COCO_ANNOTATIONS = {
    101: (1, "both hands, each fitted with its own camera; right index tip unannotated"),
    102: (1, "right hand only, fitted"),
    103: (2, "crowd: dropped"),
    104: (2, "no body keypoint: dropped"),
    105: (2, "no hand valid: dropped"),
    106: (2, "empty body box: dropped"),
    107: (3, "left flag set but empty left box: person kept without a left box, no hand sample"),
    108: (3, "both hands, hand-written keypoints, no fit; right box clipped to the image"),
    109: (3, "both hands, only the left fitted: the sample takes the left camera"),
}
COCO_KEPT = (101, 102, 107, 108, 109)
# hand-written keypoints of annotation 108, file order: right (10 + 2k, 20 + k), left (60 + 2k, 40 + k)
COCO_HANDWRITTEN = {
    "right": np.array([[10.0 + 2 * k, 20.0 + k, 1.0] for k in range(21)]),
    "left": np.array([[60.0 + 2 * k, 40.0 + k, 0.0 if k == 7 else 1.0] for k in range(21)]),
}
COCO_HANDWRITTEN["left"][7, :2] = (5.0, 5.0)  # an unannotated keypoint with stray coordinates


def _coco_fit(rng: np.random.Generator, hand_model: HandModel, side: str, centre: tuple[float, float], crop: float) -> dict:
    """A NeuralAnnot-style fit: a hand fitted in a square crop of `crop` pixels about `centre` with
    focal 5000 and principal point (128, 128) at 256 x 256, i.e. in the image focal 5000 crop / 256
    and the principal point at the crop centre; the hand fills about 60% of the crop."""
    focal = np.full(2, 5000.0 * crop / 256.0)
    princpt = np.asarray(centre, dtype=np.float64)
    params = random_mano(rng, np.zeros(3))
    _, joints = mano_world(hand_model, side, params)
    depth = focal[0] * 0.18 / (0.6 * crop)
    params.trans = params.trans - joints.mean(0) + np.array([rng.normal(0, 0.01), rng.normal(0, 0.01), depth])
    verts, joints = mano_world(hand_model, side, params)
    return {"mano": params, "focal": focal, "princpt": princpt, "verts": verts, "joints": joints}


def _coco_box(kpts: np.ndarray) -> list[float]:
    pts = kpts[kpts[:, 2] > 0, :2]
    lo, hi = pts.min(0) - 2.0, pts.max(0) + 2.0
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def make_mscoco_fixture(root: Path, split: str, hand_model: HandModel, fits: bool = True, seed: int = 0) -> COCOTruth:
    """COCO-WholeBody annotations (COCO_ANNOTATIONS), three small JPEGs under images/<split>2017/ and,
    with `fits`, annotations/MSCOCO_<split>_MANO_NeuralAnnot.json whose keypoints are the fitted
    MANO joints projected with each hand's camera (so the fits and the 2D labels agree)."""
    rng = np.random.default_rng(seed)
    h, w = COCO_IMAGE_HW
    truth = COCOTruth()
    images = []
    for image_id in (1, 2, 3):
        file_name = f"{image_id:012d}.jpg"
        write_noise_image(root / "images" / f"{split}2017" / file_name, COCO_IMAGE_HW, rng)
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h, "license": 1})

    def hand_fields(kpts: np.ndarray | None, box: list[float] | None, flag: bool) -> dict:
        kp = np.zeros(63) if kpts is None else np.asarray(kpts, dtype=np.float64).reshape(-1)
        return {"valid": flag, "box": box if box is not None else [0.0, 0.0, 0.0, 0.0], "kpts": kp.tolist()}

    def random_hand(x_lo: float, flag: bool = True) -> dict:
        kp = np.concatenate([rng.uniform([x_lo, 20.0], [x_lo + 40.0, 70.0], (21, 2)), np.ones((21, 1))], 1)
        return hand_fields(kp, _coco_box(kp), flag)

    fitted = {
        101: {"right": ((40.0, 50.0), 40.0), "left": ((90.0, 45.0), 36.0)},
        102: {"right": ((30.0, 60.0), 44.0)},
        109: {"left": ((95.0, 60.0), 40.0)},
    }
    annotations, neural = [], {}
    for aid, (image_id, _) in COCO_ANNOTATIONS.items():
        hands = {}
        truth.fits[aid] = {}
        for side, (centre, crop) in fitted.get(aid, {}).items():
            fit = _coco_fit(rng, hand_model, side, centre, crop)
            truth.fits[aid][side] = fit
            kp = np.concatenate([project(fit["joints"], fit["focal"], fit["princpt"]), np.full((21, 1), 2.0)], 1)
            if aid == 101 and side == "right":
                kp[8] = 0.0  # index tip not annotated
            hands[side] = hand_fields(kp, _coco_box(kp), True)
        if aid in (103, 104, 105, 106):
            hands = {"right": random_hand(20.0, aid != 105), "left": random_hand(60.0, aid != 105)}
        elif aid == 107:
            hands["left"] = hand_fields(random_hand(60.0)["kpts"], [70.0, 40.0, 0.0, 20.0], True)
        elif aid == 108:
            hands["right"] = hand_fields(COCO_HANDWRITTEN["right"], [-5.0, 10.0, 60.0, 40.0], True)
            hands["left"] = hand_fields(COCO_HANDWRITTEN["left"], [55.0, 35.0, 50.0, 30.0], True)
        elif aid == 109:
            hands["right"] = random_hand(20.0)
        for side in SIDES:
            hands.setdefault(side, hand_fields(None, None, False))
        ann = {
            "id": aid, "image_id": image_id, "category_id": 1, "iscrowd": int(aid == 103), "area": 1000.0,
            "num_keypoints": 0 if aid == 104 else 12, "keypoints": [0.0] * 51, "segmentation": [],
            "bbox": [10.0, 5.0, 0.0 if aid == 106 else 100.0, 80.0],
            "face_box": [0.0] * 4, "face_kpts": [0.0] * 204, "face_valid": False,
            "foot_kpts": [0.0] * 18, "foot_valid": False,
        }  # fmt: skip
        for side in SIDES:
            for key, value in hands[side].items():
                ann[f"{side}hand_{key}"] = value
        annotations.append(ann)
        truth.annotations[aid] = ann
        if truth.fits[aid]:
            neural[str(aid)] = {
                s: None if s not in truth.fits[aid] else {
                    "mano_param": truth.fits[aid][s]["mano"].to_json(),
                    "cam_param": {"focal": truth.fits[aid][s]["focal"].tolist(), "princpt": truth.fits[aid][s]["princpt"].tolist()},
                }
                for s in SIDES
            }  # fmt: skip
    neural["103"] = {"right": {"mano_param": "not read: annotation 103 is dropped"}, "left": None}
    atomic_write_json(root / "annotations" / f"coco_wholebody_{split}_v1.0.json", {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]})
    if fits:
        atomic_write_json(root / "annotations" / f"MSCOCO_{split}_MANO_NeuralAnnot.json", neural)
    return truth
