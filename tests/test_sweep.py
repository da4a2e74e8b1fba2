"""Mix-ratio sweeps: equal-length runs per ratio, results.csv rows, resumption, the plot."""
from __future__ import annotations

import csv
import dataclasses
import json

import pytest
from image_checks import near, read_png
from shard_utils import write_test_shards

from handrecon.config import load_config
from handrecon.data.readers import create_reader
from handrecon.errors import UserError
from handrecon.sweep import Sweep, mean_hand_predictions, run_config, run_sweep


@pytest.fixture
def sweep(tmp_path, mano_dir, procedural_root, hand_model):
    reader = create_reader("ih26m", procedural_root, "val", hand_model)
    shards = write_test_shards([reader[i] for i in range(len(reader))], tmp_path / "shards", per_shard=4)
    return load_config(Sweep, None, [
        f"out={tmp_path / 'sweep'}", "ratios=[0.0, 0.5]", "seeds=[3]", "bootstrap=50", "vary=synth",
        f"test.root={procedural_root}", f"experiment.mano_dir={mano_dir}", "experiment.model.name=dir_tiny",
        f"experiment.data.sources.real={{kind: ih26m, root: {procedural_root}, split: train}}",
        f"experiment.data.sources.synth={{kind: shards, root: {shards}}}", "experiment.data.ratios={real: 1.0, synth: 0.0}",
        "experiment.data.batch_size=8",
        "experiment.data.num_workers=0", "experiment.train.max_steps=2", "experiment.train.device=cpu",
    ])  # fmt: skip


def test_cells_differ_only_in_the_synthetic_share(sweep):
    zero, half = run_config(sweep, 0.0, 3), run_config(sweep, 0.5, 3)
    assert list(zero.data.sources) == ["real"] and zero.data.ratios == {"real": 1.0}
    assert half.data.sources["synth"].kind == "shards" and half.data.ratios == {"real": 0.5, "synth": 0.5}
    assert zero.train.max_steps == half.train.max_steps == 2 and zero.train.seed == half.train.seed == 3
    sweep.experiment.train.max_steps = None
    with pytest.raises(UserError, match="set experiment.train.max_steps"):
        run_config(sweep, 0.0, 3)


def test_the_varied_source_takes_its_share_and_the_others_keep_their_proportions(sweep):
    """Four named sources, one varied: the other three split the rest 2 : 1 : 1 as in the base ratios."""
    base = sweep.experiment.data
    sources = {**base.sources, "reih": base.sources["real"], "coco": base.sources["real"]}
    sweep.experiment.data = dataclasses.replace(base, sources=sources, ratios={"real": 0.4, "reih": 0.2, "coco": 0.2, "synth": 0.2})
    cell = run_config(sweep, 0.3, 3).data
    assert list(cell.sources) == ["real", "synth", "reih", "coco"] and cell.epoch_source_name() == "real"
    assert cell.ratios == pytest.approx({"real": 0.35, "synth": 0.3, "reih": 0.175, "coco": 0.175}, abs=1e-12)
    assert list(run_config(sweep, 0.0, 3).data.sources) == ["real", "reih", "coco"]
    sweep.vary = "shards"
    with pytest.raises(UserError, match=r"vary: experiment.data.sources has no source 'shards' \(its sources: \['coco', 'real', 'reih', 'synth'\]\)"):
        run_config(sweep, 0.3, 3)


@pytest.mark.slow  # trains two cells
def test_sweep_writes_rows_and_plot_and_resumes(sweep, tmp_path):
    rows = run_sweep(sweep, progress=False)
    assert [(r["ratio"], r["seed"]) for r in rows] == [(0.0, 3), (0.5, 3)]
    for r in rows:
        assert r["interwild/mpvpe_all_wrist_mm/ci_lo"] <= r["interwild/mpvpe_all_wrist_mm"] <= r["interwild/mpvpe_all_wrist_mm/ci_hi"]
    with open(tmp_path / "sweep" / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [(float(t["ratio"]), int(t["seed"])) for t in table] == [(0.0, 3), (0.5, 3)]
    plot = read_png(tmp_path / "sweep" / "metric_vs_ratio.png", (550, 385))  # 5 x 3.5 in at 110 dpi
    assert near(plot, (31, 119, 180)).sum() > 200  # the seed's line and markers in matplotlib's first colour
    baseline = json.loads((tmp_path / "sweep" / "baseline.json").read_text())
    assert baseline["source"] == "real" and baseline["num_samples"] == rows[0]["num_samples"]
    assert baseline["metrics"]["interwild/mpvpe_all_wrist_mm"] > 0
    stamp = (tmp_path / "sweep" / "ratio0.50_seed3" / "test_metrics.json").stat().st_mtime_ns
    again = run_sweep(sweep, progress=False)  # finished cells are not trained again
    assert again == rows
    assert (tmp_path / "sweep" / "ratio0.50_seed3" / "test_metrics.json").stat().st_mtime_ns == stamp


def test_the_mean_hand_is_each_hands_mean_wrist_relative_mesh(hand_model):
    """Training meshes that differ only by where each hand is: the mean hand is that mesh, scored 0
    on itself; two different shapes average vertex by vertex; rel_trans is the mean wrist offset."""
    import numpy as np

    from handrecon import metrics
    from handrecon.evaluation import GroundTruth

    regs = np.stack([hand_model.joint_regressor(s).numpy() for s in ("right", "left")]).astype(np.float64)
    rng = np.random.default_rng(0)
    hand = rng.normal(scale=0.03, size=(1556, 3))
    shifts = rng.normal(scale=0.2, size=(4, 2, 1, 3))
    verts = (hand.reshape(1, 2, 778, 3) + shifts).reshape(4, 1556, 3)
    train = GroundTruth([str(i) for i in range(4)], verts, np.ones((4, 2), bool), np.zeros((4, 42, 3)), np.ones((4, 42), bool), np.array(["interacting"] * 4))
    pred = mean_hand_predictions(train, 3, regs)
    assert pred["verts"].shape == (3, 1556, 3) and pred["rel_trans"].shape == (3, 3)
    wrist = lambda v, h: regs[h][0] @ v[778 * h : 778 * (h + 1)]  # noqa: E731
    rel = np.mean([wrist(v, 1) - wrist(v, 0) for v in verts], 0)
    np.testing.assert_allclose(pred["rel_trans"][0], rel, atol=1e-6)
    gt = {"verts": verts[:3], "mesh_valid": np.ones((3, 2), bool), "joints3d": np.zeros((3, 42, 3)), "joints_valid": np.zeros((3, 42), bool),
          "hand_type": np.array(["interacting"] * 3)}  # fmt: skip
    score = metrics.evaluate(pred, gt, regressors=regs).summary["interwild/mpvpe_all_wrist_mm"]
    assert score == pytest.approx(0.0, abs=1e-3)
    # two shapes: the mean of their wrist-relative meshes, vertex by vertex
    other = (hand + rng.normal(scale=0.01, size=hand.shape)).reshape(1, 1556, 3)
    both = GroundTruth(["a", "b"], np.concatenate([verts[:1], other]), np.ones((2, 2), bool), np.zeros((2, 42, 3)), np.ones((2, 42), bool), np.array(["interacting"] * 2))
    mean = mean_hand_predictions(both, 1, regs)["verts"][0]
    for h in range(2):
        expected = np.mean([v[778 * h : 778 * (h + 1)] - wrist(v, h) for v in both.verts], 0)
        got = mean[778 * h : 778 * (h + 1)] - wrist(mean, h)
        np.testing.assert_allclose(got, expected, atol=1e-5)
