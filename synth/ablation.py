"""The generation ablation: semantic refinement (SE), structural fusion (SF) and the hand-token
bias (AE, at several alphas) toggled over the same labels and seeds, each generation scored with
`synth.generation_eval`; one table and a plot of each metric against alpha.

Rows: 'w/o all' (raw captions, no fusion, alpha 0), '+SE' (composed prompts), '+SE+SF' (fusion on),
then '+SE+SF+AE' at every non-zero alpha. Each row is a cache job (`synth.cache`) in its own
folder, so an interrupted ablation resumes and finished rows are not generated again. A row sets
its toggles as explicit overrides of the ControlNet's generator settings (`job.generator`:
prompt_field, structural_fusion, hand_bias); every other setting (condition style, crop margin,
hand-bias targets, sampling) is the ControlNet's, or the job's own override, in every row.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from handrecon.config import FieldError, check_fields
from handrecon.io import atomic_save_figure, atomic_write_text

from .cache import CacheJob, run
from .generation_eval import GenerationEval, evaluate_generation


@dataclass
class Ablation:
    out: str = "runs/ablation"
    job: CacheJob = field(default_factory=CacheJob)  # labels, generator and sampling settings shared by every row
    alphas: list[float] = field(default_factory=lambda: [1.0, 2.0, 2.5])  # AE rows, finite and non-zero (alpha 0 is the +SE+SF row)
    eval: GenerationEval = field(default_factory=GenerationEval)  # real set, Inception weights, regressor, detector

    def __post_init__(self) -> None:
        check_fields(self, "finite", "alphas")
        if 0 in self.alphas:
            raise FieldError(("alphas", self.alphas.index(0)), "non-zero (alpha 0 is the +SE+SF row)", 0.0)


def rows(ablation: Ablation) -> list[tuple[str, dict]]:
    """(row name, generator setting overrides) in table order."""
    out = [("w/o all", {"prompt_field": "caption", "structural_fusion": False, "hand_bias": 0.0}),
           ("+SE", {"prompt_field": "prompt", "structural_fusion": False, "hand_bias": 0.0}),
           ("+SE+SF", {"prompt_field": "prompt", "structural_fusion": True, "hand_bias": 0.0})]  # fmt: skip
    out += [(f"+SE+SF+AE a={a:g}", {"prompt_field": "prompt", "structural_fusion": True, "hand_bias": float(a)}) for a in ablation.alphas]
    return out


def run_ablation(ablation: Ablation) -> list[dict]:
    root = Path(ablation.out)
    results = []
    for name, overrides in rows(ablation):
        folder = root / name.replace(" ", "_").replace("+", "p").replace("/", "").replace("=", "")
        job = copy.deepcopy(ablation.job)
        job.out = str(folder / "cache")
        for key, value in overrides.items():
            setattr(job.generator, key, value)
        start = time.perf_counter()
        run(job, progress=False)
        generated = time.perf_counter() - start
        cfg = copy.deepcopy(ablation.eval)
        cfg.generated, cfg.out, cfg.mano_dir = job.out, str(folder / "eval"), job.mano_dir
        cfg.features = cfg.features or str(root / "features")  # the real set's features are shared by every row
        metrics = evaluate_generation(cfg)["metrics"]
        results.append({"row": name, "alpha": job.generator.hand_bias, "seconds": round(generated, 1), **metrics})
    keys = [k for k in results[0] if k not in ("row", "alpha", "seconds")]
    table = ["| row | " + " | ".join(keys) + " | generation s |", "|---" * (len(keys) + 2) + "|"]
    table += [f"| {r['row']} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + f" | {r['seconds']} |" for r in results]
    atomic_write_text(root / "ablation.md", "\n".join(table) + "\n")
    atomic_write_text(root / "ablation.json", json.dumps(results, indent=1))
    _plot(results, keys, root / "metrics_vs_alpha.png")
    return results


def _plot(results: list[dict], keys: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fused = [r for r in results if r["row"].startswith("+SE+SF")]  # alpha 0 and the AE rows
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot([r["alpha"] for r in fused], [r[key] for r in fused], marker="o")
        ax.set_xlabel("alpha")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return atomic_save_figure(path, fig, dpi=100)
