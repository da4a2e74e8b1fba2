"""Score a cache of generated samples against real images: FID/KID (whole and hand crops), hand
confidence, label consistency; a table, metrics.json with provenance, a per-sample CSV and a PNG
of the best and worst samples by each per-sample score.

Two protocols (`protocol`; docs/generation_protocol.md states each definition and its source):

* `ours` (default): whole images as stored; hand crops are the square around the hands' boxes
  grown by `crop_margin`; label consistency as MPJPE (mm) and 2D joint error (px). Metric names:
  fid, kid, fid_h, kid_h, hand_confidence, label_mpjpe_mm, label_joints2d_px.
* `attentionhand`: the MSCOCO protocol of AttentionHand (Park et al., ECCV 2024), which SesaHand
  reports: images resized to 512 x 512, hand crops the tight box of the hand mesh silhouette
  stretched to a square, and MSE-2D (px^2 of the 512 x 512 image) / MSE-3D (wrist-relative, cm^2)
  of the regressor's joints against the conditioning labels. Metric names carry the protocol:
  attentionhand/fid, .../kid, .../fid_h, .../kid_h, .../hand_confidence; the label scores are
  label_mse_2d_px2 and label_mse_3d_cm2, without the prefix, because their definitions are this
  toolkit's, not the paper's. Where it differs from the original: the paper publishes neither its MSE
  definitions nor its hand detector, so MSE-2D / MSE-3D use this toolkit's definitions (its units
  are not known to match the paper's numbers) with `regressor` (a run of this toolkit, not
  InterWild's weights), and hand confidence uses `detector`; the silhouette box is computed from
  the projected mesh rather than from a rendered, thresholded mesh image. Use an MSCOCO real
  source (`real={kind: mscoco, root: ..., split: train}`, crop person: one sample per annotated
  person, both hands, as AttentionHand renders them) and a cache generated from MSCOCO labels.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from handrecon.config import FieldError, check_fields
from handrecon.data.loader import SourceConfig, build_source
from handrecon.errors import UserError
from handrecon.hand_model.mano import HandModel
from handrecon.io import atomic_save_figure, atomic_write_text, file_sha256
from handrecon.report import code_version, format_table, write_metrics_json

from .detectors import DetectorConfig, build_detector
from .genmetrics import (
    AH_CANVAS,
    FeatureCache,
    attentionhand_box,
    attentionhand_crop,
    canvas_image,
    fid,
    hand_crop,
    kid,
    label_consistency,
    label_mse,
)

PROTOCOLS = ("ours", "attentionhand")
#: what the attentionhand protocol's label scores are (metrics.json provenance)
AH_DEFINITIONS = {
    "crop": f"tight box of the projected label mesh of the hands (label boxes without a mesh) in the image resized to {AH_CANVAS}x{AH_CANVAS}, "
    "no margin, stretched to the Inception size",
    "mse_2d_px2": f"regressor joints projected with the label camera vs the label 2D joints, squared error in pixels of the {AH_CANVAS}x{AH_CANVAS} "
    "image, mean over 21 joints x 2 coordinates per hand, then over hands with a label mesh, then over samples",
    "mse_3d_cm2": "regressor joints vs the label joints, each minus its wrist, squared error in cm, mean over 21 joints x 3 coordinates per hand, "
    "then over hands with a label mesh, then over samples",
}


@dataclass
class GenerationEval:
    generated: str = ""  # a shard cache folder (tools/synth_cache.py)
    real: SourceConfig = field(default_factory=lambda: SourceConfig(kind="ih26m", root="", split="test"))  # real images with labels
    max_real: int | None = None  # the first N (>= 1) real samples; null: all
    mano_dir: str = ""
    inception_weights: str = ""  # the FID InceptionV3 weights file (weights-inception-2015-12-05-6726825d.pth)
    features: str = ""  # feature cache folder; default: <out>/features
    protocol: str = "ours"  # ours | attentionhand: crop rule, image size and label scores (docs/generation_protocol.md)
    crop_margin: float = 1.5  # protocol ours: hand crop side = margin x the longer side of the hands' union box; > 0
    kid_subsets: int = 100  # >= 1
    kid_subset_size: int = 1000  # >= 1
    regressor: str | None = None  # a trained run or checkpoint folder: label consistency (ours) or MSE-2D / MSE-3D (attentionhand)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    device: str = "auto"
    out: str = "runs/eval_generation"
    grid: int = 4  # best and worst samples drawn per per-sample score; >= 1

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "max_real", "kid_subsets", "kid_subset_size", "grid")
        check_fields(self, "> 0", "crop_margin")
        if self.protocol not in PROTOCOLS:
            raise FieldError("protocol", f"one of {', '.join(PROTOCOLS)}", self.protocol)


def _views(protocol: str, crop_margin: float) -> list[tuple[str, str, Callable[[dict], tuple[np.ndarray | None, str]]]]:
    """(metric suffix, feature-cache rule, sample -> (image or None, where the crop came from)) for
    the whole images and the hand crops of `protocol`."""
    if protocol == "ours":
        return [
            ("", "whole", lambda s: (s["image"], "image")),
            ("_h", f"hand_crop_{crop_margin}", lambda s: (hand_crop(s["image"], s["boxes"], crop_margin), "boxes")),
        ]

    def crop(sample: dict) -> tuple[np.ndarray | None, str]:
        found = attentionhand_box(sample)
        return (None, "none") if found is None else (attentionhand_crop(sample["image"], found[0]), found[1])

    return [
        ("", f"attentionhand_whole_{AH_CANVAS}", lambda s: (canvas_image(s["image"]), "image")),
        ("_h", f"attentionhand_mesh_box_{AH_CANVAS}", crop),
    ]


def _images(source, indices, view, counts: dict[str, int]):
    """The view of each sample; a sample without a crop gives a black image (counted as 'none')."""
    for i in indices:
        image, where = view(source[i])
        where = where if image is not None else "none"
        counts[where] = counts.get(where, 0) + 1
        yield image if image is not None else np.zeros((299, 299, 3), np.uint8)


def load_regressor(path: str, hand_model: HandModel) -> torch.nn.Module:
    """A trained model of this toolkit from a run or checkpoint folder."""
    from handrecon.config import load_config
    from handrecon.engine import Experiment
    from handrecon.engine.checkpoint import CONFIG, checkpoint_dir, load_weights
    from handrecon.models import build_model

    folder = checkpoint_dir(path)
    model = build_model(load_config(Experiment, folder / CONFIG).model, hand_model)
    load_weights(model, folder)
    return model


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
    ah = cfg.protocol == "attentionhand"
    prefix = "attentionhand/" if ah else ""
    summary: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    crops: dict[str, dict[str, int]] = {"real": {}, "generated": {}}
    for name, rule, view in _views(cfg.protocol, cfg.crop_margin):
        counts = {"real": {}, "generated": {}}
        r = cache.features(_images(real, real_idx, view, counts["real"]), real_ids, rule)
        f = cache.features(_images(fake, fake_idx, view, counts["generated"]), fake_ids, rule)
        if name:
            crops = counts  # empty where the features came from the cache
        summary[f"{prefix}fid{name}"] = fid(r, f)
        mean, std = kid(r, f, cfg.kid_subsets, cfg.kid_subset_size)
        summary[f"{prefix}kid{name}"], ci[f"{prefix}kid{name}"] = mean, (mean - 2 * std, mean + 2 * std)
    per_sample: dict[str, np.ndarray] = {}
    detector = build_detector(cfg.detector)
    if detector is not None:
        per_sample["hand_confidence"] = detector.scores([fake[i]["image"] for i in fake_idx])
        summary[f"{prefix}hand_confidence"] = float(per_sample["hand_confidence"].mean())
    if cfg.regressor:
        model = load_regressor(cfg.regressor, hand_model).to(device)
        if ah:
            per_sample.update(label_mse(model, fake, hand_model, device=device))
            for key in ("mse_2d_px2", "mse_3d_cm2"):
                summary[f"label_{key}"] = float(np.nanmean(per_sample[key]))  # our definition, not the paper's (unpublished): no protocol prefix
        else:
            per_sample.update(label_consistency(model, fake, hand_model, device=device))
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
        "protocol": cfg.protocol,
        **({"canvas": AH_CANVAS, "definitions": AH_DEFINITIONS} if ah else {"crop_margin": cfg.crop_margin}),
        "hand_crops": crops,
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
