"""The generation ablation: semantic refinement (SE), structural fusion (SF) and the hand-token
bias (AE, at several alphas), each row a ControlNet trained with its components, generating from
the same labels and seeds, each generation scored with `synth.generation_eval`; one table and a
plot of each metric against alpha.

Rows: 'w/o all' (raw captions, no fusion, alpha 0), '+SE' (composed prompts), '+SE+SF' (fusion on),
then '+SE+SF+AE a=<alpha>' at every alpha of `alphas`; `only` runs some of them. A row's toggles
are three generator settings (`synth/settings.py`): prompt_field, structural_fusion, hand_bias.

Retrained (the default, as in the paper). Every row trains its own ControlNet from the `train`
section (`synth.train.GeneratorExperiment`: the same data, seed and `train.max_steps` in every
row) with the row's toggles set in its `generator` section: the training pairs carry the row's
prompts (captions or composed prompts), the ControlNet is built with or without fusion, and the
hand-token bias is in the attention during training at the row's alpha. The row then generates
with its own final ControlNet, whose `controlnet/sesahand_settings.json` holds those settings, so
the generation needs no overrides; `job.base` is the training's base.

Inference-only (`reuse`: one trained ControlNet folder). Nothing is trained: every row generates
with that ControlNet, its toggles set as overrides of the ControlNet's settings (`job.generator`).
The table says so in its mode column and in a line above it.

Either way every other setting (condition style, crop margin, hand-bias targets, sampling) is the
same in every row: the training's `generator` section (retrained) or the reused ControlNet's, or
the job's own override (`job.generator`; the toggles themselves stay null there).

Folders, stable by row name: ``OUT/<row>/train`` (the row's training run), ``OUT/<row>/cache``
(its cache job), ``OUT/<row>/eval`` (its scores), ``OUT/<row>/row.json`` (training and generation
seconds), ``OUT/features`` (the real set's features, shared). An ablation resumes row by row: a
row whose final checkpoint exists is not trained again, a row whose training was interrupted
resumes from its latest checkpoint (exactly, as ``tools/synth_train.py --resume``), and a cache
job generates only its unfinished shards. A row folder trained with another training config is
refused. Scores are computed again on every run (the features are cached). A row's seconds are
those of the run that trained (generated) it; a resumed training's, of the part after its resume
(the table says at which step).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handrecon.config import FieldError, check_fields, config_to_dict, load_config
from handrecon.engine import checkpoint as ckpt
from handrecon.errors import UserError
from handrecon.io import atomic_save_figure, atomic_write_json, atomic_write_text

from .cache import CacheJob, run
from .generation_eval import GenerationEval, evaluate_generation
from .train import GeneratorExperiment, GeneratorTrainer

#: The generator settings a row sets; the other settings are the same in every row.
TOGGLES = ("prompt_field", "structural_fusion", "hand_bias")
RETRAINED, INFERENCE_ONLY = "retrained", "inference-only"
#: A row's record of its training and generation times, in its folder.
ROW_RECORD = "row.json"
PLOT = "metrics_vs_alpha.png"
#: Training keys that do not change the trained weights: a row folder may be resumed with other values.
_RUN_ONLY_KEYS = (("out",), ("train", "device"), ("data", "num_workers"))


@dataclass
class Ablation:
    out: str = "runs/ablation"
    train: GeneratorExperiment = field(default_factory=GeneratorExperiment)  # every row's training (data, seed, train.max_steps, set); a row sets generator.prompt_field / structural_fusion / hand_bias; out: OUT/<row>/train; mano_dir empty: job.mano_dir
    job: CacheJob = field(default_factory=CacheJob)  # labels, plan seed and sampling of every row's generation; controlnet stays null (the row's, or reuse)
    reuse: str | None = None  # a trained ControlNet folder: no training, every row generates with it, its toggles as overrides (inference-only); null: retrain every row
    alphas: list[float] = field(default_factory=lambda: [1.0, 2.0, 2.5])  # AE rows, finite, non-zero (alpha 0 is the +SE+SF row) and distinct
    only: list[str] | None = None  # the rows to run, by name ('w/o all', '+SE', '+SE+SF', '+SE+SF+AE a=2'), table order kept; null: every row
    eval: GenerationEval = field(default_factory=GenerationEval)  # real set, Inception weights, regressor, detector

    def __post_init__(self) -> None:
        check_fields(self, "finite", "alphas")
        for i, alpha in enumerate(self.alphas):
            if alpha == 0:
                raise FieldError(("alphas", i), "non-zero (alpha 0 is the +SE+SF row)", alpha)
            if alpha in self.alphas[:i]:
                raise FieldError(("alphas", i), "distinct (each alpha is one row)", alpha)
        names = [name for name, _ in _all_rows(self.alphas)]
        if self.only is not None:
            if not self.only:
                raise FieldError("only", "at least one row name, or null for every row", self.only)
            for i, name in enumerate(self.only):
                if name not in names:
                    raise FieldError(("only", i), f"a row name ({', '.join(repr(n) for n in names)})", name)
        for key in TOGGLES:
            if getattr(self.job.generator, key) is not None:
                raise FieldError(("job", "generator", key), "null (every row sets it)", getattr(self.job.generator, key))
        if self.job.controlnet is not None:
            raise FieldError(("job", "controlnet"), "null (each row trains its own ControlNet; set reuse to generate every row with one)",
                             self.job.controlnet)  # fmt: skip
        if self.reuse is None:
            if self.train.train.max_steps is None:
                raise FieldError(("train", "train", "max_steps"), "set (rows are compared at equal steps)", None)
            if self.job.base != self.train.model.base:
                raise FieldError(("job", "base"), f"train.model.base ({self.train.model.base!r}): a row generates with the base it was "
                                 "trained on", self.job.base)  # fmt: skip


def _all_rows(alphas: list[float]) -> list[tuple[str, dict[str, Any]]]:
    out = [("w/o all", {"prompt_field": "caption", "structural_fusion": False, "hand_bias": 0.0}),
           ("+SE", {"prompt_field": "prompt", "structural_fusion": False, "hand_bias": 0.0}),
           ("+SE+SF", {"prompt_field": "prompt", "structural_fusion": True, "hand_bias": 0.0})]  # fmt: skip
    out += [(f"+SE+SF+AE a={a:g}", {"prompt_field": "prompt", "structural_fusion": True, "hand_bias": float(a)}) for a in alphas]
    return out


def rows(ablation: Ablation) -> list[tuple[str, dict[str, Any]]]:
    """(row name, its generator settings: prompt_field, structural_fusion, hand_bias) in table
    order; the rows `only` names when set."""
    selected = _all_rows(ablation.alphas)
    return selected if ablation.only is None else [row for row in selected if row[0] in ablation.only]


def mode(ablation: Ablation) -> str:
    return RETRAINED if ablation.reuse is None else INFERENCE_ONLY


def row_folder(ablation: Ablation, name: str) -> Path:
    """The row's folder under `out`: a function of its name only."""
    return Path(ablation.out) / name.replace(" ", "_").replace("+", "p").replace("/", "").replace("=", "")


