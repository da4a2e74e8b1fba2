"""Score a cache of generated samples against real images: FID/KID (whole and hand crops), hand
confidence, label consistency; a table, metrics.json with provenance, a per-sample CSV and a PNG
of the best and worst samples by each per-sample score."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handrecon.config import check_fields
from handrecon.data.loader import SourceConfig, build_source
from handrecon.errors import UserError
from handrecon.hand_model.mano import HandModel
from handrecon.io import atomic_save_figure, atomic_write_text, file_sha256
from handrecon.report import code_version, format_table, write_metrics_json

from .detectors import DetectorConfig, build_detector
from .genmetrics import FeatureCache, fid, hand_crop, kid, label_consistency


@dataclass
class GenerationEval:
    generated: str = ""  # a shard cache folder (tools/synth_cache.py)
    real: SourceConfig = field(default_factory=lambda: SourceConfig(kind="ih26m", root="", split="test"))  # real images with labels
    max_real: int | None = None  # the first N (>= 1) real samples; null: all
    mano_dir: str = ""
    inception_weights: str = ""  # the FID InceptionV3 weights file (weights-inception-2015-12-05-6726825d.pth)
    features: str = ""  # feature cache folder; default: <out>/features
    crop_margin: float = 1.5  # hand crop side = margin x the longer side of the hands' union box; > 0
    kid_subsets: int = 100  # >= 1
    kid_subset_size: int = 1000  # >= 1
    regressor: str | None = None  # a trained run or checkpoint folder: label consistency
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    device: str = "auto"
    out: str = "runs/eval_generation"
    grid: int = 4  # best and worst samples drawn per per-sample score; >= 1

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "max_real", "kid_subsets", "kid_subset_size", "grid")
        check_fields(self, "> 0", "crop_margin")


def _images(source, indices, crop_margin: float | None):
    for i in indices:
        sample = source[i]
        image = sample["image"] if crop_margin is None else hand_crop(sample["image"], sample["boxes"], crop_margin)
        yield image if image is not None else np.zeros((299, 299, 3), np.uint8)


def _grid(path: Path, source, order: dict[str, list[int]], titles: dict[str, list[str]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(order)
    cols = max(len(v) for v in order.values())
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.0 * cols, 2.2 * len(rows)), squeeze=False)
    for r, name in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(order[name]):
                ax.imshow(source[order[name][c]]["image"])
                ax.set_title(f"{name}: {titles[name][c]}", fontsize=6)
    fig.tight_layout()
    return atomic_save_figure(path, fig, dpi=100)


def evaluate_generation(cfg: GenerationEval) -> dict:
    from handrecon.data.shards import ShardSource
    from handrecon.engine.distributed import pick_device

    if not cfg.generated or not cfg.mano_dir:
        raise UserError("set generated (a shard cache folder) and mano_dir")
    out = Path(cfg.out)
    hand_model = HandModel(cfg.mano_dir)
    device = pick_device(cfg.device)
    fake = ShardSource(cfg.generated, hand_model)
    real = build_source(cfg.real, hand_model)
    real_idx = list(range(len(real) if cfg.max_real is None else min(cfg.max_real, len(real))))
    fake_idx = list(range(len(fake)))
    cache = FeatureCache(cfg.inception_weights, cfg.features or out / "features", device)
    real_ids = [f"{cfg.real.kind}:{Path(cfg.real.root).resolve()}:{cfg.real.split}:{real.get_meta(i)['sample_id']}" for i in real_idx]
    fake_ids = [f"{Path(cfg.generated).resolve()}:{k}" for k in fake.ids]
    summary: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    for name, margin in (("", None), ("_h", cfg.crop_margin)):
        rule = "whole" if margin is None else f"hand_crop_{margin}"
        r = cache.features(_images(real, real_idx, margin), real_ids, rule)
        f = cache.features(_images(fake, fake_idx, margin), fake_ids, rule)
        summary[f"fid{name}"] = fid(r, f)
        mean, std = kid(r, f, cfg.kid_subsets, cfg.kid_subset_size)
        summary[f"kid{name}"], ci[f"kid{name}"] = mean, (mean - 2 * std, mean + 2 * std)
    per_sample: dict[str, np.ndarray] = {}
    detector = build_detector(cfg.detector)
    if detector is not None:
        per_sample["hand_confidence"] = detector.scores([fake[i]["image"] for i in fake_idx])
        summary["hand_confidence"] = float(per_sample["hand_confidence"].mean())
    if cfg.regressor:
        from handrecon.config import load_config
        from handrecon.engine import Experiment
        from handrecon.engine.checkpoint import CONFIG, checkpoint_dir, load_weights
        from handrecon.models import build_model

        folder = checkpoint_dir(cfg.regressor)
        model = build_model(load_config(Experiment, folder / CONFIG).model, hand_model)
        load_weights(model, folder)
        per_sample.update(label_consistency(model.to(device), fake, hand_model, device=device))
        summary["label_mpjpe_mm"] = float(np.nanmean(per_sample["mpjpe_mm"]))
        summary["label_joints2d_px"] = float(np.nanmean(per_sample["joints2d_px"]))
    labels = [fake.labels(i) for i in fake_idx[:1]]
    manifest = Path(cfg.generated) / "manifest.json"  # a cache job's: the generator and its settings
    provenance = {
        "generated": str(Path(cfg.generated).resolve()),
        "generator_hash": labels[0].get("generator") if labels else None,
        "generator": json.loads(manifest.read_text()).get("generator") if manifest.is_file() else None,
        "num_generated": len(fake_idx),
        "real": {"kind": cfg.real.kind, "root": str(Path(cfg.real.root).resolve()), "split": cfg.real.split, "num": len(real_idx)},
        "inception_weights_sha256": file_sha256(cfg.inception_weights),
        "regressor": cfg.regressor,
        "detector": cfg.detector.name,
        "crop_margin": cfg.crop_margin,
        "code_version": code_version(),
    }
    write_metrics_json(out / "metrics.json", summary, provenance, ci)
    if per_sample:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["key", *per_sample])
        for k, key in enumerate(fake.ids):
            writer.writerow([key, *(f"{per_sample[n][k]:.6g}" for n in per_sample)])
        atomic_write_text(out / "per_sample.csv", buf.getvalue())
        order, titles = {}, {}
        for name, values in per_sample.items():
            good = [i for i in np.argsort(values) if np.isfinite(values[i])]
            if name == "hand_confidence":
                good = good[::-1]  # high confidence is good
            for tag, picks in (("best", good[: cfg.grid]), ("worst", good[::-1][: cfg.grid])):
                order[f"{tag} {name}"] = [int(i) for i in picks]
                titles[f"{tag} {name}"] = [f"{values[i]:.2f}" for i in picks]
        _grid(out / "best_worst.png", fake, order, titles)
    print(format_table(summary, ci))
    return {"metrics": summary, "ci": ci, "per_sample": per_sample}
