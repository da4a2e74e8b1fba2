"""Dataset readers: fixture datasets written in the release layouts from known ground truth are
read back into samples that match the truth recomputed here, independently of the readers."""
from __future__ import annotations

import dataclasses
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from fixtures_formats import (
    HIC_ANNOTATIONS,
    IH_CAMERAS,
    REIH_CAMERAS,
    REIH_FRAMES,
    TRAIN_CAPTURE,
    make_hic_fixture,
    make_interhand_fixture,
    make_mscoco_fixture,
    make_reinterhand_fixture,
    write_ply,
)

from handrecon.data.readers import create_reader, list_readers
from handrecon.data.readers.common import DataFormatError, box_from_points
from handrecon.data.readers.hic import FOCAL, PRINCPT, read_ply_vertices
from handrecon.data.readers.interhand import (
    IH26M_WRISTS,
    annotation_path,
    load_interhand_split,
    write_interhand_split,
)
from handrecon.data.readers.reinterhand import TEST_CAPTURES, mano_file
from handrecon.data.sample import check_sample
from handrecon.errors import UserError
from handrecon.hand_model.constants import NUM_VERTS

ATOL = 1e-5  # metres
HANDS = {"right": 0, "left": 1}


def hand_slice(hand: int, per: int = 21) -> slice:
    return slice(hand * per, (hand + 1) * per)


def pinhole(points: np.ndarray, focal, princpt) -> np.ndarray:
    return points[:, :2] / points[:, 2:] * np.asarray(focal) + np.asarray(princpt)


def assert_boxes_contain(sample: dict) -> None:
    for hand in range(2):
        valid = sample["joints_valid"][hand_slice(hand)]
        box = sample["boxes"][hand]
        if not valid.any():
            assert not box.any()
            continue
        pts = sample["joints2d"][hand_slice(hand)][valid]
        assert (pts[:, 0] >= box[0] - 1e-4).all() and (pts[:, 0] <= box[2] + 1e-4).all()
        assert (pts[:, 1] >= box[1] - 1e-4).all() and (pts[:, 1] <= box[3] + 1e-4).all()


@torch.no_grad()
def assert_mano_fields_reproduce_verts(sample: dict, hand_model) -> None:
    """The sample's camera-frame MANO parameters give its mesh."""
    for side, hand in HANDS.items():
        if not sample["mano_valid"][hand]:
            assert not sample["mano_pose"][hand].any() and not sample["mano_transl"][hand].any()
            continue
        pose = torch.as_tensor(sample["mano_pose"][hand])[None]
        shape, transl = (torch.as_tensor(sample[k][hand])[None] for k in ("mano_shape", "mano_transl"))
        out = hand_model.hand(side, shape, pose[:, :3], pose[:, 3:], transl)
        np.testing.assert_allclose(out.vertices[0].numpy(), sample["verts"][hand_slice(hand, NUM_VERTS)], atol=ATOL)


# ------------------------------------------------------------------------------------- registry


def test_registry_lists_and_creates(tmp_path, hand_model):
    assert {"ih26m", "reih", "hic"} <= set(list_readers())
    with pytest.raises(UserError, match="unknown dataset reader 'nope'.*hic, ih26m, mscoco, reih"):
        create_reader("nope", tmp_path, "test", hand_model)
    with pytest.raises(UserError, match="no option 'subst'.*subset"):
        create_reader("ih26m", tmp_path, "test", hand_model, subst="all")
    with pytest.raises(DataFormatError, match=r"InterHand2.6M root folder not found.*datasets/interhand26m.md"):
        create_reader("ih26m", tmp_path / "missing", "test", hand_model)


def test_box_from_points_margin_and_clip():
    pts = np.array([[10.0, 20.0], [30.0, 40.0], [500.0, 500.0]])
    box = box_from_points(pts, np.array([True, True, False]), (48, 64))
    np.testing.assert_allclose(box, [8, 18, 32, 42])  # 20 px extent grown by 1.2 about the centre
    np.testing.assert_allclose(box_from_points(pts, np.array([True, True, True]), (48, 64))[2:], [64, 48])
    assert not box_from_points(pts, np.zeros(3, bool), (48, 64)).any()


