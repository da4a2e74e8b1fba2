#!/usr/bin/env python
"""Evaluate hand-mesh predictions on a dataset split with the InterWild (or DIR) protocol."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from handrecon.cli import int_at_least, run_tool
from handrecon.data.readers import dataset_spec, list_datasets
from handrecon.errors import UserError
from handrecon.evaluation import load_ground_truth, load_predictions, save_overlays, write_per_sample_csv
from handrecon.io import file_sha256
from handrecon.report import code_version, format_table, write_metrics_json


def _predict(args: argparse.Namespace, reader_name: str, hand_model) -> tuple[Path, Path]:
    """Run a trained checkpoint over the split; returns the predictions file it wrote and the
    checkpoint folder it used."""
    from handrecon.config import load_config
    from handrecon.data.readers import create_reader
    from handrecon.engine import Experiment, predict_dataset, save_predictions
    from handrecon.engine.checkpoint import CONFIG, checkpoint_dir, load_weights
    from handrecon.engine.distributed import pick_device
    from handrecon.models import build_model

    folder = checkpoint_dir(args.checkpoint)
    if folder == args.checkpoint:
        how = "as given"
    elif (args.checkpoint / "checkpoints" / "best.json").is_file():
        how = "the run's best, named by checkpoints/best.json"
    else:
        how = "the run's latest; it has no checkpoints/best.json"
    print(f"scoring {folder} ({how})")
    cfg = load_config(Experiment, folder / CONFIG)
    model = build_model(cfg.model, hand_model)
    load_weights(model, folder, strict=True)
    device = pick_device(args.device)
    reader = create_reader(reader_name, args.data_root, args.split, hand_model, **_reader_options(args))
    framing = _framing(args, cfg, model)
    print(f"framing: {framing}")
    pred = predict_dataset(model.to(device), reader, args.batch_size, device, amp="off", framing=framing)
    path = save_predictions(args.out / "predictions.npz", pred)
    print(f"predicted {len(pred['sample_ids'])} samples with {folder}")
    return path, folder


def _framing(args: argparse.Namespace, cfg, model) -> str:
    """--framing when given; the whole image for the InterWild protocols when the model finds
    the hand boxes itself (InterWild's evaluation frames the whole image: its body box is the
    full image); otherwise the framing the run trained with."""
    from handrecon.models.interwild import InterWildNet

    if args.framing is not None:
        return args.framing
    if args.protocol.startswith("interwild") and isinstance(model, InterWildNet):
        return "image"
    return cfg.augment.framing


def _reader_options(args: argparse.Namespace) -> dict[str, str]:
    """The protocol's reader options for the dataset, with --subset applied."""
    options = dict(dataset_spec(args.dataset).protocol_options)
    if args.subset is not None:
        options["subset"] = args.subset
    return options


