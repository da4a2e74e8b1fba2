#!/usr/bin/env python
"""Run the toolkit end to end on built-in defaults: no data, weights, GPU or network needed."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handrecon.cli import add_config_args, config_from_args, run_tool
from handrecon.data.procedural import ProceduralConfig, generate
from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano
from handrecon.io import atomic_save_image


@dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"  # every artefact goes below this folder
    seed: int = 0
    num_images: int = 120  # procedural images over train/val/test
    procedural: ProceduralConfig = field(default_factory=lambda: ProceduralConfig(image_size=(192, 192)))
    gallery_size: int = 16  # images in the gallery PNG
    eval_noise_mm: float = 8.0  # std of the noise added to ground truth for the evaluation demo


def _stage(name: str) -> None:
    print(f"\n== {name}", flush=True)


def _gallery(reader, hand_model: HandModel, count: int, path: Path) -> Path:
    """Images with their mesh labels drawn over them, side by side (labels are exact)."""
    from handrecon.evaluation import overlay_hands

    colours = np.where(np.arange(1556)[:, None] < 778, [[0.95, 0.35, 0.25]], [[0.25, 0.5, 0.95]])  # right red, left blue
    tiles = []
    for i in range(min(count, len(reader))):
        sample = reader[i]
        image = sample["image"].astype(np.float32) / 255
        overlay = overlay_hands(
            image, sample["verts"], sample["mesh_valid"], sample["focal"], sample["princpt"], hand_model.faces_two_hand, colours, weight=0.55
        )
        tiles.append(np.concatenate([image, overlay], axis=0))
    cols = 8
    rows = [np.concatenate(tiles[r : r + cols], axis=1) for r in range(0, len(tiles), cols)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    grid = (np.concatenate(rows, axis=0) * 255 + 0.5).astype(np.uint8)
    return atomic_save_image(path, grid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(QuickstartConfig, args)
    out = Path(cfg.out)
    start = time.perf_counter()

    _stage("1. stand-in MANO model")
    mano_dir = out / "mano"
    write_standin_mano(mano_dir)
    hand_model = HandModel(mano_dir)
    print(f"MANO_RIGHT.pkl / MANO_LEFT.pkl in {mano_dir}")

    _stage("2. procedural dataset (InterHand2.6M format)")
    data_dir = out / "procedural"
    stats = generate(hand_model, cfg.procedural, data_dir, cfg.num_images, cfg.seed)
    print(json.dumps(stats))

    _stage("3. gallery: images and their exact mesh labels")
    from handrecon.data.readers import create_reader

    train = create_reader("ih26m", data_dir, "train", hand_model)
    gallery = _gallery(train, hand_model, cfg.gallery_size, out / "gallery.png")
    print(f"wrote {gallery}")

    _stage("4. evaluation demo: ground truth + noise through the InterWild protocol")
    from handrecon import metrics
    from handrecon.evaluation import format_table, load_ground_truth, write_metrics_json

    gt = load_ground_truth(create_reader("ih26m", data_dir, "test", hand_model, load_images=False))
    noise = np.random.default_rng(cfg.seed).normal(scale=cfg.eval_noise_mm / 1000, size=gt.verts.shape)
    result = metrics.evaluate({"verts": gt.verts + noise}, gt.as_dict(), dataset="ih26m", hand_model=hand_model)
    ci = metrics.bootstrap_ci(result, n=500, seed=cfg.seed)
    print(f"(not a model: the test split's own meshes with {cfg.eval_noise_mm} mm Gaussian noise per coordinate)")
    print(format_table(result.summary, ci))
    write_metrics_json(out / "eval_demo" / "metrics.json", result.summary, {"what": "ground truth + noise demo", "noise_mm": cfg.eval_noise_mm}, ci)

    print(f"\nquickstart done in {time.perf_counter() - start:.0f} s; artefacts in {out}")
    return 0


if __name__ == "__main__":
    run_tool(main)