# -------------------------------------------------------------------------------- InterHand2.6M


@pytest.fixture(scope="module")
def ih_data(tmp_path_factory, hand_model):
    root = tmp_path_factory.mktemp("ih26m")
    return root, make_interhand_fixture(root, "test", hand_model)


def test_ih26m_samples_match_ground_truth(ih_data, hand_model):
    root, truth = ih_data
    reader = create_reader("ih26m", root, "test", hand_model)
    assert reader.ids == [str(a) for a in truth.hand_type]
    for i in range(len(reader)):
        s = reader[i]
        check_sample(s, f"item {i}")
        aid = int(s["sample_id"])
        R, campos = truth.camrot[aid], truth.campos_mm[aid]
        assert s["hand_type"] == truth.hand_type[aid] and s["source"] == "ih26m"
        assert s["image"].shape == (48, 64, 3) and tuple(s["image_size"]) == (48, 64)
        np.testing.assert_allclose(s["focal"], truth.focal[aid], rtol=1e-6)
        # joints: annotated world joints moved by X_cam = camrot (X - campos), our order
        expected = (truth.joints_world[aid] * 1000.0 - campos) @ R.T / 1000.0
        valid = s["joints_valid"]
        np.testing.assert_allclose(s["joints3d"][valid], expected[valid], atol=ATOL)
        np.testing.assert_allclose(s["joints2d"][valid], pinhole(expected, truth.focal[aid], truth.princpt[aid])[valid], atol=1e-3)
        assert not s["joints3d"][~valid].any() and not s["joints2d"][~valid].any()
        assert_boxes_contain(s)
        for side, hand in HANDS.items():
            world = truth.verts_world[aid][side]
            if s["mesh_valid"][hand]:
                mesh = (world * 1000.0 - campos) @ R.T / 1000.0
                np.testing.assert_allclose(s["verts"][hand_slice(hand, NUM_VERTS)], mesh, atol=ATOL)
                # the annotated joints came from the same MANO fit: wrist at 0 / 21 is the mesh's wrist
                wrist = hand_model.regress_joints(torch.as_tensor(mesh, dtype=torch.float32)[None])[0, 0].numpy()
                if side == "left":
                    wrist = (hand_model.joint_regressor("left") @ torch.as_tensor(mesh, dtype=torch.float32))[0].numpy()
                np.testing.assert_allclose(s["joints3d"][21 * hand], wrist, atol=ATOL)
            else:
                assert not s["verts"][hand_slice(hand, NUM_VERTS)].any()
        assert_mano_fields_reproduce_verts(s, hand_model)


def test_ih26m_validity_rules(ih_data, hand_model):
    root, truth = ih_data
    reader = create_reader("ih26m", root, "test", hand_model, load_images=False)
    by_frame = {reader.get_meta(i)["frame_idx"]: reader[i] for i in range(len(reader))}
    # interacting, both fits
    s = by_frame[10]
    assert s["mano_valid"].tolist() == [True, True] and s["mesh_valid"].tolist() == [True, True] and s["joints_valid"].all()
    # right-only: the left hand is invalid and all zeros
    s = by_frame[20]
    assert s["hand_type"] == "right" and s["mano_valid"].tolist() == [True, False]
    assert not s["joints_valid"][21:].any() and not s["joints3d"][21:].any() and not s["verts"][NUM_VERTS:].any()
    assert not s["boxes"][1].any() and not s["mano_shape"][1].any() and s["boxes"][0].any()
    s = by_frame[30]
    assert s["hand_type"] == "left" and s["mano_valid"].tolist() == [False, True] and not s["joints_valid"][:21].any()
    # interacting, left fit missing (null in MANO_NeuralAnnot): left joints valid, left mesh not
    s = by_frame[40]
    assert s["mano_valid"].tolist() == [True, False] and s["mesh_valid"].tolist() == [True, False]
    assert s["joints_valid"][21:].all() and not s["joints_valid"][8] and s["joints_valid"][:8].all()
    # left wrist not annotated: the whole left hand is invalid, fit dropped as InterWild does
    s = by_frame[50]
    assert not s["joints_valid"][21:].any() and s["mano_valid"].tolist() == [True, False] and not s["boxes"][1].any()