def main(argv: list[str] | None = None) -> int:
    from handrecon import metrics
    from handrecon.data.augment import FRAMINGS
    from handrecon.data.readers.interhand import SUBSETS

    parser = argparse.ArgumentParser(description=__doc__.strip())
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="npz: sample_ids (N,), verts (N,1556,3) m, optional rel_trans (N,3)")
    source.add_argument("--checkpoint", type=Path, help="a run folder (its best checkpoint, else its latest), a checkpoint folder: predict first")
    parser.add_argument("--dataset", required=True, choices=list_datasets())
    parser.add_argument("--data-root", required=True, type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--subset",
        choices=SUBSETS,
        default=None,
        help="InterHand2.6M-format data: 'human_annot' (default for --dataset ih26m, InterWild's test set: the ids in "
        "aid_human_annot_<split>.txt) or 'all' (human + machine annotations; the default for procedural data)",
    )
    parser.add_argument("--protocol", default="interwild", choices=sorted(metrics.PROTOCOLS))
    parser.add_argument("--mano-dir", type=Path, default=None, help="MANO folder (default: DATA_ROOT/mano, as make_procedural writes it)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: eval_<dataset>_<split> beside the predictions, or in the checkpoint folder)")
    parser.add_argument("--bootstrap", type=int_at_least(0), default=0, help="resamples for 95%% confidence intervals (0: none)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=16, help="--checkpoint: images per forward pass")
    parser.add_argument("--device", default="auto", help="--checkpoint: auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--framing",
        choices=sorted(FRAMINGS),
        default=None,
        help="--checkpoint: crop the input around the hand boxes or show the whole image (default: 'image' for the interwild "
        "protocols with a model that finds the hand boxes itself (interwild, interwild_tiny), as InterWild evaluates; "
        "else the run's augment.framing)",
    )
    parser.add_argument("--overlays", type=int_at_least(0), default=4, help="best and worst samples drawn as PNG overlays (0: none)")
    args = parser.parse_args(argv)

    from handrecon.data.readers import create_reader
    from handrecon.hand_model.mano import HandModel
    from handrecon.io import ensure_writable_dir

    base = args.checkpoint if args.checkpoint is not None else args.predictions.parent
    out = ensure_writable_dir(args.out or base / f"eval_{args.dataset}_{args.split}", "--out")  # before any long work
    mano_dir = args.mano_dir or args.data_root / "mano"
    if not mano_dir.is_dir():
        raise UserError(f"no MANO folder at {mano_dir}; pass --mano-dir with MANO_RIGHT.pkl and MANO_LEFT.pkl")
    hand_model = HandModel(mano_dir)
    spec = dataset_spec(args.dataset)
    reader_name, selection = spec.reader, spec.rules
    options = _reader_options(args)
    reader = create_reader(reader_name, args.data_root, args.split, hand_model, load_images=False, **options)
    gt = load_ground_truth(reader)
    folder = None
    if args.checkpoint is not None:
        args.out = out
        args.predictions, folder = _predict(args, reader_name, hand_model)
    # predictions of the whole split may be scored on its protocol subset
    pred = load_predictions(args.predictions, gt.sample_ids, allow_extra=options.get("subset", "all") != "all")

    result = metrics.evaluate(pred, gt.as_dict(), protocol=args.protocol, dataset=selection, hand_model=hand_model)
    ci = metrics.bootstrap_ci(result, n=args.bootstrap) if args.bootstrap else None
    print(format_table(result.summary, ci))

    provenance = {
        "dataset": args.dataset,
        "data_root": str(args.data_root.resolve()),
        "split": args.split,
        "reader_options": options,
        "protocol": args.protocol,
        "mrrpe_selection": selection,
        "num_samples": len(gt.sample_ids),
        "predictions": str(args.predictions.resolve()),
        "predictions_sha256": file_sha256(args.predictions),
        "checkpoint": None if folder is None else str(folder.resolve()),
        "mano_dir": str(mano_dir.resolve()),
        "bootstrap": args.bootstrap,
        "code_version": code_version(),
    }
    write_metrics_json(out / "metrics.json", result.summary, provenance, ci)
    write_per_sample_csv(out / "per_sample.csv", gt.sample_ids, gt.hand_type, result.per_sample)
    if args.overlays:
        score = result.ranking  # (N,) per-sample error used to rank, NaN where undefined
        order = [i for i in np.argsort(score) if np.isfinite(score[i])]
        k = min(args.overlays, len(order) // 2 or len(order))
        picks = {"best": order[:k], "worst": order[::-1][:k]}
        image_reader = create_reader(reader_name, args.data_root, args.split, hand_model, **options)
        for name, idx in picks.items():
            titles = [f"{gt.sample_ids[i]}: {score[i]:.1f} mm" for i in idx]
            save_overlays(
                out / f"overlays_{name}.png", image_reader, idx, pred["verts"], gt.verts, gt.mesh_valid, titles, hand_model.faces_two_hand
            )
    print(f"wrote {out}/metrics.json, per_sample.csv" + (", overlays_best.png, overlays_worst.png" if args.overlays else ""))
    return 0


if __name__ == "__main__":
    run_tool(main)
