"""Augmentation: geometry as an exact camera change, flips that swap hands, photometry on the image only."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from handrecon.camera import project
from handrecon.data.augment import (
    AugmentConfig,
    Augmenter,
    affine_sample,
    camera_affine,
    crop_to_input,
    flip_sample,
    rng_for,
)
from handrecon.data.procedural import ProceduralConfig, generate
from handrecon.data.readers import create_reader
from handrecon.data.sample import SAMPLE_FIELDS, check_sample
from handrecon.render import render_mesh

OUT = (96, 112)  # (H, W): not square, not the source size (128x128)
NO_PHOTO = dict(color_jitter_prob=0.0, blur_prob=0.0, noise_prob=0.0, jpeg_prob=0.0, occlusion_prob=0.0)
STRONG = dict(output_size=OUT, scale_range=(0.7, 1.4), rotation_prob=1.0, rotation_range_deg=(-90.0, 90.0), translation_range=0.15)
ARRAY_FIELDS = [k for k, (kind, _) in SAMPLE_FIELDS.items() if kind != "str"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory, hand_model):
    """Every sample of a tiny procedural dataset (128x128), with its part-label map as an extra map."""
    root = tmp_path_factory.mktemp("proc_aug")
    generate(hand_model, ProceduralConfig(image_size=(128, 128), batch_size=8), root, num=8, seed=5, progress=False)
    out = []
    for split in ("train", "val", "test"):
        reader = create_reader("ih26m", root, split, hand_model)
        for i in range(len(reader)):
            sample = reader[i]
            rel = sample["image_path"].split(f"/images/{split}/", 1)[1]
            parts = np.asarray(Image.open(root / "masks" / split / rel.replace(".jpg", ".png")))
            sample["extra_maps"] = {"parts": parts}
            out.append(sample)
    assert "interacting" in {s["hand_type"] for s in out} and len({s["hand_type"] for s in out}) >= 2  # one- and two-hand samples
    return out


def _project(sample: dict) -> np.ndarray:
    t = lambda k: torch.as_tensor(sample[k])  # noqa: E731
    return project(t("joints3d")[None], t("focal"), t("princpt"))[0].numpy()


def _mano_verts(sample: dict, hand_model) -> dict[int, np.ndarray]:
    """Each MANO-valid hand's mesh from the sample's own MANO parameters."""
    t = lambda a: torch.as_tensor(a)[None]  # noqa: E731
    out = {}
    with torch.no_grad():
        for h, side in enumerate(("right", "left")):
            if sample["mano_valid"][h]:
                pose = sample["mano_pose"][h]
                res = hand_model.hand(side, t(sample["mano_shape"][h]), t(pose[:3]), t(pose[3:]), t(sample["mano_transl"][h]))
                out[h] = res.vertices[0].numpy()
    return out


def _assert_same(a: dict, b: dict, atol: float, keys=ARRAY_FIELDS) -> None:
    for key in keys:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.shape == y.shape, key
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=key)
        else:
            np.testing.assert_array_equal(x, y, err_msg=key)


def test_labels_stay_a_projection_and_meshes_stay_meshes(samples, hand_model):
    aug = Augmenter(AugmentConfig(**STRONG, flip_prob=0.5), hand_model, seed=7)
    worst, flips = 0.0, 0
    for index, sample in enumerate(samples):
        for epoch in range(6):
            out = aug(sample, rng_for(7, epoch, index))
            check_sample(out)
            assert tuple(out["image_size"]) == OUT and out["image"].shape == (*OUT, 3) and out["extra_maps"]["parts"].shape == OUT
            flips += out["hand_type"] != sample["hand_type"]
            valid = out["joints_valid"]
            assert valid.sum() == sample["joints_valid"].sum()
            worst = max(worst, float(np.abs(_project(out) - out["joints2d"])[valid].max()))
            regressed = hand_model.regress_joints(torch.as_tensor(out["verts"])[None])[0].numpy()
            for h in np.flatnonzero(out["mesh_valid"]):
                sl = slice(21 * h, 21 * (h + 1))
                np.testing.assert_allclose(regressed[sl], out["joints3d"][sl], atol=1e-4)
            for h, verts in _mano_verts(out, hand_model).items():
                np.testing.assert_allclose(verts, out["verts"][778 * h : 778 * (h + 1)], atol=1e-4)
            # boxes: the readers' rule on the new 2D joints, which the box must contain (or touch the border)
            for h in range(2):
                pts = out["joints2d"][21 * h : 21 * (h + 1)][valid[21 * h : 21 * (h + 1)]]
                inside = (pts[:, 0] >= 0) & (pts[:, 0] < OUT[1]) & (pts[:, 1] >= 0) & (pts[:, 1] < OUT[0])
                box = out["boxes"][h]
                if inside.any():
                    assert (pts[inside] >= box[:2] - 1e-4).all() and (pts[inside] <= box[2:] + 1e-4).all()
    assert worst < 1e-3, worst  # pixels
    assert flips > 0


def test_rotation_is_a_camera_roll_for_mano(samples, hand_model):
    for sample in samples:
        for angle in (0.7, -2.5, math.pi):
            m = camera_affine(sample["focal"], (40.0, 50.0), (96, 96), 1.3, angle, (3.0, -2.0))
            out = affine_sample(sample, m, (96, 96), hand_model, angle)
            for h, verts in _mano_verts(out, hand_model).items():
                np.testing.assert_allclose(verts, out["verts"][778 * h : 778 * (h + 1)], atol=1e-4)
            np.testing.assert_allclose(np.linalg.norm(out["joints3d"], axis=1), np.linalg.norm(sample["joints3d"], axis=1), atol=1e-6)
            np.testing.assert_allclose(out["mano_pose"][:, 3:], sample["mano_pose"][:, 3:])  # hand pose is camera independent


def test_flip_swaps_hands_with_exact_mano(samples, hand_model):
    for sample in samples:
        out = flip_sample(sample, hand_model)
        check_sample(out)
        for h, verts in _mano_verts(out, hand_model).items():
            np.testing.assert_allclose(verts, out["verts"][778 * h : 778 * (h + 1)], atol=1e-4)
        assert list(out["mesh_valid"]) == list(sample["mesh_valid"][::-1])
        assert out["hand_type"] == {"right": "left", "left": "right", "interacting": "interacting"}[sample["hand_type"]]
        np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])
        valid = out["joints_valid"]
        assert np.abs(_project(out) - out["joints2d"])[valid].max() < 1e-3
        # the mirrored right-hand mesh regresses to the mirrored right-hand joints, now the left ones
        regressed = hand_model.regress_joints(torch.as_tensor(out["verts"])[None])[0].numpy()
        for h in np.flatnonzero(out["mesh_valid"]):
            sl = slice(21 * h, 21 * (h + 1))
            np.testing.assert_allclose(regressed[sl], out["joints3d"][sl], atol=1e-4)


def test_flip_twice_is_identity(samples, hand_model):
    for sample in samples:
        twice = flip_sample(flip_sample(sample, hand_model), hand_model)
        _assert_same(twice, sample, atol=1e-5)
        assert twice["hand_type"] == sample["hand_type"]
        np.testing.assert_array_equal(twice["image"], sample["image"])
        np.testing.assert_array_equal(twice["extra_maps"]["parts"], sample["extra_maps"]["parts"])


def test_identity_warp_is_identity(samples, hand_model):
    for sample in samples:
        size = tuple(int(v) for v in sample["image_size"])
        centre = ((size[1] - 1) / 2, (size[0] - 1) / 2)
        m = camera_affine(sample["focal"], centre, size, 1.0, 0.0, (0.0, 0.0))
        np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
        out = affine_sample(sample, m, size, hand_model, 0.0)
        _assert_same(out, sample, atol=1e-4)
        np.testing.assert_array_equal(out["image"], sample["image"])
        np.testing.assert_array_equal(out["extra_maps"]["parts"], sample["extra_maps"]["parts"])
    assert sample["mano_valid"].any()


def test_anisotropic_pixels_stay_exact(samples, hand_model):
    """fx != fy: the warp is diag(f') R diag(f)^-1 (not a similarity) and labels stay a projection."""
    sample = dict(samples[0])
    sample["focal"] = sample["focal"] * np.array([1.0, 1.3], dtype=np.float32)
    sample["joints2d"] = np.where(sample["joints_valid"][:, None], _project(sample), 0).astype(np.float32)
    aug = Augmenter(AugmentConfig(**STRONG), hand_model, seed=1)
    for k in range(5):
        out = aug(sample, rng_for(1, 0, k))
        assert np.abs(_project(out) - out["joints2d"])[out["joints_valid"]].max() < 1e-3
        assert out["focal"][1] / out["focal"][0] == pytest.approx(1.3, rel=1e-5)
    with pytest.raises(ValueError, match="not a camera change"):
        affine_sample(sample, np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0]]), (96, 96), hand_model, 0.0)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("flip", [False, True])