def test_ih26m_annotation_labels_follow_interwilds_loader(ih_data, hand_model):
    """InterWild's evaluate() inputs: joint_trunc (annotation x wrist flag, a hand without a box
    cleared), the 1 mm placeholder for joints without 3D, and the samples its loader drops."""
    root, truth = ih_data
    reader = create_reader("ih26m", root, "test", hand_model, load_images=False)
    base = {rec.frame_idx: rec for rec in reader.records}  # one record per frame (the last camera)
    wrists_only = np.zeros(42, bool)
    wrists_only[list(IH26M_WRISTS)] = True  # one annotated joint per hand: a zero-size box, which sanitize_bbox refuses
    no3d = dataclasses.replace(base[10].frame, joint_valid=np.r_[np.ones(21, bool), np.zeros(21, bool)])  # IH order: right, left
    reader.records = [
        base[20],  # right-only: the left hand's garbage joints are annotated invalid
        base[50],  # left wrist not annotated: the whole left hand is cleared
        dataclasses.replace(base[10], joint_valid=wrists_only),  # no hand has a box: dropped
        dataclasses.replace(base[10], frame=no3d),  # left without 3D: every joint at the placeholder, one pixel: no box
        dataclasses.replace(base[10], joint_valid=np.zeros(42, bool)),  # nothing annotated: dropped
    ]
    got = reader.annotation_labels()
    expect_valid = [
        np.r_[np.ones(21, bool), np.zeros(21, bool)],
        np.r_[np.ones(21, bool), np.zeros(21, bool)],
        np.zeros(42, bool),
        np.r_[np.ones(21, bool), np.zeros(21, bool)],
        np.zeros(42, bool),
    ]
    np.testing.assert_array_equal(got["annot_joints_valid"], np.stack(expect_valid))
    assert got["annot_sample_valid"].tolist() == [True, True, False, True, False]
    # joints: the annotation in the camera (metres); a joint without 3D at 1 mm on every axis
    rec = reader.records[3]
    cam = (truth.joints_world[rec.annot_id] * 1000.0 - rec.cam.campos) @ rec.cam.camrot.T / 1000.0
    np.testing.assert_allclose(got["annot_joints3d"][3, :21], cam[:21], atol=1e-9)
    np.testing.assert_array_equal(got["annot_joints3d"][3, 21:], np.full((21, 3), 0.001))


def test_ih26m_meta_is_cheap_and_images_are_checked(tmp_path, hand_model):
    make_interhand_fixture(tmp_path, "val", hand_model, seed=1)
    reader = create_reader("ih26m", tmp_path, "val", hand_model)
    meta = reader.get_meta(-1)
    assert meta["sample_id"] == reader.ids[-1] and meta["camera"] == IH_CAMERAS[1] and meta["image_size"] == (48, 64)
    (tmp_path / "images" / "val" / "Capture0").rename(tmp_path / "gone")  # no image can be read now
    assert reader.get_meta(0)["image_path"].endswith(".jpg")
    assert "image" not in create_reader("ih26m", tmp_path, "val", hand_model, load_images=False)[0]
    with pytest.raises(DataFormatError, match=r"image not found: expected the file .*images/val/Capture0/.*image10.jpg"):
        reader[0]
    with pytest.raises(IndexError):
        reader.get_meta(len(reader))


