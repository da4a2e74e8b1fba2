"""The AttentionHand generation protocol: mesh-box hand crops on hand-computed cases and against a
rendered silhouette, MSE-2D / MSE-3D against closed forms, and the report on an MSCOCO-format
real set with a small generated cache."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from fixtures_formats import COCO_IMAGE_HW, make_mscoco_fixture
from shard_utils import write_test_shards

from handrecon.config import FieldError, load_config
from handrecon.data.readers import create_reader
from handrecon.data.shards import ShardSource
from handrecon.hand_model.constants import NUM_JOINTS, NUM_VERTS
from synth.condition import condition_from_samples
from synth.genmetrics import AH_CANVAS, attentionhand_box, attentionhand_crop, label_mse, to_canvas

FITTED = ("101", "102", "109")  # the fixture's people with a NeuralAnnot fit (109: its left hand only)


@pytest.fixture(scope="module")
def coco(tmp_path_factory, hand_model):
    root = tmp_path_factory.mktemp("mscoco")
    make_mscoco_fixture(root, "train", hand_model)
    return root


@pytest.fixture(scope="module")
def people(coco, hand_model):
    reader = create_reader("mscoco", coco, "train", hand_model, crop="person")
    return {reader.ids[i]: reader[i] for i in range(len(reader))}


def _cache(people: dict, root, shift=(0.0, 0.0, 0.0)):
    """The fitted people's own images as a 'generated' cache; their labels' hands moved by `shift` (m)."""
    samples = []
    for key in FITTED:
        s = copy.deepcopy(people[key])
        s["mano_transl"] = s["mano_transl"] + np.asarray(shift, np.float32) * s["mano_valid"][:, None]
        samples.append(s)
    return write_test_shards(samples, root, per_shard=2)


class _ImageOracle(torch.nn.Module):
    """Reads back the true meshes of each image (the real sample's), optionally each hand scaled
    about its wrist by `scale`: a regressor with a known error."""

    def __init__(self, people: dict, hand_model, scale: float = 1.0):
        super().__init__()
        self.input_size = COCO_IMAGE_HW
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.verts = {}
        for key, s in people.items():
            verts = torch.as_tensor(s["verts"], dtype=torch.float32)
            wrists = hand_model.regress_joints(verts[None])[0].reshape(2, NUM_JOINTS, 3)[:, 0]
            hands = verts.reshape(2, NUM_VERTS, 3)
            self.verts[key] = (wrists[:, None] + scale * (hands - wrists[:, None])).reshape(2 * NUM_VERTS, 3)

    def forward(self, batch):
        verts = torch.stack([self.verts[str(k)] for k in batch["sample_id"]])
        return {"verts": verts, "rel_trans": torch.zeros(len(verts), 3)}


# ------------------------------------------------------------------------------------ hand crops


def _sample(points_xy, z=1.0, valid=(True, False), size=(128, 256)):
    """A sample whose right hand's vertices project (focal 100, principal point 0) onto `points_xy`."""
    verts = np.zeros((2 * NUM_VERTS, 3))
    pts = np.asarray(points_xy, np.float64)
    verts[:NUM_VERTS, :2] = pts[np.arange(NUM_VERTS) % len(pts)] / 100.0 * z
    verts[:NUM_VERTS, 2] = z
    verts[NUM_VERTS:] = (5.0, 5.0, 1.0)  # far off to the right: counts only when that hand has a mesh
    return {
        "image_size": size, "focal": np.array([100.0, 100.0]), "princpt": np.zeros(2), "verts": verts,
        "mesh_valid": np.array(valid), "boxes": np.array([[10.0, 5.0, 40.0, 20.0], [0.0, 0.0, 0.0, 0.0]]),
    }  # fmt: skip


def test_attentionhand_box_on_a_hand_computed_case():
    # a 256 x 128 (W x H) image on the 512 x 512 canvas: x' = (x + 0.5) * 2 - 0.5, y' = (y + 0.5) * 4 - 0.5
    sample = _sample([(10.2, 5.1), (40.7, 20.9), (25.0, 12.0)])
    # x in [20.9, 81.9] -> columns 21..81; y in [21.9, 85.1] -> rows 22..85
    assert attentionhand_box(sample) == ((21, 22, 81, 85), "mesh")
    np.testing.assert_allclose(to_canvas([[10.2, 5.1]], (128, 256)), [[20.9, 21.9]])
    # without a mesh, the label boxes' corners: x in [20.5, 80.5] -> 21..80, y in [21.5, 81.5] -> 22..81
    assert attentionhand_box(_sample([(0.0, 0.0)], valid=(False, False))) == ((21, 22, 80, 81), "boxes")
    # clipped to the canvas; a hand wholly off the image or behind the camera gives no box
    assert attentionhand_box(_sample([(-20.0, 5.1), (300.0, 20.9)])) == ((0, 22, 511, 85), "mesh")
    assert attentionhand_box(_sample([(300.0, 5.0), (310.0, 9.0)])) is None
    assert attentionhand_box(_sample([(10.0, 5.0)], z=-1.0)) is None
    # the second hand's mesh widens the box when it has one (its vertices project to (500, 500))
    assert attentionhand_box(_sample([(10.2, 5.1), (40.7, 20.9)], valid=(True, True))) == ((21, 22, 511, 511), "mesh")


def test_attentionhand_crop_takes_exactly_the_box_of_the_canvas():
    image = np.zeros((AH_CANVAS, AH_CANVAS, 3), np.uint8)
    image[..., 2] = 255
    image[22:86, 21:82] = (255, 0, 0)  # the box (21, 22, 81, 85), inclusive
    crop = attentionhand_crop(image, (21, 22, 81, 85), size=64)
    assert crop.shape == (64, 64, 3)
    assert (crop == (255, 0, 0)).all()  # no margin: nothing but the box, stretched to a square


def test_attentionhand_box_is_the_rendered_mesh_silhouettes_bounding_rectangle(people, hand_model):
    """AttentionHand's loader: the bounding rectangle of the mesh image (resized to 512 x 512)
    thresholded; here the label meshes rendered at 512 x 512 directly."""
    for key in FITTED:
        sample = people[key]
        mask = condition_from_samples(hand_model, [sample], image_size=(AH_CANVAS, AH_CANVAS))["hand"][0].numpy() >= 0
        ys, xs = np.nonzero(mask)
        rendered = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
        box, source = attentionhand_box(sample)
        assert source == "mesh"
        assert np.abs(np.array(box) - rendered).max() <= 1, (key, box, rendered)
        assert min(rendered[2] - rendered[0], rendered[3] - rendered[1]) > 50  # tens of canvas pixels: a 1-pixel tolerance is tight


# ------------------------------------------------------------------------------------ MSE-2D / 3D


def test_mse_is_zero_for_the_real_images_with_their_own_labels(people, hand_model, tmp_path):
    cache = ShardSource(_cache(people, tmp_path / "gen"), hand_model)
    got = label_mse(_ImageOracle(people, hand_model), cache, hand_model)
    assert got["mse_2d_px2"].shape == (3,)
    assert np.max(got["mse_2d_px2"]) < 1e-6 and np.max(got["mse_3d_cm2"]) < 1e-6


def test_mse_2d_of_labels_moved_by_a_known_translation(people, hand_model, tmp_path):
    """Labels moved by t = (tx, ty, 0) m: each joint's label moves by (fx tx / Z, fy ty / Z) px,
    wrist-relative 3D does not change."""
    tx, ty = 0.01, -0.004
    cache = ShardSource(_cache(people, tmp_path / "gen", shift=(tx, ty, 0.0)), hand_model)
    got = label_mse(_ImageOracle(people, hand_model), cache, hand_model)
    h, w = COCO_IMAGE_HW
    expected = []
    for i in range(len(cache)):
        s = cache[i]
        per_hand = []
        for hand in np.nonzero(s["mesh_valid"])[0]:
            z = s["joints3d"][hand * NUM_JOINTS : (hand + 1) * NUM_JOINTS, 2].astype(np.float64)
            dx = s["focal"][0] * tx / z * AH_CANVAS / w  # canvas pixels
            dy = s["focal"][1] * ty / z * AH_CANVAS / h
            per_hand.append(np.mean((dx**2 + dy**2) / 2))  # mean over joints and the two coordinates
        expected.append(np.mean(per_hand))
    np.testing.assert_allclose(got["mse_2d_px2"], expected, rtol=1e-4)
    assert min(expected) > 1.0  # a shift of several canvas pixels, not rounding noise
    assert np.max(got["mse_3d_cm2"]) < 1e-6


def test_mse_3d_of_hands_scaled_about_the_wrist(people, hand_model, tmp_path):
    """A regressor reading every hand scaled by s about its wrist: each wrist-relative joint is off
    by (s - 1) r, so MSE-3D = (s - 1)^2 mean(r^2) in cm^2."""
    s_ = 1.1
    cache = ShardSource(_cache(people, tmp_path / "gen"), hand_model)
    got = label_mse(_ImageOracle(people, hand_model, scale=s_), cache, hand_model)
    expected = []
    for i in range(len(cache)):
        s = cache[i]
        hands = s["joints3d"].astype(np.float64).reshape(2, NUM_JOINTS, 3)
        rel_cm = (hands - hands[:, :1]) * 100.0
        expected.append(np.mean([np.mean(((s_ - 1) * rel_cm[h]) ** 2) for h in np.nonzero(s["mesh_valid"])[0]]))
    np.testing.assert_allclose(got["mse_3d_cm2"], expected, rtol=1e-4)
    assert min(expected) > 0.05
    assert np.min(got["mse_2d_px2"]) > 0  # the scaled hands project elsewhere too


# ------------------------------------------------------------------------------------ the report


def test_protocol_is_checked():
    from synth.generation_eval import GenerationEval

    assert GenerationEval().protocol == "ours"
    with pytest.raises(FieldError, match="protocol must be one of ours, attentionhand, got 'interwild'"):
        GenerationEval(protocol="interwild")


@pytest.mark.slow
def test_attentionhand_report_on_an_mscoco_real_set(coco, people, hand_model, mano_dir, inception_weights, tmp_path, monkeypatch):
    import synth.generation_eval as ge

    monkeypatch.setattr(ge, "load_regressor", lambda path, model: _ImageOracle(people, hand_model))
    generated = _cache(people, tmp_path / "gen")
    cfg = load_config(ge.GenerationEval, None, [
        "protocol=attentionhand", f"generated={generated}", f"real={{kind: mscoco, root: {coco}, split: train, options: {{crop: person}}}}",
        f"mano_dir={mano_dir}", f"inception_weights={inception_weights}", f"out={tmp_path / 'report'}", "kid_subsets=3",
        "regressor=oracle", "device=cpu", "grid=1",
    ])  # fmt: skip
    result = ge.evaluate_generation(cfg)
    names = {f"attentionhand/{k}" for k in ("fid", "kid", "fid_h", "kid_h")} | {"label_mse_2d_px2", "label_mse_3d_cm2"}
    assert set(result["metrics"]) == names
    assert result["metrics"]["label_mse_2d_px2"] < 1e-6 and result["metrics"]["label_mse_3d_cm2"] < 1e-6
    assert all(np.isfinite(v) for v in result["metrics"].values())
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert set(saved["metrics"]) == names
    provenance = saved["provenance"]
    assert provenance["protocol"] == "attentionhand" and provenance["canvas"] == AH_CANVAS and "crop_margin" not in provenance
    assert set(provenance["definitions"]) == {"crop", "mse_2d_px2", "mse_3d_cm2"}
    # five kept people: three with a fit (mesh boxes), 108 without (its label boxes), 107 with no box at all
    assert provenance["hand_crops"] == {"real": {"mesh": 3, "boxes": 1, "none": 1}, "generated": {"mesh": 3}}
    assert provenance["real"]["num"] == 5 and provenance["num_generated"] == 3
    header = (tmp_path / "report" / "per_sample.csv").read_text().splitlines()[0]
    assert header == "key,mse_2d_px2,mse_3d_cm2"


def test_the_tool_takes_the_protocol_as_a_flag(capsys, tmp_path):
    import runpy
    from pathlib import Path

    tool = runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / "eval_generation.py"), run_name="eval_generation")
    with pytest.raises(SystemExit) as done:
        tool["main"](["--protocol", "attentionhand", "--print-config", "--set", f"out={tmp_path}"])
    assert done.value.code == 0
    assert "protocol: attentionhand" in capsys.readouterr().out
