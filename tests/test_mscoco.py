"""MSCOCO-WholeBody reader: a fixture written in the release format (COCO-WholeBody v1.0 json,
JPEGs, NeuralAnnot fits made from the stand-in MANO) read back into samples that follow
InterWild's selection rules, the annotation and the fits."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from fixtures_formats import COCO_IMAGE_HW, COCO_KEPT, make_interhand_fixture, make_mscoco_fixture
from torch.utils.data import default_collate

from handrecon import metrics
from handrecon.camera import project
from handrecon.data.augment import crop_to_input, flip_sample
from handrecon.data.readers import create_reader, dataset_spec
from handrecon.data.readers.common import DataFormatError
from handrecon.data.readers.mscoco import annotation_file, camera_change, clip_box, fits_file, nominal_camera
from handrecon.data.sample import check_sample
from handrecon.evaluation import load_ground_truth
from handrecon.hand_model.constants import JOINT_NAMES, NUM_VERTS
from handrecon.models import create_model

SIDES = ("right", "left")


def hand_rows(hand: int, per: int = 21) -> slice:
    return slice(hand * per, (hand + 1) * per)


@pytest.fixture(scope="module")
def coco(tmp_path_factory, hand_model):
    root = tmp_path_factory.mktemp("mscoco")
    return root, make_mscoco_fixture(root, "train", hand_model)


@pytest.fixture(scope="module")
def coco_val(tmp_path_factory, hand_model):
    """The same people without a fits file (as the val release)."""
    root = tmp_path_factory.mktemp("mscoco_val")
    return root, make_mscoco_fixture(root, "val", hand_model, fits=False)


def _kpts(truth, aid: int, side: str) -> np.ndarray:
    return np.asarray(truth.annotations[aid][f"{side}hand_kpts"], dtype=np.float64).reshape(21, 3)


def _mesh_joints2d(sample: dict, hand_model) -> np.ndarray:
    joints = hand_model.regress_joints(torch.as_tensor(sample["verts"])[None])[0].numpy()
    return project(joints, sample["focal"], sample["princpt"])


# ---------------------------------------------------------------------------------- selection


def test_clip_box_is_interwilds_sanitize_bbox():
    np.testing.assert_allclose(clip_box([10, 20, 30, 40], 128, 96), [10, 20, 39, 59])  # x1 = x0 + w - 1
    np.testing.assert_allclose(clip_box([-5, 10, 60, 40], 128, 96), [0, 10, 59, 49])
    np.testing.assert_allclose(clip_box([100, 80, 50, 50], 128, 96), [100, 80, 127, 95])
    for empty in ([10, 20, 0, 40], [10, 20, -5, -5], [10, 20, 1, 40], [130, 20, 10, 10]):
        assert clip_box(empty, 128, 96) is None, empty


def test_people_and_hands_follow_interwilds_rules(coco, hand_model):
    root, truth = coco
    people = create_reader("mscoco", root, "train", hand_model, load_images=False)
    # crowd (103), no body keypoint (104), no valid hand (105) and an empty body box (106) are dropped
    assert people.ids == [str(a) for a in COCO_KEPT]
    types = {people.get_meta(i)["sample_id"]: people.get_meta(i)["hand_type"] for i in range(len(people))}
    assert types == {"101": "interacting", "102": "right", "107": "left", "108": "interacting", "109": "interacting"}
    hands = create_reader("mscoco", root, "train", hand_model, load_images=False, crop="hand")
    # one sample per hand with a box: 107's left flag is set but its box is empty
    assert hands.ids == ["101_right", "101_left", "102_right", "108_right", "108_left", "109_right", "109_left"]
    assert [hands.get_meta(i)["hand_type"] for i in range(len(hands))] == ["right", "left", "right", "right", "left", "right", "left"]

    by_id = {people.ids[i]: people[i] for i in range(len(people))}
    s = by_id["107"]
    assert not s["boxes"].any() and s["joints2d_valid"][21:].all() and not s["joints2d_valid"][:21].any()
    s = by_id["108"]
    np.testing.assert_allclose(s["boxes"], [[0, 10, 59, 49], [55, 35, 104, 64]])  # the right box clipped at x = 0
    s = by_id["102"]  # the left hand's flag is not set: no box, no keypoint, no fit
    assert not s["boxes"][1].any() and not s["joints2d_valid"][21:].any() and s["mano_valid"].tolist() == [True, False]
    meta = people.get_meta(0)
    assert meta["annotation_id"] == 101 and meta["image_id"] == 1 and meta["image_path"].endswith("images/train2017/000000000001.jpg")
    np.testing.assert_allclose(meta["body_box"], [10, 5, 109, 84])


def test_joint_order_is_checked_on_a_hand_written_case(coco, hand_model):
    root, _ = coco
    reader = create_reader("mscoco", root, "train", hand_model, load_images=False)
    s = reader[reader.ids.index("108")]
    # COCO-WholeBody hand keypoint k: 0 wrist, 1-4 thumb, 5-8 index, 9-12 middle, 13-16 ring,
    # 17-20 pinky (4 = tip); the fixture wrote right (10 + 2k, 20 + k), left (60 + 2k, 40 + k)
    coco_order = ["wrist"] + [f"{finger}{n}" for finger in ("thumb", "index", "middle", "ring", "pinky") for n in (1, 2, 3, 4)]
    for k, name in enumerate(coco_order):
        ours = JOINT_NAMES.index(name)
        np.testing.assert_array_equal(s["joints2d"][ours], [10 + 2 * k, 20 + k])  # right hand first
        if k != 7:
            np.testing.assert_array_equal(s["joints2d"][21 + ours], [60 + 2 * k, 40 + k])
    assert s["joints2d"][JOINT_NAMES.index("thumb4")].tolist() == [18, 24]
    assert s["joints2d"][21 + JOINT_NAMES.index("pinky1")].tolist() == [94, 57]
    # left keypoint 7 (index3) has score 0: invalid, and zeros although the file has (5, 5) there
    index3 = 21 + JOINT_NAMES.index("index3")
    assert not s["joints2d_valid"][index3] and not s["joints2d"][index3].any()
    assert s["joints2d_valid"].sum() == 41


def test_2d_labels_equal_the_annotation_and_3d_is_absent(coco, hand_model):
    root, truth = coco
    for crop in ("person", "hand"):
        reader = create_reader("mscoco", root, "train", hand_model, crop=crop)
        for i in range(len(reader)):
            s = reader[i]
            check_sample(s, f"{crop} item {i}")
            assert s["image"].shape == (*COCO_IMAGE_HW, 3) and s["source"] == "mscoco"
            aid = int(s["sample_id"].split("_")[0])
            labelled = [SIDES.index(s["sample_id"].split("_")[1])] if crop == "hand" else [0, 1]
            for hand, side in enumerate(SIDES):
                rows = hand_rows(hand)
                if hand not in labelled:  # a hand sample carries only its hand
                    assert not s["joints2d_valid"][rows].any() and not s["boxes"][hand].any() and not s["mano_valid"][hand]
                    continue
                kp = _kpts(truth, aid, side)
                valid = kp[:, 2] > 0
                np.testing.assert_array_equal(s["joints2d_valid"][rows], valid)
                np.testing.assert_allclose(s["joints2d"][rows], np.where(valid[:, None], kp[:, :2], 0), atol=1e-4)
            # no 3D annotation: every 3D joint label is invalid and zero
            assert not s["joints_valid"].any() and not s["joints3d"].any()


def test_fits_give_meshes_that_project_onto_the_keypoints(coco, hand_model):
    root, truth = coco
    hands = create_reader("mscoco", root, "train", hand_model, load_images=False, crop="hand")
    fitted = 0
    for i in range(len(hands)):
        s = hands[i]
        aid, side = s["sample_id"].split("_")
        hand = SIDES.index(side)
        fit = truth.fits[int(aid)].get(side)
        if fit is None:
            assert not s["mano_valid"].any() and not s["verts"].any()
            np.testing.assert_allclose(s["focal"], nominal_camera(COCO_IMAGE_HW)[0])
            continue
        fitted += 1
        # a hand sample is seen by its fit's own camera: the mesh is the fitted one, exactly
        np.testing.assert_allclose(s["focal"], fit["focal"], rtol=1e-6)
        np.testing.assert_allclose(s["princpt"], fit["princpt"], rtol=1e-6)
        np.testing.assert_allclose(s["verts"][hand_rows(hand, NUM_VERTS)], fit["verts"], atol=1e-5)
        assert s["mano_valid"][hand] and s["mesh_valid"][hand]
        valid = s["joints2d_valid"][hand_rows(hand)]
        uv = _mesh_joints2d(s, hand_model)[hand_rows(hand)]
        np.testing.assert_allclose(uv[valid], s["joints2d"][hand_rows(hand)][valid], atol=1e-3)
    assert fitted == 4

    people = create_reader("mscoco", root, "train", hand_model, load_images=False)
    for i in range(len(people)):
        s = people[i]
        aid = int(s["sample_id"])
        fits = truth.fits[aid]
        assert s["mano_valid"].tolist() == [side in fits for side in SIDES] == s["mesh_valid"].tolist()
        if not fits:
            np.testing.assert_allclose(s["focal"], nominal_camera(COCO_IMAGE_HW)[0])
            continue
        first = next(side for side in SIDES if side in fits)  # the sample takes its first fit's camera
        np.testing.assert_allclose(s["focal"], fits[first]["focal"], rtol=1e-6)
        uv = _mesh_joints2d(s, hand_model)
        for hand, side in enumerate(SIDES):
            if side in fits:
                valid = s["joints2d_valid"][hand_rows(hand)]
                # 101's left fit has its own camera: moved into the right's, it lands within 0.05 px
                tol = 1e-3 if side == first else 0.05
                np.testing.assert_allclose(uv[hand_rows(hand)][valid], s["joints2d"][hand_rows(hand)][valid], atol=tol)
        # the camera-frame MANO parameters reproduce the mesh
        for hand, side in enumerate(SIDES):
            if s["mano_valid"][hand]:
                pose = torch.as_tensor(s["mano_pose"][hand])[None]
                shape, transl = (torch.as_tensor(s[k][hand])[None] for k in ("mano_shape", "mano_transl"))
                out = hand_model.hand(side, shape, pose[:, :3], pose[:, 3:], transl)
                np.testing.assert_allclose(out.vertices[0].numpy(), s["verts"][hand_rows(hand, NUM_VERTS)], atol=1e-5)
                np.testing.assert_allclose(s["mano_pose"][hand][3:], fits[side]["mano"].pose[3:], atol=1e-6)  # hand pose kept


def test_camera_change_keeps_the_wrist_pixel_and_is_rigid():
    rng = np.random.default_rng(3)
    wrist = np.array([0.1, -0.05, 4.0])
    rot, trans = camera_change(wrist, [700.0, 700.0], [60.0, 40.0], [800.0, 800.0], [20.0, 50.0])
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    moved = rot @ wrist + trans
    np.testing.assert_allclose(project(moved[None], [800.0, 800.0], [20.0, 50.0]), project(wrist[None], [700.0, 700.0], [60.0, 40.0]), atol=1e-9)
    assert moved[2] == pytest.approx(wrist[2] * 800 / 700)
    points = wrist + rng.normal(0, 0.05, (50, 3))  # a hand-sized cloud: first-order agreement
    err = project(points @ rot.T + trans, [800.0, 800.0], [20.0, 50.0]) - project(points, [700.0, 700.0], [60.0, 40.0])
    assert np.abs(err).max() < 0.1
    rot, trans = camera_change(wrist, [700.0, 700.0], [60.0, 40.0], [700.0, 700.0], [60.0, 40.0])
    assert np.array_equal(rot, np.eye(3)) and not trans.any()


def test_mano_fits_option(coco, coco_val, hand_model, tmp_path):
    root, _ = coco
    val_root, _ = coco_val
    for reader in (
        create_reader("mscoco", root, "train", hand_model, load_images=False, mano_fits="none"),
        create_reader("mscoco", val_root, "val", hand_model, load_images=False),  # 'auto' without a file
    ):
        assert reader.fits_path is None and len(reader) == len(COCO_KEPT)
        assert not any(reader[i]["mano_valid"].any() or reader[i]["verts"].any() for i in range(len(reader)))
    explicit = create_reader("mscoco", val_root, "val", hand_model, load_images=False, mano_fits=fits_file(root, "train"))
    assert explicit.fits_path == fits_file(root, "train") and explicit[0]["mano_valid"].all()
    with pytest.raises(DataFormatError, match=r"MSCOCO MANO fits file not found: .*missing.json.*datasets/mscoco.md"):
        create_reader("mscoco", root, "train", hand_model, mano_fits=tmp_path / "missing.json")
    with pytest.raises(DataFormatError, match="crop must be one of person, hand, got 'body'"):
        create_reader("mscoco", root, "train", hand_model, crop="body")
    with pytest.raises(DataFormatError, match="split must be one of train, val"):
        create_reader("mscoco", root, "test", hand_model)
    with pytest.raises(DataFormatError, match=r"COCO-WholeBody annotation file not found.*coco_wholebody_train_v1.0.json"):
        create_reader("mscoco", tmp_path, "train", hand_model)


def test_require_fit_keeps_exactly_the_samples_with_a_fit(coco, coco_val, hand_model):
    root, _ = coco
    for crop in ("hand", "person"):
        every = create_reader("mscoco", root, "train", hand_model, load_images=False, crop=crop)
        fitted = create_reader("mscoco", root, "train", hand_model, load_images=False, crop=crop, require_fit=True)
        expected = [every[i]["sample_id"] for i in range(len(every)) if every[i]["mano_valid"].any()]
        assert 0 < len(expected) < len(every)  # the fixture has samples of both kinds
        assert [fitted[i]["sample_id"] for i in range(len(fitted))] == expected
        for i in range(len(fitted)):
            np.testing.assert_array_equal(fitted[i]["verts"], every[every._ids.index(fitted[i]["sample_id"])]["verts"])
    with pytest.raises(DataFormatError, match="require_fit is set but there is no MANO fits file for split 'val'"):
        create_reader("mscoco", coco_val[0], "val", hand_model, require_fit=True)


# ----------------------------------------------------------------------------------- errors


def _rewrite(src_root, dst_root, split, edit_ann=None, edit_fits=None):
    """Copy the fixture's json files to dst_root with an edit applied (images are not needed)."""
    data = json.loads(annotation_file(src_root, split).read_text())
    fits = json.loads(fits_file(src_root, split).read_text())
    if edit_ann:
        edit_ann({a["id"]: a for a in data["annotations"]})
    if edit_fits:
        edit_fits(fits)
    (dst_root / "annotations").mkdir(parents=True, exist_ok=True)
    annotation_file(dst_root, split).write_text(json.dumps(data))
    fits_file(dst_root, split).write_text(json.dumps(fits))