def test_rendered_mesh_overlays_the_warped_image(samples, hand_model, flip):
    aug = Augmenter(AugmentConfig(**STRONG, **NO_PHOTO, flip_prob=float(flip)), hand_model, seed=3)
    outs = [aug(s, rng_for(3, 0, i)) for i, s in enumerate(samples)]
    verts = torch.stack([torch.as_tensor(o["verts"]) for o in outs])
    shown = torch.as_tensor(np.stack([np.repeat(o["mesh_valid"], 778) for o in outs]))  # absent hands are left out
    focal = torch.stack([torch.as_tensor(o["focal"]) for o in outs])
    princpt = torch.stack([torch.as_tensor(o["princpt"]) for o in outs])
    rendered = render_mesh(verts, hand_model.faces_two_hand, focal, princpt, OUT, valid=shown)
    faces_right = hand_model.faces_right.shape[0]
    for b, o in enumerate(outs):
        parts = o["extra_maps"]["parts"]
        keep = parts != 3  # forearm pixels may hide hand pixels: compare elsewhere
        mask = rendered["mask"][b].numpy() & keep
        hands = np.isin(parts, (1, 2))
        assert _iou(mask, hands) > 0.9
        # no shift either: a half-pixel convention slip would move the silhouette as a whole
        assert np.abs(np.argwhere(mask).mean(0) - np.argwhere(hands).mean(0)).max() < 0.5
        hand_of_pixel = (rendered["face_idx"][b].numpy() >= faces_right).astype(int)
        for h in np.flatnonzero(o["mesh_valid"]):
            drawn = mask & (hand_of_pixel == h)
            label = 2 - h if flip else 1 + h  # a flip turns the pixels labelled right into the new left hand
            if drawn.sum() > 30:
                assert _iou(drawn, parts == label) > 0.8, (b, h)