def test_ih26m_human_annot_subset(tmp_path, ih_data, hand_model):
    root, truth = ih_data
    reader = create_reader("ih26m", root, "test", hand_model, subset="human_annot", load_images=False)
    assert reader.ids == [str(a) for a in truth.human_annot]
    # v0.0 layout: annotations/human_annot/InterHand2.6M_test_data.json instead of the id list
    shutil.copytree(root / "annotations", tmp_path / "annotations")
    v0 = tmp_path / "annotations" / "human_annot" / "InterHand2.6M_test_data.json"
    v0.parent.mkdir()
    data = json.loads(annotation_path(root, "test", "data").read_text())
    data["annotations"] = data["annotations"][:3]
    v0.write_text(json.dumps(data))
    assert create_reader("ih26m", tmp_path, "test", hand_model, subset="human_annot").ids == [str(a["id"]) for a in data["annotations"]]
    v0.unlink()
    with pytest.raises(DataFormatError, match=r"subset='human_annot' needs .*aid_human_annot_test.txt.*datasets/interhand26m.md"):
        create_reader("ih26m", tmp_path, "test", hand_model, subset="human_annot")
    with pytest.raises(DataFormatError, match="subset must be one of all, human_annot"):
        create_reader("ih26m", root, "test", hand_model, subset="machine")


def test_ih26m_write_load_round_trip(tmp_path, ih_data):
    _, truth = ih_data
    write_interhand_split(tmp_path, "train", truth.records)
    loaded = load_interhand_split(tmp_path, "train")
    assert len(loaded) == len(truth.records)
    for a, b in zip(truth.records, loaded):
        for key in RECORD_SCALARS:
            assert getattr(a, key) == getattr(b, key), key
        assert np.array_equal(a.joint_valid, b.joint_valid)
        assert a.cam.equals(b.cam) and a.frame.equals(b.frame)
        assert b.bbox is not None and b.bbox[2] > 0 and b.bbox[3] > 0  # computed by the writer
    # joint_valid stored as 42x1 (as some releases do) reads the same
    def nest(data):
        for ann in data["annotations"]:
            ann["joint_valid"] = [[v] for v in ann["joint_valid"]]

    _edit_json(annotation_path(tmp_path, "train", "data"), nest)
    assert all(np.array_equal(a.joint_valid, b.joint_valid) for a, b in zip(loaded, load_interhand_split(tmp_path, "train")))
    write_interhand_split(tmp_path, "train", loaded)
    # written again from what was read: the files are identical
    write_interhand_split(tmp_path / "again", "train", loaded)
    for kind in ("data", "camera", "joint_3d", "MANO_NeuralAnnot"):
        assert annotation_path(tmp_path, "train", kind).read_text() == annotation_path(tmp_path / "again", "train", kind).read_text()
    # records that disagree about one camera are refused
    moved = dataclasses.replace(truth.records[0].cam, campos=truth.records[0].cam.campos + 1.0)
    bad = [truth.records[0], dataclasses.replace(truth.records[2], cam=moved)]
    assert bad[0].camera == bad[1].camera
    with pytest.raises(ValueError, match="disagree about capture 0 camera"):
        write_interhand_split(tmp_path / "bad", "train", bad)