BAD_ANNOTATIONS = {
    "short keypoints": (
        lambda anns: anns[101].update(lefthand_kpts=anns[101]["lefthand_kpts"][:60]),
        "coco_wholebody_train_v1.0.json: annotation 101: field 'lefthand_kpts' must be a list of 63 numbers, got shape (60,)",
    ),
    "missing field": (lambda anns: anns[102].pop("righthand_box"), "coco_wholebody_train_v1.0.json: annotation 102: missing field 'righthand_box'"),
    "bad hand box": (
        lambda anns: anns[108].update(lefthand_box=[55, 35, 50]),
        "coco_wholebody_train_v1.0.json: annotation 108: field 'lefthand_box' must be a list of 4 numbers",
    ),
    "non-numeric body box": (
        lambda anns: anns[109].update(bbox=[1, 2, "wide", 4]),
        "coco_wholebody_train_v1.0.json: annotation 109: field 'bbox' must be a list of 4 numbers",
    ),
    "non-finite keypoint": (
        lambda anns: anns[101]["righthand_kpts"].__setitem__(3, float("nan")),
        "coco_wholebody_train_v1.0.json: annotation 101: field 'righthand_kpts' has non-finite values",
    ),
    "flag not a bool": (
        lambda anns: anns[107].update(lefthand_valid="yes"),
        "coco_wholebody_train_v1.0.json: annotation 107: field 'lefthand_valid' must be bool, got str",
    ),
    "unknown image": (lambda anns: anns[108].update(image_id=77), "annotation 108: field 'image_id' is 77, which is not the id of any entry"),
}
BAD_FITS = {
    "short pose": (
        lambda fits: fits["101"]["left"]["mano_param"].update(pose=[0.0] * 45),
        "MSCOCO_train_MANO_NeuralAnnot.json: annotation 101 hand 'left': field 'pose' must be a list of 48 numbers",
    ),
    "missing camera": (
        lambda fits: fits["102"]["right"].pop("cam_param"),
        "MSCOCO_train_MANO_NeuralAnnot.json: annotation 102 hand 'right': missing field 'cam_param'",
    ),
    "zero focal": (
        lambda fits: fits["109"]["left"]["cam_param"].update(focal=[0.0, 0.0]),
        "MSCOCO_train_MANO_NeuralAnnot.json: annotation 109 hand 'left': field 'focal' must be positive",
    ),
}


