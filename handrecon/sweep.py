"""Mix-ratio studies: train the same experiment at several shares of one named source (`vary`,
usually the synthetic cache) and seeds, evaluate each on a test split, collect rows in
results.csv and plot metric vs ratio.

Every run has the same steps (`train.max_steps` is required) and the same seed per row of the
study, so rows differ only in the share of the varied source per batch; the other sources share
the rest in the proportions of `experiment.data.ratios`, and a share of 0 leaves the varied
source out. A finished run (its
`test_metrics.json` exists) is not trained again: a study resumes where it stopped.

Beside the runs, `baseline.json` scores the mean hand (`mean_hand_predictions`): every test sample
predicted as the average root-relative mesh of each hand (and the average relative translation) of
the epoch source's training labels. It is what a regressor scores that ignores its image; the plot
draws it as a dashed line.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import check_fields
from .data.readers import dataset_spec, list_datasets
from .engine.config import Experiment
from .errors import UserError
from .hand_model.constants import NUM_VERTS
from .io import atomic_save_figure, atomic_write_json, atomic_write_text


@dataclass
class TestSplit:
    dataset: str = field(default="procedural", metadata={"choices": tuple(list_datasets())})  # a registered dataset
    root: str = ""
    split: str = "test"


@dataclass
class Sweep:
    out: str = "runs/sweep"
    experiment: Experiment = field(default_factory=Experiment)  # the base run with every source; train.max_steps must be set
    vary: str = "synth"  # the experiment.data.sources entry whose share `ratios` sets
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.3])  # shares of `vary` in each batch, in [0, 1)
    seeds: list[int] = field(default_factory=lambda: [0])  # >= 0 each
    test: TestSplit = field(default_factory=TestSplit)
    metric: str = "interwild/mpvpe_all_wrist_mm"  # plotted and used for the table's order
    bootstrap: int = 500  # resamples (>= 0) for the 95% intervals; 0: no intervals

    def __post_init__(self) -> None:
        check_fields(self, "in [0, 1)", "ratios")
        check_fields(self, ">= 0", "seeds", "bootstrap")


def run_config(sweep: Sweep, ratio: float, seed: int) -> Experiment:
    """The experiment of one (ratio, seed) cell."""
    cfg = copy.deepcopy(sweep.experiment)
    if cfg.train.max_steps is None:
        raise UserError("a sweep compares runs of equal length: set experiment.train.max_steps")
    cfg.out = str(Path(sweep.out) / f"ratio{ratio:.2f}_seed{seed}")
    cfg.train.seed, cfg.data.seed = seed, seed
    data, vary = cfg.data, sweep.vary
    if vary not in data.sources:
        raise UserError(f"vary: experiment.data.sources has no source '{vary}' (its sources: {sorted(data.sources)})")
    if data.epoch_source_name() == vary:
        raise UserError(f"experiment.data.epoch_source is '{vary}', the source whose share varies: give the epoch to another source")
    others = {name: share for name, share in data.ratios.items() if name != vary}
    total = sum(others.values())
    if total <= 0:
        raise UserError(f"the sources besides '{vary}' need shares > 0 in experiment.data.ratios: they keep those proportions")
    shares = {name: (ratio if name == vary else (1.0 - ratio) * others[name] / total) for name in data.sources}
    keep = [name for name in data.sources if name != vary or ratio > 0]
    cfg.data = dataclasses.replace(data, sources={n: data.sources[n] for n in keep}, ratios={n: shares[n] for n in keep})
    return cfg


def evaluate_run(cfg: Experiment, test: TestSplit, bootstrap: int, seed: int) -> dict:
    """Metrics (and 95% intervals) of a finished run's last checkpoint on the test split."""
    from .data.readers import create_reader
    from .engine import checkpoint as ckpt
    from .engine.distributed import pick_device
    from .engine.predict import predict_dataset
    from .evaluation import load_ground_truth
    from .hand_model.mano import HandModel
    from .models import build_model

    hand_model = HandModel(cfg.mano_dir)
    spec = dataset_spec(test.dataset)
    reader_name, rules = spec.reader, spec.rules
    model = build_model(cfg.model, hand_model)
    ckpt.load_weights(model, ckpt.latest_checkpoint(cfg.out))
    device = pick_device(cfg.train.device)
    pred = predict_dataset(model.to(device), create_reader(reader_name, test.root, test.split, hand_model), device=device, progress=False)
    gt = load_ground_truth(create_reader(reader_name, test.root, test.split, hand_model, load_images=False))
    return score(pred, gt, rules, hand_model, bootstrap, seed)


def score(pred: dict, gt, rules, hand_model, bootstrap: int, seed: int) -> dict:
    """{'metrics', 'ci95' (with `bootstrap` resamples), 'num_samples'} of predictions on a test
    split's `GroundTruth`, as test_metrics.json and baseline.json hold them."""
    from . import metrics

    result = metrics.evaluate(pred, gt.as_dict(), dataset=rules, hand_model=hand_model)
    ci = metrics.bootstrap_ci(result, n=bootstrap, seed=seed) if bootstrap else {}
    return {"metrics": result.summary, "ci95": {k: list(v) for k, v in ci.items()}, "num_samples": len(gt.sample_ids)}