RECORD_SCALARS = (
    "annot_id", "image_id", "file_name", "width", "height", "capture", "camera", "frame_idx",
    "hand_type", "hand_type_valid", "subject", "seq_name", "extra",
)  # fmt: skip


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "kind, edit, message",
    [
        ("camera", lambda d: d["0"]["camrot"].__setitem__("400262", [1, 0, 0]),
         r"^InterHand2.6M_test_camera.json: capture '0' camera '400262': field 'camrot' must be 3x3, got shape \(3,\)"),
        ("camera", lambda d: d["0"]["focal"].pop("400263"),
         r"InterHand2.6M_test_camera.json: capture '0' camera '400263': field 'focal' has no entry for camera '400263'"),
        ("data", lambda d: d["annotations"][1].__setitem__("hand_type", "both"),
         r"InterHand2.6M_test_data.json: annotation 1001: field 'hand_type' must be one of right, left, interacting, got 'both'"),
        ("data", lambda d: d["annotations"][0].__setitem__("joint_valid", [1] * 21),
         r"InterHand2.6M_test_data.json: annotation 1000: field 'joint_valid' must be a list of 42 numbers, got shape \(21,\)"),
        ("data", lambda d: d["images"][0].pop("frame_idx"),
         r"InterHand2.6M_test_data.json: image 6000: missing field 'frame_idx'"),
        ("joint_3d", lambda d: d["0"]["10"].__setitem__("world_coord", [[0, 0, 0]] * 41),
         r"InterHand2.6M_test_joint_3d.json: capture '0' frame '10': field 'world_coord' must be 42x3, got shape \(41, 3\)"),
        ("MANO_NeuralAnnot", lambda d: d["0"]["10"]["left"].__setitem__("shape", [0.0] * 9),
         r"InterHand2.6M_test_MANO_NeuralAnnot.json: capture '0' frame '10' hand 'left': field 'shape' must be a list of 10 numbers"),
    ],
)  # fmt: skip
def test_ih26m_malformed_fields_are_named(tmp_path, ih_data, hand_model, kind, edit, message):
    root, _ = ih_data
    shutil.copytree(root / "annotations", tmp_path / "annotations")
    _edit_json(annotation_path(tmp_path, "test", kind), edit)
    with pytest.raises(DataFormatError, match=message):
        create_reader("ih26m", tmp_path, "test", hand_model)


def test_ih26m_missing_or_broken_files(tmp_path, ih_data, hand_model):
    root, _ = ih_data
    shutil.copytree(root / "annotations", tmp_path / "annotations")
    path = annotation_path(tmp_path, "test", "joint_3d")
    path.unlink()
    expected = r"InterHand2.6M 3D joint file not found: expected the file .*annotations/test/InterHand2.6M_test_joint_3d.json"
    with pytest.raises(DataFormatError, match=expected + "; see datasets/interhand26m.md"):
        create_reader("ih26m", tmp_path, "test", hand_model)
    path.write_text("{not json")
    with pytest.raises(DataFormatError, match=r"InterHand2.6M_test_joint_3d.json: not valid JSON \(.* line 1, column 2\)"):
        create_reader("ih26m", tmp_path, "test", hand_model)


# ---------------------------------------------------------------------------------- Re:InterHand


@pytest.fixture(scope="module")
def reih_data(tmp_path_factory, hand_model):
    root = tmp_path_factory.mktemp("reih")
    return root, make_reinterhand_fixture(root, hand_model)


def test_reih_splits_by_capture(reih_data, hand_model):
    root, _ = reih_data
    test = create_reader("reih", root, "test", hand_model, load_images=False)
    train = create_reader("reih", root, "train", hand_model, load_images=False)
    per_capture = len(REIH_CAMERAS) * len(REIH_FRAMES)
    assert len(test) == 3 * per_capture and {i.split("/")[0] for i in test.ids} == set(TEST_CAPTURES)
    assert len(train) == per_capture and {i.split("/")[0] for i in train.ids} == {TRAIN_CAPTURE}
    assert train.ids[0] == f"{TRAIN_CAPTURE}/{REIH_CAMERAS[0]}/{REIH_FRAMES[0]:06d}"
    # InterWild's layout keeps the captures under data/
    nested = root.parent / "reih_nested"
    (nested / "data").mkdir(parents=True)
    (nested / "data" / TRAIN_CAPTURE).symlink_to(root / TRAIN_CAPTURE)
    assert create_reader("reih", nested, "train", hand_model).ids == train.ids