def test_photometric_changes_only_the_image(samples, hand_model):
    still = dict(output_size=OUT, scale_range=(1.0, 1.0), rotation_prob=0.0, translation_range=0.0, flip_prob=0.0)
    loud = dict(color_jitter_prob=1.0, blur_prob=1.0, noise_prob=1.0, jpeg_prob=1.0, occlusion_prob=1.0)
    aug = Augmenter(AugmentConfig(**still, **loud), hand_model, seed=0)
    for i, sample in enumerate(samples[:4]):
        out = aug(sample, rng_for(0, 0, i))
        ref = crop_to_input(sample, OUT)
        _assert_same(out, ref, atol=0)
        np.testing.assert_array_equal(out["extra_maps"]["parts"], ref["extra_maps"]["parts"])
        assert out["image"].dtype == np.uint8 and np.abs(out["image"].astype(int) - ref["image"]).mean() > 2
    # with no geometric jitter and no photometry the augmenter is exactly the eval crop
    plain = Augmenter(AugmentConfig(**still, **NO_PHOTO), hand_model, seed=0)
    for i, sample in enumerate(samples[:4]):
        out, ref = plain(sample, rng_for(0, 0, i)), crop_to_input(sample, OUT)
        _assert_same(out, ref, atol=0)
        np.testing.assert_array_equal(out["image"], ref["image"])
    off = Augmenter(AugmentConfig(enabled=False, output_size=OUT), hand_model)
    np.testing.assert_array_equal(off(samples[0])["image"], crop_to_input(samples[0], OUT)["image"])


def test_crop_to_input_frames_the_hands(samples):
    for sample in samples:
        out = crop_to_input(sample, OUT, margin=1.25)
        check_sample(out)
        boxes = out["boxes"][(out["boxes"][:, 2] > out["boxes"][:, 0])]
        lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
        # the union of boxes is centred and spans 1/1.25 of the output along its tight axis
        np.testing.assert_allclose((lo + hi) / 2, [(OUT[1] - 1) / 2, (OUT[0] - 1) / 2], atol=1.0)
        assert max((hi - lo) / [OUT[1], OUT[0]]) == pytest.approx(1 / 1.25, abs=0.03)
        _assert_same(out, sample, atol=0, keys=["verts", "joints3d", "mano_pose", "mano_transl", "joints_valid"])


def test_image_framing_shows_the_whole_image(samples, hand_model):
    scale = min(OUT[1] / 128, OUT[0] / 128)  # the 128x128 source fits the output, aspect kept
    centre_in, centre_out = np.array([63.5, 63.5]), np.array([(OUT[1] - 1) / 2, (OUT[0] - 1) / 2])
    still = dict(output_size=OUT, scale_range=(1.0, 1.0), rotation_prob=0.0, translation_range=0.0, flip_prob=0.0, **NO_PHOTO)
    plain = Augmenter(AugmentConfig(**still, framing="image"), hand_model, seed=0)
    for i, sample in enumerate(samples[:4]):
        out = crop_to_input(sample, OUT, margin=3.0, framing="image")  # the margin plays no part
        check_sample(out)
        np.testing.assert_allclose(out["focal"], sample["focal"] * scale, rtol=1e-5)
        np.testing.assert_allclose(out["princpt"], (sample["princpt"] - centre_in) * scale + centre_out, atol=1e-3)
        valid = sample["joints_valid"].astype(bool)
        np.testing.assert_allclose(out["joints2d"][valid], (sample["joints2d"][valid] - centre_in) * scale + centre_out, atol=1e-3)
        _assert_same(out, sample, atol=0, keys=["verts", "joints3d", "mano_pose", "mano_transl", "joints_valid"])
        np.testing.assert_array_equal(plain(sample, rng_for(0, 0, i))["image"], out["image"])
    with pytest.raises(ValueError, match="framing"):
        AugmentConfig(framing="body")
    with pytest.raises(ValueError, match="framing must be one of"):
        crop_to_input(samples[0], OUT, framing="body")


