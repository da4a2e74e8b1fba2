"""tools/eval.py end to end on a procedural split: zero for ground truth, known values for shifts."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from image_checks import dominant, read_png

from handrecon.data.procedural import ProceduralConfig, generate
from handrecon.data.readers import create_reader
from handrecon.evaluation import load_ground_truth
from handrecon.hand_model.standin import write_standin_mano

TOOL = Path(__file__).resolve().parents[1] / "tools" / "eval.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory, hand_model):
    root = tmp_path_factory.mktemp("eval_data")
    write_standin_mano(root / "mano")
    generate(hand_model, ProceduralConfig(image_size=(64, 64), batch_size=16, split_fractions=(0.5, 0.0, 0.5)), root, num=16, seed=2, progress=False)
    gt = load_ground_truth(create_reader("ih26m", root, "test", hand_model, load_images=False))
    return root, gt


def _run(root, preds, *extra):
    out = subprocess.run(
        [sys.executable, str(TOOL), "--predictions", str(preds), "--dataset", "procedural", "--data-root", str(root), *extra],
        capture_output=True,
        text=True,
    )
    return out


def _save(path, ids, verts, **more):
    np.savez(path, sample_ids=np.array([int(i) for i in ids]), verts=verts, **more)
    return path


def test_ground_truth_scores_zero_and_reports_are_written(data, tmp_path):
    root, gt = data
    preds = _save(tmp_path / "gt.npz", gt.sample_ids[::-1], gt.verts[::-1])  # order does not matter
    out = _run(root, preds, "--bootstrap", "50", "--overlays", "2")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "eval_procedural_test" / "metrics.json").read_text())
    for key, value in report["metrics"].items():
        if not np.isnan(value):
            assert abs(value) < 1e-3, key
    prov = report["provenance"]
    assert prov["num_samples"] == len(gt.sample_ids) and prov["protocol"] == "interwild" and len(prov["predictions_sha256"]) == 64
    rows = list(csv.DictReader(open(tmp_path / "eval_procedural_test" / "per_sample.csv")))
    assert [r["sample_id"] for r in rows] == gt.sample_ids
    # two samples: ground-truth meshes (green) in the top row, predictions (red) below, over the same images
    overlays = read_png(tmp_path / "eval_procedural_test" / "overlays_worst.png", (480, 500))
    top, bottom = overlays[:250], overlays[250:]
    assert dominant(top, 1).sum() - dominant(bottom, 1).sum() > 1000
    assert dominant(bottom, 0).sum() - dominant(top, 0).sum() > 1000
    assert "interwild/mpvpe_all_wrist_mm" in out.stdout


def test_shifted_left_hands_give_the_offset(data, tmp_path):
    root, gt = data
    d = np.array([0.01, 0.0, -0.02])
    verts = gt.verts.copy()
    verts[:, 778:] += d * gt.mesh_valid[:, 1:2, None]
    preds = _save(tmp_path / "shift.npz", gt.sample_ids, verts)
    out = _run(root, preds, "--overlays", "0", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"]
    both = gt.mesh_valid.all(1)
    assert metrics["interwild/mpvpe_all_wrist_mm"] == pytest.approx(0.0, abs=1e-3)
    if both.any():
        assert metrics["interwild/mrrpe_mm"] == pytest.approx(np.linalg.norm(d) * 1000, rel=1e-4)
        assert metrics["interwild/rrve_rightwrist_mm"] == pytest.approx(np.linalg.norm(d) * 500, rel=1e-4)


@pytest.mark.slow  # launches tools/eval.py several times
def test_missing_and_extra_ids_are_errors(data, tmp_path):
    root, gt = data
    few = _save(tmp_path / "few.npz", gt.sample_ids[1:], gt.verts[1:])
    out = _run(root, few)
    assert out.returncode == 2 and out.stderr.startswith("error:") and gt.sample_ids[0] in out.stderr
    more = _save(tmp_path / "more.npz", [*gt.sample_ids, "999999"], np.concatenate([gt.verts, gt.verts[:1]]))
    out = _run(root, more)
    assert out.returncode == 2 and "999999" in out.stderr and "not in the split" in out.stderr


def test_overlays_ignore_predictions_for_absent_hands(data, tmp_path, hand_model):
    from handrecon.evaluation import save_overlays

    root, gt = data
    single = [i for i in range(len(gt.sample_ids)) if not gt.mesh_valid[i].all()]
    if not single:
        pytest.skip("no one-hand sample in this split")
    i = single[0]
    reader = create_reader("ih26m", root, "test", hand_model)
    clean = gt.verts.copy()
    junk = gt.verts.copy()
    absent = np.repeat(~gt.mesh_valid[i], 778)
    junk[i, absent] = np.random.default_rng(0).normal(scale=0.01, size=(absent.sum(), 3))  # around the camera centre
    a = save_overlays(tmp_path / "a.png", reader, [i], clean, gt.verts, gt.mesh_valid, ["x"], hand_model.faces_two_hand)
    b = save_overlays(tmp_path / "b.png", reader, [i], junk, gt.verts, gt.mesh_valid, ["x"], hand_model.faces_two_hand)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.slow  # launches tools/eval.py several times
def test_ih26m_is_scored_on_its_human_annotated_subset(data, tmp_path):
    root, gt = data
    preds = _save(tmp_path / "all.npz", gt.sample_ids, gt.verts)  # predictions for the whole split
    ids_file = root / "aid_human_annot_test.txt"
    missing = _run(root, preds, "--dataset", "ih26m", "--out", str(tmp_path / "none"))
    assert missing.returncode != 0 and "aid_human_annot_test.txt" in missing.stderr
    keep = gt.sample_ids[::3]
    ids_file.write_text("".join(f"{i}\n" for i in keep))
    try:
        human = _run(root, preds, "--dataset", "ih26m", "--out", str(tmp_path / "human"))
        every = _run(root, preds, "--dataset", "ih26m", "--subset", "all", "--out", str(tmp_path / "all"))
    finally:
        ids_file.unlink()
    assert human.returncode == 0 and every.returncode == 0, human.stderr + every.stderr
    reports = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("human", "all")}
    assert reports["human"]["provenance"]["reader_options"] == {"subset": "human_annot"}
    assert reports["human"]["provenance"]["num_samples"] == len(keep) < len(gt.sample_ids)
    assert reports["all"]["provenance"]["num_samples"] == len(gt.sample_ids)
    rows = list(csv.DictReader(open(tmp_path / "human" / "per_sample.csv")))
    assert sorted(r["sample_id"] for r in rows) == sorted(keep)


def test_a_nan_vertex_is_an_error_not_a_better_score(data, tmp_path):
    """Non-finite values used to drop out of the means as 'no ground truth' and improve MPVPE."""
    root, gt = data
    verts = gt.verts.copy()
    verts[3, 100] = np.nan
    out = _run(root, _save(tmp_path / "nan.npz", gt.sample_ids, verts), "--out", str(tmp_path / "r"))
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("error:") and "'verts' of 1 sample(s): " + gt.sample_ids[3] in line
    assert not (tmp_path / "r" / "metrics.json").exists()


@pytest.mark.parametrize("case", ["whole sample nan", "inf vertex", "nan rel_trans"])
def test_nonfinite_predictions_name_the_field_and_samples(data, tmp_path, case):
    from handrecon.evaluation import load_predictions
    from handrecon.metrics import NonFinitePredictionError

    _, gt = data
    verts, rel = gt.verts.copy(), np.zeros((len(gt.sample_ids), 3))
    field, rows = ("rel_trans", [1, 4]) if case == "nan rel_trans" else ("verts", [2, 5])
    for i in rows:
        if case == "whole sample nan":
            verts[i] = np.nan
        elif case == "inf vertex":
            verts[i, 1500, 2] = -np.inf
        else:
            rel[i, 0] = np.nan
    path = _save(tmp_path / "bad.npz", gt.sample_ids, verts, rel_trans=rel)
    with pytest.raises(NonFinitePredictionError) as err:
        load_predictions(path, gt.sample_ids)
    assert f"'{field}' of 2 sample(s): {gt.sample_ids[rows[0]]}, {gt.sample_ids[rows[1]]}" in str(err.value)


def test_prediction_dtypes_are_checked_first(data, tmp_path):
    from handrecon.errors import UserError
    from handrecon.evaluation import load_predictions

    _, gt = data
    obj = tmp_path / "obj.npz"
    np.savez(obj, sample_ids=np.array(gt.sample_ids, dtype=object), verts=gt.verts)  # pickled object array
    with pytest.raises(UserError, match="field 'sample_ids' is a pickled object array"):
        load_predictions(obj, gt.sample_ids)
    ints = tmp_path / "ints.npz"
    np.savez(ints, sample_ids=np.array(gt.sample_ids), verts=(gt.verts * 1000).astype(np.int32))
    with pytest.raises(UserError, match="field 'verts' has dtype int32; it must hold floating-point numbers"):
        load_predictions(ints, gt.sample_ids)


def test_millimetre_predictions_are_refused(data, tmp_path):
    from handrecon.errors import UserError
    from handrecon.evaluation import load_predictions

    _, gt = data
    path = _save(tmp_path / "mm.npz", gt.sample_ids, gt.verts * 1000)
    with pytest.raises(UserError, match=r"field 'verts' reaches .*predictions are in metres, not millimetres"):
        load_predictions(path, gt.sample_ids)