def train_config(ablation: Ablation, name: str) -> GeneratorExperiment:
    """The training of row `name`: the `train` section with the row's toggles and run folder."""
    toggles = dict(_all_rows(ablation.alphas))[name]
    cfg = copy.deepcopy(ablation.train)
    cfg.out = str(row_folder(ablation, name) / "train")
    cfg.mano_dir = cfg.mano_dir or ablation.job.mano_dir
    cfg.generator = dataclasses.replace(cfg.generator, **toggles)
    return cfg


def final_checkpoint(cfg: GeneratorExperiment) -> Path:
    return ckpt.step_dir(cfg.out, cfg.train.max_steps)


def _weights_config(cfg: GeneratorExperiment) -> dict:
    data = config_to_dict(cfg)
    for path in _RUN_ONLY_KEYS:
        section = data
        for key in path[:-1]:
            section = section[key]
        section.pop(path[-1])
    return data


def _check_same_training(cfg: GeneratorExperiment) -> None:
    """Refuse a row folder whose checkpoints were trained with another config than `cfg`."""
    saved = Path(cfg.out) / "config.yaml"
    if not saved.is_file():
        raise UserError(f"{cfg.out} holds checkpoints but no config.yaml: not a training run of this ablation; use another out")
    old, new = _weights_config(load_config(GeneratorExperiment, saved)), _weights_config(cfg)
    if old != new:
        differ = sorted(_differences(old, new))
        raise UserError(f"{cfg.out} was trained with another training config (it differs in {', '.join(differ[:5])}); use another out")


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def train_row(cfg: GeneratorExperiment, progress: bool = True) -> dict | None:
    """Train the row's ControlNet to `train.max_steps`, resuming from its latest checkpoint when it
    has one; None when its final checkpoint exists (nothing trained), else {seconds, resumed_from}."""
    found = ckpt.list_checkpoints(cfg.out)
    if found:
        _check_same_training(cfg)
    if final_checkpoint(cfg) in found:
        return None
    start = time.perf_counter()
    trainer = GeneratorTrainer(cfg, resume=bool(found), progress=progress)
    resumed_from = trainer.step
    try:
        trainer.fit()
    finally:
        trainer.close()
    return {"seconds": round(time.perf_counter() - start, 1), "resumed_from": resumed_from}