def test_deterministic_given_the_rng(samples, hand_model):
    cfg = AugmentConfig(**STRONG, occlusion_prob=1.0, noise_prob=1.0)
    a, b = Augmenter(cfg, hand_model, seed=11), Augmenter(cfg, hand_model, seed=11)
    sample = samples[1]
    x, y = a(sample, rng_for(11, 2, 5)), b(sample, rng_for(11, 2, 5))
    _assert_same(x, y, atol=0)
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(a(sample, rng_for(11, 2, 5, repeat=0))["image"], x["image"])
    others = [a(sample, rng_for(11, 2, 6)), a(sample, rng_for(11, 3, 5)), a(sample, rng_for(12, 2, 5))]
    others.append(a(sample, rng_for(11, 2, 5, repeat=1)))  # the same sample's second draw in the epoch
    for z in others:
        assert not np.array_equal(z["image"], x["image"]) and not np.array_equal(z["focal"], x["focal"])
    # rng=None: derived from (seed, epoch, sample), so repeatable and different per epoch
    first = a(sample)
    np.testing.assert_array_equal(first["image"], a(sample)["image"])
    a.set_epoch(1)
    assert not np.array_equal(a(sample)["image"], first["image"])
    # the input sample is never modified
    assert "extra_maps" in sample and sample["image_size"].tolist() == [128, 128]


def test_labels_only_samples_and_hands_warped_out_of_view(samples, hand_model):
    sample = {k: v for k, v in samples[0].items() if k not in ("image", "extra_maps")}  # a reader with load_images=False
    out = Augmenter(AugmentConfig(**STRONG), hand_model, seed=0)(sample, rng_for(0, 0, 0))
    check_sample(out)
    assert "image" not in out
    # shifted far out of the output: 3D labels and validity stay, the boxes have no area left and become zeros
    m = camera_affine(sample["focal"], (64.0, 64.0), OUT, 1.0, 0.0, (500.0, 0.0))
    gone = affine_sample(sample, m, OUT, hand_model)
    check_sample(gone)
    assert (gone["boxes"] == 0).all() and (gone["joints2d"][gone["joints_valid"]][:, 0] > OUT[1]).all()
    _assert_same(gone, sample, atol=0, keys=["verts", "joints3d", "joints_valid", "mano_pose", "mesh_valid"])


def test_2d_only_joints_follow_the_image_and_3d_stays_absent(samples, hand_model):
    """A hand labelled in 2D only (joints2d_valid without joints_valid, no MANO): its 2D joints and
    box follow the warp and the flip like any 2D label, and no 3D label appears."""
    sample = {k: v for k, v in samples[1].items() if k != "extra_maps"}
    for key in ("joints3d", "verts", "mano_pose", "mano_shape", "mano_transl"):
        sample[key] = np.zeros_like(sample[key])
    sample["joints2d_valid"] = sample["joints_valid"] | sample["joints2d"].any(1)
    sample["joints_valid"] = np.zeros_like(sample["joints_valid"])
    sample["mano_valid"] = sample["mesh_valid"] = np.zeros(2, dtype=bool)
    valid = sample["joints2d_valid"]
    assert valid.any()
    out = Augmenter(AugmentConfig(**STRONG, **NO_PHOTO, flip_prob=0.0), hand_model, seed=3)(sample, rng_for(3, 0, 0))
    check_sample(out)
    assert (out["joints2d_valid"] == valid).all() and not out["joints_valid"].any() and not out["joints3d"].any()
    # the 2D joints moved with the image: where the source pixels landed
    m = camera_affine(sample["focal"], (64.0, 64.0), OUT, 0.8, 0.3, (4.0, -2.0))
    warped = affine_sample(sample, m, OUT, hand_model, 0.3)
    np.testing.assert_allclose(warped["joints2d"][valid], sample["joints2d"][valid] @ m[:, :2].T + m[:, 2], atol=1e-4)
    assert warped["boxes"][valid.reshape(2, 21).any(1)].any()
    flipped = flip_sample(sample, hand_model)
    assert (flipped["joints2d_valid"] == np.concatenate([valid[21:], valid[:21]])).all() and not flipped["joints_valid"].any()
    np.testing.assert_allclose(flip_sample(flipped, hand_model)["joints2d"], sample["joints2d"], atol=1e-4)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=1.5)
    with pytest.raises(ValueError, match="blur_limit"):
        AugmentConfig(blur_limit=(2, 4))
