"""InterWild's released checkpoints (`snapshot_N.pth` of facebookresearch/InterWild) in
`InterWildNet`.

A snapshot is ``{'network': state_dict, 'epoch': int, 'optimizer': state_dict}``, saved from a
`DataParallel` model, so every key starts with ``module.``. Past that prefix the names are ours
(`InterWildNet` keeps InterWild's module names), except what `KEY_MAP` lists. The snapshot also
holds the buffers of its two smplx MANO layers (``mano_layer_right.*``, ``mano_layer_left.*``):
MANO's licensed arrays, which our models never store (the hand model supplies them); those are
skipped and counted as `ignored`.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError, refused_pickle_reason

PREFIX = "module."
KEY_MAP: dict[str, str] = {}  # InterWild name (without PREFIX) -> ours, where they differ: none
IGNORED_PREFIXES = ("mano_layer_right.", "mano_layer_left.")  # the snapshot's MANO layer buffers


def is_snapshot_file(path: str | Path) -> bool:
    """A torch pickle (an InterWild snapshot is a .pth) rather than our .safetensors weights."""
    path = Path(path)
    return path.is_file() and path.suffix != ".safetensors"


def read_snapshot(path: str | Path) -> dict[str, torch.Tensor]:
    """The network state of a snapshot, loaded with `weights_only=True`, `module.` stripped and
    `KEY_MAP` applied (the MANO buffers still in)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path}: refused to load: it holds objects other than tensors and plain values ({refused_pickle_reason(exc)})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("network"), dict):
        keys = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: not an InterWild snapshot (expected a dict with 'network', 'epoch', 'optimizer'; found {keys})")
    state = {}
    for key, value in data["network"].items():
        key = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        state[KEY_MAP.get(key, key)] = value
    return state


def snapshot_report(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """{'matched', 'missing', 'unexpected', 'mismatched' (shape), 'ignored'} key lists."""
    own = model.state_dict()
    ignored = sorted(k for k in state if k.startswith(IGNORED_PREFIXES))
    theirs = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    common = sorted(set(own) & set(theirs))
    mismatched = [k for k in common if own[k].shape != theirs[k].shape]
    return {
        "matched": [k for k in common if k not in mismatched],
        "missing": sorted(set(own) - set(theirs)),
        "unexpected": sorted(set(theirs) - set(own)),
        "mismatched": mismatched,
        "ignored": ignored,
    }


def format_report(report: dict[str, list[str]]) -> str:
    counts = ", ".join(f"{len(v)} {k}" for k, v in report.items())
    return counts + " (ignored: InterWild's MANO layer buffers)"


def load_snapshot(model: nn.Module, path: str | Path, verbose: bool = True) -> dict[str, list[str]]:
    """Load an InterWild snapshot into `model` (an `interwild` of InterWild's sizes); prints the
    key report. A file of another architecture is refused, naming a few mismatched keys."""
    state = read_snapshot(path)
    report = snapshot_report(model, state)
    bad = {k: v for k, v in report.items() if k in ("missing", "unexpected", "mismatched") and v}
    if bad:
        own = model.state_dict()
        shapes = [f"{k} {tuple(state[k].shape)} vs ours {tuple(own[k].shape)}" for k in report["mismatched"][:3]]
        detail = "; ".join(f"{len(v)} {k}: {shapes if k == 'mismatched' else v[:3]}" for k, v in bad.items())
        raise UserError(f"{path}: not the architecture of this {type(model).__name__} ({detail})")
    model.load_state_dict({k: state[k] for k in report["matched"]}, strict=True)
    if verbose:
        print(f"{path}: InterWild snapshot keys: {format_report(report)}")
    return report
