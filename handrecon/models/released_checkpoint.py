"""The original authors' released checkpoints in our networks: InterWild's `snapshot_N.pth`
(facebookresearch/InterWild) in `InterWildNet`, DIR's checkpoint (PengfeiRen96/DIR, as its
train.py saves and apps/eval.py loads it) in `DIRNet`.

A network class names its format in `released_format` (`ReleasedFormat`): the key of the state
dict inside the file (InterWild ``{'network', 'epoch', 'optimizer'}``, DIR ``{'net', 'optimizer',
'schedule', ...}``), with a ``module.`` prefix (a `DataParallel` model) stripped where present.
Past that the parameter names are ours (both networks keep the original module names). What the
files hold besides the network's parameters is skipped and counted as `ignored`: the buffers of
their MANO layers (MANO's licensed arrays, which our models never store: the hand model supplies
them) and, for DIR, buffers our network computes from its config (the bone-projection grids, the
segmentation class weights).
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError, refused_pickle_reason

PREFIX = "module."


@dataclass(frozen=True)
class ReleasedFormat:
    label: str  # e.g. "InterWild snapshot", in messages
    model: str  # the registered model of the original's sizes
    state_key: str  # the key of the network's state dict in the file
    ignored: str  # regex (re.search) of the keys skipped: buffers the network does not store
    ignored_note: str  # what those are, in the key report


def _a(label: str) -> str:
    return ("an " if label[0] in "AEIOU" else "a ") + label


def is_snapshot_file(path: str | Path) -> bool:
    """A torch pickle (the released files are .pth) rather than our .safetensors weights."""
    path = Path(path)
    return path.is_file() and path.suffix != ".safetensors"


def _format_of(model: nn.Module) -> ReleasedFormat:
    fmt = getattr(type(model), "released_format", None)
    if fmt is None:
        raise UserError(f"{type(model).__name__} has no released checkpoint format: give it our .safetensors weights")
    return fmt


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path}: refused to load: it holds objects other than tensors and plain values ({refused_pickle_reason(exc)})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]})") from exc


def detect_format(path: str | Path) -> ReleasedFormat:
    """Which original's file `path` is, from the key its network's state dict is stored under."""
    data = _load(Path(path))
    for fmt in _FORMATS:
        if isinstance(data, dict) and isinstance(data.get(fmt.state_key), dict):
            return fmt
    keys = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
    raise UserError(f"{path}: neither {' nor '.join(_a(f.label) for f in _FORMATS)} (found {keys})")


def read_snapshot(path: str | Path, fmt: ReleasedFormat) -> dict[str, torch.Tensor]:
    """The network state of a released file, loaded with `weights_only=True`, `module.` stripped
    (the skipped buffers still in)."""
    path = Path(path)
    data = _load(path)
    if not isinstance(data, dict) or not isinstance(data.get(fmt.state_key), dict):
        keys = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
        others = [f.label for f in _FORMATS if f is not fmt and isinstance(data, dict) and isinstance(data.get(f.state_key), dict)]
        hint = f"; it looks like {_a(others[0])}: load it into that architecture" if others else ""
        raise UserError(f"{path}: not {_a(fmt.label)} (expected a dict with '{fmt.state_key}'; found {keys}){hint}")
    return {(k[len(PREFIX) :] if k.startswith(PREFIX) else k): v for k, v in data[fmt.state_key].items()}


def snapshot_report(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """{'matched', 'missing', 'unexpected', 'mismatched' (shape), 'ignored'} key lists."""
    skip = re.compile(_format_of(model).ignored)
    own = model.state_dict()
    ignored = sorted(k for k in state if skip.search(k))
    theirs = {k: v for k, v in state.items() if not skip.search(k)}
    common = sorted(set(own) & set(theirs))
    mismatched = [k for k in common if own[k].shape != theirs[k].shape]
    return {
        "matched": [k for k in common if k not in mismatched],
        "missing": sorted(set(own) - set(theirs)),
        "unexpected": sorted(set(theirs) - set(own)),
        "mismatched": mismatched,
        "ignored": ignored,
    }


def format_report(report: dict[str, list[str]], fmt: ReleasedFormat) -> str:
    counts = ", ".join(f"{len(v)} {k}" for k, v in report.items())
    return f"{counts} (ignored: {fmt.ignored_note})"


def load_snapshot(model: nn.Module, path: str | Path, verbose: bool = True) -> dict[str, list[str]]:
    """Load a released checkpoint into `model` (of the original's sizes); prints the key report.
    A file of another architecture is refused, naming a few mismatched keys."""
    fmt = _format_of(model)
    state = read_snapshot(path, fmt)
    report = snapshot_report(model, state)
    bad = {k: v for k, v in report.items() if k in ("missing", "unexpected", "mismatched") and v}
    if bad:
        own = model.state_dict()
        shapes = [f"{k} {tuple(state[k].shape)} vs ours {tuple(own[k].shape)}" for k in report["mismatched"][:3]]
        detail = "; ".join(f"{len(v)} {k}: {shapes if k == 'mismatched' else v[:3]}" for k, v in bad.items())
        raise UserError(f"{path}: not the architecture of this {type(model).__name__} ({detail})")
    model.load_state_dict({k: state[k] for k in report["matched"]}, strict=True)
    if verbose:
        print(f"{path}: {fmt.label} keys: {format_report(report, fmt)}")
    return report


INTERWILD = ReleasedFormat(
    "InterWild snapshot", "interwild", "network", r"^mano_layer_(right|left)\.", "InterWild's MANO layer buffers"
)
DIR = ReleasedFormat(
    "DIR checkpoint",
    "dir",
    "net",
    r"(^|\.)mano_layer_(right|left)\.|\.img_gird$|^seg_loss\.weight$",
    "DIR's MANO layer buffers, bone-projection grids and segmentation class weights",
)
_FORMATS = (INTERWILD, DIR)