@pytest.mark.parametrize("file, case", [("annotations", c) for c in sorted(BAD_ANNOTATIONS)] + [("fits", c) for c in sorted(BAD_FITS)])
def test_malformed_annotations_and_fits_name_file_annotation_and_field(coco, hand_model, tmp_path, file, case):
    root, _ = coco
    edit, message = (BAD_ANNOTATIONS if file == "annotations" else BAD_FITS)[case]
    _rewrite(root, tmp_path, "train", **{"edit_ann" if file == "annotations" else "edit_fits": edit})
    with pytest.raises(DataFormatError) as err:
        create_reader("mscoco", tmp_path, "train", hand_model, load_images=False)
    assert message in str(err.value)


def test_keypoints_given_as_21_rows_read_like_the_flat_release_list(coco, hand_model, tmp_path):
    root, _ = coco

    def nest(anns):
        for ann in anns.values():
            ann["righthand_kpts"] = np.asarray(ann["righthand_kpts"]).reshape(21, 3).tolist()

    _rewrite(root, tmp_path, "train", edit_ann=nest)
    nested = create_reader("mscoco", tmp_path, "train", hand_model, load_images=False)
    flat = create_reader("mscoco", root, "train", hand_model, load_images=False)
    for i in range(len(flat)):
        np.testing.assert_array_equal(nested[i]["joints2d"], flat[i]["joints2d"])