def mean_hand_predictions(train, count: int, regressors: np.ndarray) -> dict[str, np.ndarray]:
    """`count` identical predictions from a training split's `GroundTruth`: each hand the mean of
    its mesh relative to its wrist (regressed by `regressors` (2, 21, 778), as the metrics align
    it) over the samples with that mesh, the left wrist at the mean left-minus-right wrist offset
    over the samples with both meshes (`rel_trans`), the right wrist 0.5 m in front of the camera."""
    verts = train.verts.reshape(-1, 2, NUM_VERTS, 3).astype(np.float64)
    valid = train.mesh_valid.astype(bool)
    wrists = np.stack([verts[:, h].transpose(0, 2, 1) @ regressors[h][0] for h in range(2)], 1)  # (N, 2, 3)
    hands = []
    for h in range(2):
        if not valid[:, h].any():
            raise UserError("mean-hand baseline: the training split has no mesh of the " + ("right", "left")[h] + " hand")
        hands.append((verts[valid[:, h], h] - wrists[valid[:, h], h, None]).mean(0))
    both = valid.all(1)
    rel = (wrists[both, 1] - wrists[both, 0]).mean(0) if both.any() else np.array([0.2, 0.0, 0.0])
    right_wrist = np.array([0.0, 0.0, 0.5])
    mesh = np.concatenate([hands[0] + right_wrist, hands[1] + right_wrist + rel])
    return {"verts": np.repeat(mesh[None], count, 0).astype(np.float32), "rel_trans": np.repeat(rel[None], count, 0).astype(np.float32)}


def mean_hand_for(train, test, hand_model) -> dict[str, np.ndarray]:
    """`mean_hand_predictions` of a training split's `GroundTruth` for every sample of the `test`
    one, with its sample ids: what `metrics.evaluate` takes."""
    regressors = np.stack([hand_model.joint_regressor(s).cpu().numpy() for s in ("right", "left")]).astype(np.float64)
    return {**mean_hand_predictions(train, len(test.sample_ids), regressors), "sample_ids": np.asarray(test.sample_ids)}


def evaluate_baseline(sweep: Sweep, seed: int) -> dict:
    """The mean hand of the epoch source's labels scored on the test split (as `evaluate_run`)."""
    from .data.readers import create_reader
    from .evaluation import load_ground_truth
    from .hand_model.mano import HandModel

    data = sweep.experiment.data
    name = data.epoch_source_name() or next(n for n in data.sources if n != sweep.vary)
    source = data.sources[name]
    if source.kind not in list_datasets():
        raise UserError(f"mean-hand baseline: source '{name}' is of kind '{source.kind}', not a dataset reader")
    hand_model = HandModel(sweep.experiment.mano_dir)
    train = load_ground_truth(create_reader(source.kind, source.root, source.split, hand_model, load_images=False), hand_model)
    spec = dataset_spec(sweep.test.dataset)
    gt = load_ground_truth(create_reader(spec.reader, sweep.test.root, sweep.test.split, hand_model, load_images=False), hand_model)
    return {**score(mean_hand_for(train, gt, hand_model), gt, spec.rules, hand_model, sweep.bootstrap, seed), "source": name}


def run_sweep(sweep: Sweep, progress: bool = True) -> list[dict]:
    """Train and evaluate every (ratio, seed); returns the rows also written to results.csv."""
    from .engine import Trainer

    rows = []
    for seed in sweep.seeds:
        for ratio in sweep.ratios:
            cfg = run_config(sweep, ratio, seed)
            done = Path(cfg.out) / "test_metrics.json"
            if not done.is_file():
                resume = (Path(cfg.out) / "checkpoints").is_dir()
                trainer = Trainer(cfg, resume=resume, progress=progress)
                try:
                    trainer.fit()
                finally:
                    trainer.close()
                atomic_write_json(done, evaluate_run(cfg, sweep.test, sweep.bootstrap, seed), indent=1)
            record = json.loads(done.read_text())
            row = {"ratio": ratio, "seed": seed, "run": cfg.out, "num_samples": record["num_samples"]}
            for key, value in record["metrics"].items():
                row[key] = value
                lo, hi = record["ci95"].get(key, (np.nan, np.nan))
                row[f"{key}/ci_lo"], row[f"{key}/ci_hi"] = lo, hi
            rows.append(row)
    write_results(Path(sweep.out) / "results.csv", rows)
    baseline = Path(sweep.out) / "baseline.json"
    if not baseline.is_file():
        atomic_write_json(baseline, evaluate_baseline(sweep, sweep.seeds[0]), indent=1)
    plot_metric(rows, sweep.metric, Path(sweep.out) / "metric_vs_ratio.png", json.loads(baseline.read_text())["metrics"].get(sweep.metric))
    return rows


def write_results(path: Path, rows: list[dict]) -> Path:
    """results.csv with one row per (ratio, seed); rows of earlier studies in the file are kept
    unless the same (ratio, seed, run) is written again."""
    old, new = [], {(r["ratio"], r["seed"], r["run"]) for r in rows}
    if path.is_file():
        with open(path, newline="") as fh:
            old = [r for r in csv.DictReader(fh) if (float(r["ratio"]), int(r["seed"]), r["run"]) not in new]
    fields = list(dict.fromkeys([k for r in rows for k in r] + [k for r in old for k in r]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(old + rows)
    return atomic_write_text(path, buf.getvalue())


def plot_metric(rows: list[dict], metric: str, path: Path, baseline: float | None = None) -> Path:
    """Metric vs ratio: one line per seed with its bootstrap band, and the mean-hand baseline
    (dashed) when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for seed in sorted({r["seed"] for r in rows}):
        mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["ratio"])
        x = [r["ratio"] for r in mine]
        ax.plot(x, [r[metric] for r in mine], marker="o", label=f"seed {seed}")
        ax.fill_between(x, [r[f"{metric}/ci_lo"] for r in mine], [r[f"{metric}/ci_hi"] for r in mine], alpha=0.2)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label="mean hand")
    ax.set_xlabel("synthetic share of each batch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_save_figure(path, fig, dpi=110)