def test_reih_samples_use_x_cam_equals_r_x_plus_t(reih_data, hand_model):
    root, truth = reih_data
    reader = create_reader("reih", root, "train", hand_model)
    for i in range(len(reader)):
        s = reader[i]
        check_sample(s, f"item {i}")
        sid = s["sample_id"]
        R, t = truth.R[sid], truth.t_mm[sid] / 1000.0
        assert s["hand_type"] == "interacting" and s["image"].shape == (48, 64, 3)
        assert s["mano_valid"].all() and s["mesh_valid"].all() and s["joints_valid"].all()
        for side, hand in HANDS.items():
            np.testing.assert_allclose(s["verts"][hand_slice(hand, NUM_VERTS)], truth.verts_world[sid][side] @ R.T + t, atol=ATOL)
        joints = truth.joints_world[sid] @ R.T + t
        np.testing.assert_allclose(s["joints3d"], joints, atol=ATOL)
        np.testing.assert_allclose(s["joints3d"][[0, 21]], joints[[0, 21]], atol=ATOL)  # wrists first per hand
        np.testing.assert_allclose(s["joints2d"], pinhole(joints, truth.focal[sid], truth.princpt[sid]), atol=1e-3)
        assert_boxes_contain(s)
        assert_mano_fields_reproduce_verts(s, hand_model)


def test_reih_missing_files(tmp_path, reih_data, hand_model):
    root, _ = reih_data
    shutil.copytree(root / TRAIN_CAPTURE, tmp_path / TRAIN_CAPTURE)
    missing = mano_file(tmp_path / TRAIN_CAPTURE, "left", REIH_FRAMES[1])
    missing.unlink()
    expected = rf"capture {TRAIN_CAPTURE}: annotation files missing for some images: .*{missing.name}.*InterWild issue #27"
    with pytest.raises(DataFormatError, match=expected + ".*on_missing='skip'"):
        create_reader("reih", tmp_path, "train", hand_model)
    counts = rf"\({len(REIH_CAMERAS)} of {len(REIH_CAMERAS) * len(REIH_FRAMES)} images skipped\)"
    with pytest.warns(UserWarning, match=rf"{TRAIN_CAPTURE}: annotation files missing .*{counts}"):
        reader = create_reader("reih", tmp_path, "train", hand_model, on_missing="skip")
    assert len(reader) == len(REIH_CAMERAS) and all(i.endswith(f"{REIH_FRAMES[0]:06d}") for i in reader.ids)
    # test split with none of the test captures present
    with pytest.raises(DataFormatError, match=rf"capture {TEST_CAPTURES[0]}: the capture folder is missing"):
        create_reader("reih", tmp_path, "test", hand_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(create_reader("reih", tmp_path, "test", hand_model, on_missing="skip")) == 0
    assert sum("capture folder is missing" in str(w.message) for w in caught) == 3
    with pytest.raises(DataFormatError, match="on_missing must be one of error, skip"):
        create_reader("reih", tmp_path, "train", hand_model, on_missing="ignore")


def test_reih_malformed_camera_is_named(tmp_path, reih_data, hand_model):
    root, _ = reih_data
    shutil.copytree(root / TRAIN_CAPTURE, tmp_path / TRAIN_CAPTURE)
    path = tmp_path / TRAIN_CAPTURE / "Mugsy_cameras" / "cam_params.json"
    _edit_json(path, lambda d: d[REIH_CAMERAS[1]].__setitem__("t", [1.0, 2.0]))
    expected = rf"{TRAIN_CAPTURE}/Mugsy_cameras/cam_params.json: camera '{REIH_CAMERAS[1]}': "
    with pytest.raises(DataFormatError, match=expected + r"field 't' must be a list of 3 numbers, got shape \(2,\)"):
        create_reader("reih", tmp_path, "train", hand_model)


# -------------------------------------------------------------------------------------------- HIC


@pytest.mark.parametrize("binary", [False, True])
def test_ply_round_trip(tmp_path, binary):
    verts = np.random.default_rng(0).normal(0, 0.1, (NUM_VERTS, 3)).astype(np.float32)
    faces = np.arange(30).reshape(10, 3)
    write_ply(tmp_path / "m.ply", verts, faces, binary=binary)
    np.testing.assert_array_equal(read_ply_vertices(tmp_path / "m.ply").astype(np.float32), verts)


def test_ply_big_endian_with_faces_first_and_extra_properties(tmp_path):
    verts = np.array([[1.5, -2.0, 3.25], [0.0, 0.5, -1.0]])
    header = (
        "ply\nformat binary_big_endian 1.0\nelement face 1\nproperty list uchar int vertex_indices\n"
        "element vertex 2\nproperty double x\nproperty double y\nproperty double z\nproperty uchar red\nend_header\n"
    )
    body = np.array([3], ">u1").tobytes() + np.array([0, 1, 1], ">i4").tobytes()
    rows = np.zeros(2, dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("red", "u1")])
    rows["x"], rows["y"], rows["z"] = verts.T
    (tmp_path / "be.ply").write_bytes(header.encode() + body + rows.tobytes())
    np.testing.assert_array_equal(read_ply_vertices(tmp_path / "be.ply"), verts)
    header = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    (tmp_path / "bad.ply").write_text(header + "1 2 3\n")
    with pytest.raises(DataFormatError, match=r"bad.ply: PLY file ends inside the vertex block \(2 vertices declared, 1 found\)"):
        read_ply_vertices(tmp_path / "bad.ply")


