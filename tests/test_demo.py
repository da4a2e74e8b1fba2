"""tools/demo.py on procedural images: its files, its meshes against the evaluation path, its MANO
parameters against its meshes, and its errors."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from handrecon.errors import UserError

TOOL = Path(__file__).resolve().parents[1] / "tools" / "demo.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("demo_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_tool"] = module
    spec.loader.exec_module(module)
    return module


demo = _load_tool()


def _checkpoint(root: Path, mano_dir: Path, hand_model, name: str) -> Path:
    """A run folder with one checkpoint of an untrained tiny model (random heads so its outputs
    are not the rest pose)."""
    from handrecon.config import load_config, to_yaml
    from handrecon.engine import Experiment
    from handrecon.engine.checkpoint import save_checkpoint
    from handrecon.models import build_model

    cfg = load_config(Experiment, None, [f"out={root}", f"mano_dir={mano_dir}", f"model.name={name}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, hand_model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:  # linear output layers: away from the identity pose
                p.add_(torch.randn_like(p) * 0.02)
    save_checkpoint(root, 1, model, {"step": 1}, to_yaml(cfg))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mano_dir, hand_model):
    return _checkpoint(tmp_path_factory.mktemp("demo_run"), mano_dir, hand_model, "interwild_tiny")


@pytest.fixture(scope="module")
def test_samples(procedural_root, hand_model):
    from handrecon.data.readers import create_reader

    reader = create_reader("ih26m", procedural_root, "test", hand_model)
    return reader, [reader[i] for i in range(2)]


def _run(*argv):
    return demo.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def outputs(run_dir, test_samples, tmp_path_factory):
    """The demo on two test images, each with its own camera."""
    _, samples = test_samples
    out = tmp_path_factory.mktemp("demo_out")
    for s in samples:
        cx, cy = s["princpt"]
        assert _run("--checkpoint", run_dir, "--image", s["image_path"], "--focal", float(s["focal"][0]), "--princpt", cx, cy, "--out", out) == 0
    return out


def test_writes_overlay_meshes_and_json(outputs, test_samples, hand_model):
    from image_checks import read_png

    _, samples = test_samples
    for s in samples:
        stem = Path(s["image_path"]).stem
        h, w = (int(v) for v in s["image_size"])
        overlay = read_png(outputs / f"{stem}_overlay.png", (h, w))
        assert overlay.shape[:2] == (h, w) and not np.array_equal(overlay[..., :3], s["image"])  # something was drawn
        record = json.loads((outputs / f"{stem}.json").read_text())
        assert record["image_size"] == [h, w] and record["framing"] == "image"
        assert np.allclose(record["focal"], s["focal"]) and np.allclose(record["princpt"], s["princpt"])
        sizes = {"box": 4, "global_orient": 3, "hand_pose": 45, "betas": 10, "transl": 3, "wrist": 3}
        for side in ("right", "left"):
            hand = record["hands"][side]
            assert hand["detected"] is True and hand["mesh"] == f"{stem}_{side}.obj"
            for key, n in sizes.items():
                assert len(hand[key]) == n and np.isfinite(hand[key]).all(), (side, key)
            verts, faces = demo.read_obj(outputs / hand["mesh"])
            assert verts.shape == (778, 3) and np.isfinite(verts).all()
            assert np.array_equal(faces, getattr(hand_model, f"faces_{side}").numpy())
        for key in ("rel_trans", "mesh_rel_trans"):
            assert len(record[key]) == 3 and np.isfinite(record[key]).all()
        left_wrist, right_wrist = (np.array(record["hands"][s]["wrist"]) for s in ("left", "right"))
        assert np.allclose(record["mesh_rel_trans"], left_wrist - right_wrist, atol=1e-6)


def test_meshes_equal_the_evaluation_path(outputs, run_dir, test_samples, mano_dir):
    """The OBJ meshes are what tools/eval.py's predict_dataset gives for the same image and camera."""
    from handrecon.engine.predict import predict_dataset

    reader, samples = test_samples
    model, _, _ = demo.load_model(run_dir, mano_dir)
    pred = predict_dataset(model, reader, indices=[0, 1], batch_size=2, progress=False, framing="image")
    for i, s in enumerate(samples):
        stem = Path(s["image_path"]).stem
        record = json.loads((outputs / f"{stem}.json").read_text())
        mesh = np.concatenate([demo.read_obj(outputs / f"{stem}_{side}.obj")[0] for side in ("right", "left")])
        np.testing.assert_allclose(mesh, pred["verts"][i], rtol=0, atol=1e-5)  # float32 at metres of depth, batch of 2 vs 1
        np.testing.assert_allclose(record["rel_trans"], pred["rel_trans"][i], rtol=0, atol=1e-5)