def cache_job(ablation: Ablation, name: str) -> CacheJob:
    """Row `name`'s generation: the `job` section with the row's ControlNet (retrained: its own
    final one, settings and all; inference-only: `reuse` with the row's toggles as overrides)."""
    job = copy.deepcopy(ablation.job)
    job.out = str(row_folder(ablation, name) / "cache")
    if ablation.reuse is None:
        trained = train_config(ablation, name)
        job.base, job.controlnet = trained.model.base, str(final_checkpoint(trained) / "controlnet")
    else:
        job.controlnet = ablation.reuse
        for key, value in dict(_all_rows(ablation.alphas))[name].items():
            setattr(job.generator, key, value)
    return job


def _update_record(path: Path, **values: Any) -> dict:
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update(values)
    atomic_write_json(path, record, indent=1)
    return record


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_ablation(ablation: Ablation, progress: bool = True) -> list[dict]:
    """Train (retrained), generate and score every row; write ablation.md, ablation.json and the
    plot; returns the rows of ablation.json."""
    root = Path(ablation.out)
    how = mode(ablation)
    if ablation.reuse is not None and not (Path(ablation.reuse) / "config.json").is_file():
        raise UserError(f"reuse: {ablation.reuse} is not a ControlNet folder (no config.json); give RUN/checkpoints/step_XXXXXXXX/controlnet")
    results = []
    for name, toggles in rows(ablation):
        folder = row_folder(ablation, name)
        record_path = folder / ROW_RECORD
        folder.mkdir(parents=True, exist_ok=True)
        _update_record(record_path, row=name, mode=how, **toggles)
        if ablation.reuse is None:
            cfg = train_config(ablation, name)
            trained = train_row(cfg, progress)
            if trained is None:
                _note(f"{name}: {final_checkpoint(cfg)} exists, not trained again")
            else:
                _update_record(record_path, train_seconds=trained["seconds"], train_resumed_from=trained["resumed_from"])
                _note(f"{name}: trained {cfg.out} in {trained['seconds']} s" + (f" (resumed at step {trained['resumed_from']})"
                      if trained["resumed_from"] else ""))  # fmt: skip
        job = cache_job(ablation, name)
        start = time.perf_counter()
        summary = run(job, progress=False)
        if summary["generated_by_this_rank"]:
            _update_record(record_path, generate_seconds=round(time.perf_counter() - start, 1))
        else:
            _note(f"{name}: {job.out} is complete, not generated again")
        cfg_eval = copy.deepcopy(ablation.eval)
        cfg_eval.generated, cfg_eval.out, cfg_eval.mano_dir = job.out, str(folder / "eval"), job.mano_dir
        cfg_eval.features = cfg_eval.features or str(root / "features")  # the real set's features are shared by every row
        metrics = evaluate_generation(cfg_eval)["metrics"]
        record = json.loads(record_path.read_text())
        results.append({
            "row": name, "mode": how, "alpha": toggles["hand_bias"], **toggles, "controlnet": job.controlnet,
            "train_seconds": record.get("train_seconds"), "train_resumed_from": record.get("train_resumed_from"),
            "generate_seconds": record.get("generate_seconds"), **metrics,
        })  # fmt: skip
    keys = list(metrics)
    atomic_write_text(root / "ablation.md", _table(ablation, results, keys))
    atomic_write_json(root / "ablation.json", results, indent=1)
    if _plot(results, keys, root / PLOT) is None:
        (root / PLOT).unlink(missing_ok=True)  # a plot of an earlier selection of rows
    return results


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(ablation: Ablation, results: list[dict], keys: list[str]) -> str:
    if ablation.reuse is None:
        t = ablation.train
        head = (f"Retrained: each row trains its own ControlNet ({t.train.max_steps} steps, seed {t.train.seed}, the same data) with "
                "the row's prompts, fusion and alpha, then generates with it from the same labels and seeds.")  # fmt: skip
    else:
        head = (f"Inference-only: every row generates with one ControlNet ({ablation.reuse}), the row's prompts, fusion and alpha set "
                "at generation; nothing is trained (the paper's ablation retrains each row: run without reuse).")  # fmt: skip
    lines = [head, "", "| row | mode | " + " | ".join(keys) + " | training s | generation s |", "|---" * (len(keys) + 4) + "|"]
    for r in results:
        train = _seconds(r["train_seconds"]) + (f" (resumed at step {r['train_resumed_from']})" if r["train_resumed_from"] else "")
        cells = [r["row"], r["mode"], *(f"{r[k]:.4g}" for k in keys), train, _seconds(r["generate_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(results: list[dict], keys: list[str], path: Path) -> Path | None:
    """Each metric against alpha over the +SE+SF rows (alpha 0 and the AE rows); None without them."""
    fused = [r for r in results if r["row"].startswith("+SE+SF")]
    if not fused:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot([r["alpha"] for r in fused], [r[key] for r in fused], marker="o")
        ax.set_xlabel("alpha")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return atomic_save_figure(path, fig, dpi=100)