def test_fits_of_dropped_people_are_not_read(coco, hand_model):
    root, _ = coco
    # the fixture's fits file holds a broken entry for the crowd annotation 103: never parsed
    assert "not read" in json.loads(fits_file(root, "train").read_text())["103"]["right"]["mano_param"]
    assert "103" not in create_reader("mscoco", root, "train", hand_model, load_images=False).ids


# ------------------------------------------------------------------ augmentation, losses, metrics


def test_2d_only_labels_follow_crops_and_flips(coco_val, hand_model):
    root, _ = coco_val
    s = create_reader("mscoco", root, "val", hand_model)[3]  # 108: both hands, 2D only
    crop = crop_to_input(s, (64, 64))
    check_sample(crop)
    assert (crop["joints2d_valid"] == s["joints2d_valid"]).all() and not crop["joints_valid"].any()
    scale = crop["focal"][0] / s["focal"][0]  # the crop is a scale and a shift of the image
    valid = s["joints2d_valid"]
    np.testing.assert_allclose(crop["joints2d"][valid], s["joints2d"][valid] * scale + (crop["princpt"] - s["princpt"] * scale), atol=1e-3)
    flipped = flip_sample(s, hand_model)
    check_sample(flipped)
    np.testing.assert_array_equal(flipped["joints2d_valid"], np.concatenate([valid[21:], valid[:21]]))
    np.testing.assert_allclose(flipped["joints2d"][21:][valid[:21]], np.stack([COCO_IMAGE_HW[1] - 1 - s["joints2d"][:21, 0], s["joints2d"][:21, 1]], 1)[valid[:21]])
    back = flip_sample(flipped, hand_model)
    np.testing.assert_allclose(back["joints2d"], s["joints2d"], atol=1e-4)