@pytest.fixture(scope="module")
def hic_data(tmp_path_factory, hand_model):
    root = tmp_path_factory.mktemp("hic")
    return root, make_hic_fixture(root, hand_model)


def test_hic_samples_match_meshes(hic_data, hand_model):
    root, truth = hic_data
    reader = create_reader("hic", root, "test", hand_model)
    assert reader.ids == [str(a) for a in HIC_ANNOTATIONS]
    for i in range(len(reader)):
        s = reader[i]
        check_sample(s, f"item {i}")
        aid = int(s["sample_id"])
        assert s["hand_type"] == truth.hand_type[aid] and s["image"].shape == (480, 640, 3)
        np.testing.assert_array_equal(s["focal"], [525, 525])
        np.testing.assert_array_equal(s["princpt"], [319.5, 239.5])
        assert not s["mano_valid"].any() and not s["mano_pose"].any()
        for side, hand in HANDS.items():
            mesh = truth.verts[aid][side]
            part = hand_slice(hand)
            if mesh is None:
                assert not s["mesh_valid"][hand] and not s["verts"][hand_slice(hand, NUM_VERTS)].any()
                assert not s["joints_valid"][part].any() and not s["joints3d"][part].any() and not s["boxes"][hand].any()
                continue
            assert s["mesh_valid"][hand] and s["joints_valid"][part].all()
            np.testing.assert_array_equal(s["verts"][hand_slice(hand, NUM_VERTS)], mesh)
            joints = (hand_model.joint_regressor(side) @ torch.as_tensor(mesh)).numpy()
            np.testing.assert_allclose(s["joints3d"][part], joints, atol=1e-6)
            np.testing.assert_allclose(s["joints2d"][part], pinhole(joints, FOCAL, PRINCPT), atol=1e-3)
            projected = pinhole(mesh.astype(np.float64), FOCAL, PRINCPT)
            box = s["boxes"][hand]
            assert (projected >= box[:2] - 1e-3).all() and (projected <= box[2:] + 1e-3).all()
        assert_boxes_contain(s)


def test_hic_errors(tmp_path, hic_data, hand_model):
    root, _ = hic_data
    with pytest.raises(DataFormatError, match=r"HIC annotation file HIC.json not found: expected the file .*HIC.json; see datasets/hic.md"):
        create_reader("hic", tmp_path, "test", hand_model)
    with pytest.raises(DataFormatError, match="split must be one of test, got 'train'"):
        create_reader("hic", root, "train", hand_model)
    shutil.copytree(root, tmp_path / "data")  # InterWild's data/ folder is found too
    (tmp_path / "data" / "mano_fits" / "000007_left.ply").unlink()
    reader = create_reader("hic", tmp_path, "test", hand_model, load_images=False)
    with pytest.raises(DataFormatError, match=r"HIC hand mesh not found: expected the file .*mano_fits/000007_left.ply"):
        reader[0]
    _edit_json(tmp_path / "data" / "HIC.json", lambda d: d["annotations"][2].__setitem__("left_mano_path", 5))
    with pytest.raises(DataFormatError, match=r"HIC.json: annotation 9: field 'left_mano_path' must be str or NoneType, got int: 5"):
        create_reader("hic", tmp_path, "test", hand_model)


