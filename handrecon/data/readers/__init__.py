"""Readers of real hand datasets in their release formats, behind a registry.

    reader = create_reader("ih26m", root, "test", hand_model, subset="human_annot")
    sample = reader[0]  # the sample dict of handrecon.data.sample: metres, camera frame

Built-in readers: 'ih26m' (InterHand2.6M, also the procedural stand-in written in its format),
'reih' (Re:InterHand), 'hic' (HIC), 'mscoco' (MSCOCO-WholeBody: 2D hands, optional MANO fits).
Their modules are imported on first use, not at import time.
New readers register themselves with `@register_reader("name")`.

Datasets. A dataset name (what `tools/eval.py --dataset`, `val.dataset` and sweeps take) is
declared once, by its reader's module, with `register_dataset`: the reader that reads it, the
metric rules of its protocol (a key of `handrecon.metrics.DATASET_RULES`; a new dataset with
rules of its own registers them with `register_dataset_rules` in the same module), the reader
options of its test protocol, and its card under `datasets/`. A new dataset is one module plus
its card.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from ...errors import UserError

T = TypeVar("T", bound=type)

# reader name -> module (relative to this package) that registers it when imported
_BUILTIN_MODULES = {"ih26m": ".interhand", "reih": ".reinterhand", "hic": ".hic", "mscoco": ".mscoco"}
_REGISTRY: dict[str, type] = {}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    reader: str  # the registered reader that reads it
    rules: str  # its protocol's metric rules: a key of handrecon.metrics.DATASET_RULES
    card: str  # its dataset card, relative to the repository: datasets/<name>.md
    protocol_options: dict[str, Any] = field(default_factory=dict)  # reader options of its test protocol


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, reader: str, rules: str, card: str, **protocol_options: Any) -> DatasetSpec:
    """Declare the dataset `name` (see the module docstring); call it from the reader's module."""
    spec = DatasetSpec(name, reader, rules, card, dict(protocol_options))
    if name in _DATASETS and _DATASETS[name] != spec:
        raise ValueError(f"a dataset named {name!r} is already registered ({_DATASETS[name]})")
    _DATASETS[name] = spec
    return spec


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    _load_builtins()
    return sorted(_DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec registered under `name`; a UserError lists the known names otherwise."""
    return _lookup(_DATASETS, "dataset", name)


def register_reader(name: str) -> Callable[[T], T]:
    """Class decorator: make the reader class available as `create_reader(name, ...)`."""

    def decorate(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a reader named {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES.values():
        importlib.import_module(module, __name__)


def _lookup(registry: dict[str, Any], what: str, name: str) -> Any:
    """`registry[name]` once the built-in modules have registered; a UserError lists the names."""
    _load_builtins()
    if name not in registry:
        raise UserError(f"unknown {what} {name!r}; choose one of: {', '.join(sorted(registry))}")
    return registry[name]


def list_readers() -> list[str]:
    """Names of all registered readers, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_reader_class(name: str) -> type:
    """The class registered under `name`; a UserError lists the known names otherwise."""
    return _lookup(_REGISTRY, "dataset reader", name)


def create_reader(name: str, root: str | Path, split: str, hand_model, **kwargs):
    """Build the reader `name` as `Reader(root, split, hand_model, **kwargs)`.

    Common keyword: load_images (default True). Reader-specific options (e.g. subset for 'ih26m',
    on_missing for 'reih') are checked here, so a misspelt option is a UserError naming the valid ones.
    """
    cls = get_reader_class(name)
    params = inspect.signature(cls.__init__).parameters
    options = [p for p in params if p not in ("self", "root", "split", "hand_model")]
    unknown = [k for k in kwargs if k not in options]
    if unknown:
        raise UserError(f"dataset reader {name!r} has no option {unknown[0]!r}; valid options: {', '.join(options)}")
    return cls(root, split, hand_model, **kwargs)


__all__ = [
    "DatasetSpec",
    "create_reader",
    "dataset_spec",
    "get_reader_class",
    "list_datasets",
    "list_readers",
    "register_dataset",
    "register_reader",
]