@pytest.mark.parametrize("name", ["interwild_tiny", "dir_tiny"])
def test_model_losses_are_finite_on_2d_only_batches(coco, hand_model, name):
    root, _ = coco
    torch.manual_seed(0)
    model = create_model(name, hand_model)
    reader = create_reader("mscoco", root, "train", hand_model, mano_fits="none")
    batch = default_collate([crop_to_input(reader[i], model.input_size) for i in range(len(reader))])
    assert not batch["mano_valid"].any() and not batch["joints_valid"].any()
    out = model(batch)
    terms = model.losses(out, batch)
    assert terms and all(torch.isfinite(v) for v in terms.values()), terms
    for key, value in terms.items():  # every 3D term is masked out; the 2D terms are not
        base = key.rsplit("/", 1)[-1]
        three_d = ("joints", "mesh_joints", "verts", "mano_pose", "mano_shape", "rel_trans", "joint_xyz", "mesh_xyz", "mesh_uv", "offset", "edge", "normal")
        if base in three_d:
            assert value == 0, key
    two_d = ["joint_proj", "joint_img", "box_centre"] if name == "interwild_tiny" else ["stage0/joint_uv", "stage2/joint_uv"]
    assert all(terms[k] > 0 for k in two_d), {k: terms[k] for k in two_d}
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    fitted = create_reader("mscoco", root, "train", hand_model)  # with fits: the mesh terms count
    batch = default_collate([crop_to_input(fitted[i], model.input_size) for i in range(len(fitted))])
    terms = model.losses(model(batch), batch)
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["mesh_joints" if name == "interwild_tiny" else "stage0/mesh_xyz"] > 0