def test_samples_collate_across_readers(ih_data, reih_data, hic_data, hand_model):
    batch = [
        create_reader("ih26m", ih_data[0], "test", hand_model, load_images=False)[0],
        create_reader("reih", reih_data[0], "train", hand_model, load_images=False)[0],
        create_reader("hic", hic_data[0], "test", hand_model, load_images=False)[1],
    ]
    out = torch.utils.data.default_collate(batch)
    assert out["verts"].shape == (3, 2 * NUM_VERTS, 3) and out["source"] == ["ih26m", "reih", "hic"]


def test_mano_labels_leave_meshes_to_the_batch_step(ih_data, reih_data, hic_data, hand_model, tmp_path):
    """labels='mano': no mesh per item (annotated joints, boxes and MANO parameters as with 'full');
    one batched forward gives the meshes of 'full', hands without MANO keep their labels."""
    from handrecon.data.labels import labels_from_mano

    make_mscoco_fixture(tmp_path, "train", hand_model)
    readers = (("ih26m", ih_data[0], "test"), ("reih", reih_data[0], "train"), ("hic", hic_data[0], "test"), ("mscoco", tmp_path, "train"))
    for kind, root, split in readers:
        full = create_reader(kind, root, split, hand_model, load_images=False)
        mano = create_reader(kind, root, split, hand_model, load_images=False, labels="mano")
        samples = [mano[i] for i in range(len(mano))]
        for s in samples:
            check_sample(s)
            assert (s["mesh_pending"] == s["mano_valid"]).all() and not s["joints_pending"].any()
            assert not s["verts"][np.repeat(s["mesh_pending"], NUM_VERTS)].any()
        batch = labels_from_mano(torch.utils.data.default_collate(samples), hand_model)
        ref = torch.utils.data.default_collate([full[i] for i in range(len(full))])
        for key, value in ref.items():
            if key == "verts":
                torch.testing.assert_close(batch[key], value, atol=1e-5, rtol=0)
            elif torch.is_tensor(value):
                assert torch.equal(batch[key], value), (kind, key)
            else:
                assert batch[key] == value, (kind, key)
        if kind == "ih26m":  # frame 40: no left fit but annotated left joints, kept by the batch step as they were
            assert any(not s["mano_valid"][1] and s["joints_valid"][21:].all() and s["joints3d"][21:].any() for s in samples)
        pending = {"ih26m": True, "reih": True, "hic": False, "mscoco": True}[kind]
        assert bool(torch.as_tensor(np.stack([s["mesh_pending"] for s in samples])).any()) == pending
    with pytest.raises(ValueError, match="labels must be one of full, mano, got 'mesh'"):
        create_reader("ih26m", ih_data[0], "test", hand_model, labels="mesh")


def test_every_dataset_is_declared_once_with_its_reader_rules_and_card():
    from pathlib import Path

    from handrecon.data.readers import dataset_spec, list_datasets, list_readers, register_dataset
    from handrecon.metrics import DATASET_RULES

    repo = Path(__file__).resolve().parents[1]
    assert list_datasets() == ["hic", "ih26m", "mscoco", "procedural", "reih"]
    for name in list_datasets():
        spec = dataset_spec(name)
        assert spec.reader in list_readers() and spec.rules in DATASET_RULES and (repo / spec.card).is_file(), spec
    assert dataset_spec("ih26m").protocol_options == {"subset": "human_annot"}  # InterWild's H test set
    assert dataset_spec("procedural").protocol_options == {}
    with pytest.raises(UserError, match="unknown dataset 'nope'; choose one of: hic, ih26m, mscoco, procedural, reih"):
        dataset_spec("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("hic", reader="ih26m", rules="hic", card="datasets/hic.md")