def test_mano_parameters_reproduce_the_meshes(outputs, test_samples, hand_model):
    _, samples = test_samples
    for s in samples:
        stem = Path(s["image_path"]).stem
        record = json.loads((outputs / f"{stem}.json").read_text())
        for side, hand in record["hands"].items():
            t = {k: torch.tensor([hand[k]], dtype=torch.float64) for k in ("betas", "global_orient", "hand_pose", "transl")}
            with torch.no_grad():
                verts = hand_model.double().hand(side, t["betas"], t["global_orient"], t["hand_pose"], t["transl"]).vertices[0].numpy()
            hand_model.float()
            mesh = demo.read_obj(outputs / hand["mesh"])[0]
            assert np.abs(verts - mesh).max() < 1e-5, side


def test_boxes_are_in_image_pixels():
    """The input -> image pixel map inverts the framing's camera change."""
    from handrecon.data.augment import crop_to_input

    s = demo.make_sample("x", np.zeros((90, 160, 3), np.uint8), np.array([200.0, 200.0]), np.array([70.0, 50.0]), None)
    crop = crop_to_input(s, (128, 96), framing="image")
    pts = np.array([[0.0, 0.0], [159.0, 89.0], [70.0, 50.0]])
    lin = crop["focal"] / s["focal"]
    mapped = pts * lin + (crop["princpt"] - lin * s["princpt"])
    np.testing.assert_allclose(demo.input_to_image(mapped, s, crop), pts, atol=1e-4)
    # the whole image fits the input: its corners land inside it
    assert (mapped[:2] >= -0.5 - 1e-4).all() and (mapped[:2, 0] <= 95.5 + 1e-4).all() and (mapped[:2, 1] <= 127.5 + 1e-4).all()


def test_missing_image_and_bad_checkpoint_are_named(run_dir, tmp_path, test_samples):
    _, samples = test_samples
    missing = tmp_path / "nope.jpg"
    with pytest.raises(UserError, match=f"image {missing} does not exist"):
        _run("--checkpoint", run_dir, "--image", missing, "--out", tmp_path / "o")
    no_run = tmp_path / "no_run"
    with pytest.raises(UserError, match=f"--checkpoint {no_run} does not exist"):
        _run("--checkpoint", no_run, "--image", samples[0]["image_path"], "--out", tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"no checkpoint at {empty}"):
        _run("--checkpoint", empty, "--image", samples[0]["image_path"], "--out", tmp_path / "o")
    not_image = tmp_path / "text.png"
    not_image.write_text("not an image")
    with pytest.raises(UserError, match=f"image {not_image}: not a readable image"):
        _run("--checkpoint", run_dir, "--image", not_image, "--out", tmp_path / "o")


def test_a_model_that_needs_boxes_is_refused_without_them(tmp_path, mano_dir, hand_model, test_samples):
    _, samples = test_samples
    run = _checkpoint(tmp_path / "dir_run", mano_dir, hand_model, "dir_tiny")
    image = samples[0]["image_path"]
    with pytest.raises(UserError, match="does not find hands itself: pass --boxes"):
        _run("--checkpoint", run, "--image", image, "--out", tmp_path / "o")
    right, left = samples[0]["boxes"]
    box = lambda b: ",".join(f"{v:.1f}" for v in b)  # noqa: E731
    assert _run("--checkpoint", run, "--image", image, "--boxes", box(right), box(left), "--out", tmp_path / "o") == 0
    record = json.loads((tmp_path / "o" / f"{Path(image).stem}.json").read_text())
    assert record["framing"] == "hands"
    assert np.allclose(record["hands"]["right"]["box"], right, atol=0.06)


def test_a_folder_of_images(run_dir, test_samples, tmp_path):
    import shutil

    _, samples = test_samples
    folder = tmp_path / "imgs"
    folder.mkdir()
    for s in samples:
        shutil.copy(s["image_path"], folder)
    assert _run("--checkpoint", run_dir, "--images", folder, "--out", tmp_path / "o") == 0
    for s in samples:
        stem = Path(s["image_path"]).stem
        assert (tmp_path / "o" / f"{stem}.json").is_file() and (tmp_path / "o" / f"{stem}_overlay.png").is_file()


def test_a_hand_below_the_confidence_threshold_is_not_detected(run_dir, test_samples, tmp_path, monkeypatch):
    """With a per-hand confidence output, an unconfident hand gets no mesh and detected=false."""
    _, samples = test_samples
    predict = demo.predict_image

    def with_conf(*args, **kwargs):
        pred, crop = predict(*args, **kwargs)
        return {**pred, "box_conf": np.array([0.9, 0.2], np.float32)}, crop

    monkeypatch.setattr(demo, "predict_image", with_conf)
    image = Path(samples[0]["image_path"])
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / f"{image.stem}_left.obj").write_text("stale")
    assert _run("--checkpoint", run_dir, "--image", image, "--out", tmp_path / "o", "--min-conf", "0.5") == 0
    hands = json.loads((tmp_path / "o" / f"{image.stem}.json").read_text())["hands"]
    assert hands["right"]["detected"] and hands["right"]["confidence"] == pytest.approx(0.9)
    assert not hands["left"]["detected"] and hands["left"]["mesh"] is None
    assert (tmp_path / "o" / f"{image.stem}_right.obj").is_file() and not (tmp_path / "o" / f"{image.stem}_left.obj").exists()
