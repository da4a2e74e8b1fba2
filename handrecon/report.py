"""What every scoring run reports, hand meshes (tools/eval.py, sweeps) and generated images
(`synth.generation_eval`) alike: a plain-text metrics table, metrics.json with provenance, and
the code version that provenance records."""
from __future__ import annotations

import subprocess
from pathlib import Path

from .io import atomic_write_json


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("sesahand")
    except PackageNotFoundError:
        ver = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{ver}+{commit}" if commit else ver


def format_table(summary: dict[str, float], ci: dict[str, tuple[float, float]] | None = None) -> str:
    """A plain-text table: metric, value, optional 95% interval."""
    width = max(len(k) for k in summary)
    lines = [f"{'metric':<{width}}  {'value':>9}" + ("  95% CI" if ci else "")]
    for key, value in summary.items():
        line = f"{key:<{width}}  {value:>9.3f}"
        if ci and key in ci:
            lo, hi = ci[key]
            line += f"  [{lo:.3f}, {hi:.3f}]"
        lines.append(line)
    return "\n".join(lines)


def write_metrics_json(path: Path, summary: dict, provenance: dict, ci: dict | None = None) -> Path:
    payload = {"metrics": summary, "provenance": provenance}
    if ci:
        payload["ci95"] = {k: list(v) for k, v in ci.items()}
    return atomic_write_json(path, payload, indent=1)