def test_metrics_rules_and_mixed_collation(coco, coco_val, hand_model, tmp_path):
    spec = dataset_spec("mscoco")
    assert (spec.reader, spec.rules, spec.card, spec.protocol_options) == ("mscoco", "mscoco", "datasets/mscoco.md", {"crop": "person"})
    root, _ = coco
    gt = load_ground_truth(create_reader("mscoco", root, "train", hand_model, load_images=False))
    pred = {"verts": gt.verts.copy()}
    result = metrics.evaluate(pred, gt.as_dict(), dataset="mscoco", hand_model=hand_model)
    summary = result.summary
    # fitted hands count for the mesh metrics; no sample has a relative translation
    assert summary["interwild/mpvpe_all_wrist_mm"] == pytest.approx(0, abs=1e-6)
    assert np.isnan(summary["interwild/mrrpe_mm"]) and np.isnan(summary["interwild/rrve_rightwrist_mm"])
    val_root, _ = coco_val
    gt = load_ground_truth(create_reader("mscoco", val_root, "val", hand_model, load_images=False))
    result = metrics.evaluate({"verts": gt.verts.copy()}, gt.as_dict(), dataset="mscoco", hand_model=hand_model)
    assert all(np.isnan(v) for v in result.summary.values())  # without fits no 3D metric is defined

    coco_sample = create_reader("mscoco", root, "train", hand_model)[0]
    make_interhand_fixture(tmp_path, "test", hand_model)
    ih = create_reader("ih26m", tmp_path, "test", hand_model)[0]
    assert ih["joints2d_valid"].tolist() == ih["joints_valid"].tolist()
    out = default_collate([crop_to_input(copy.deepcopy(x), (32, 32)) for x in (coco_sample, ih)])
    assert out["joints2d_valid"].shape == (2, 42) and out["source"] == ["mscoco", "ih26m"]


def test_reader_options_reach_the_reader_through_a_named_source(coco, hand_model):
    """data.sources.NAME.options are the reader's keyword options (crop, mano_fits); a wrong one
    is an error naming the source and the reader's valid options."""
    from handrecon.config import load_config
    from handrecon.data.loader import build_mixed_loader
    from handrecon.engine import Experiment
    from handrecon.errors import UserError

    root, _ = coco
    base = ["data.batch_size=2", "data.num_workers=0"]
    person = load_config(Experiment, None, [*base, f"data.sources.real={{kind: mscoco, root: {root}}}"])
    hands = load_config(Experiment, None, [*base, f"data.sources.real={{kind: mscoco, root: {root}, options: {{crop: hand}}}}"])
    sizes = [build_mixed_loader(cfg.data, hand_model)[2].sizes["real"] for cfg in (person, hands)]
    expected = [len(create_reader("mscoco", root, "train", hand_model, load_images=False, crop=crop)) for crop in ("person", "hand")]
    assert sizes == expected and expected[0] != expected[1]
    wrong = load_config(Experiment, None, [*base, f"data.sources.real={{kind: mscoco, root: {root}, options: {{crops: hand}}}}"])
    with pytest.raises(UserError, match=r"data.sources.real: dataset reader 'mscoco' has no option 'crops'; valid options: .*crop"):
        build_mixed_loader(wrong.data, hand_model)
