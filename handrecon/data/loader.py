"""The data section of an experiment: which sources, mixed at which ratios, into which loader.

    data:
      sources:                              # any number of named sources
        ih26m: {kind: ih26m, root: datasets/InterHand2.6M, split: train}
        reih:  {kind: reih, root: datasets/ReInterHand, split: train}
        synth: {kind: shards, root: runs/cache}
      ratios: {ih26m: 0.5, reih: 0.2, synth: 0.3}   # shares of each batch, summing to 1
      batch_size: 32                        # per rank
      epoch_source: ih26m                   # one epoch = one pass over this source

Each entry of `sources` is one source (`kind`: a reader name, or `shards` for a cache folder);
`ratios` names every source with its share of each batch (each in [0, 1], summing to 1, the epoch
source's > 0); a set that does not sum to 1 is refused with its normalised form as the
suggestion, so a typo never changes the mix. `--set data.sources.NAME.root=...` adds or changes
one source, `--set data.sources.NAME=null` drops one. `build_mixed_loader` returns a DataLoader
whose batches hold exactly each source's quota (MixedBatchSampler) and whose samples carry their
source's name in `source`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from ..config import FieldError, check_fields
from ..errors import UserError
from ..hand_model.mano import HandModel
from .collate import collate_samples
from .mixing import ConcatSources, Draw, MixedBatchSampler

#: The keys of the fixed-slot form of the data section, refused with the named form as the fix.
OLD_SOURCE_KEYS = ("real", "synth")


@dataclass
class SourceConfig:
    kind: str = "ih26m"  # a reader name (ih26m, reih, hic, ...), 'shards' (a cache folder) or 'live' (generation during training)
    root: str = ""  # the dataset or cache folder; live: a generator training run (its newest ControlNet and settings) or empty
    split: str = "train"
    options: dict[str, Any] = field(default_factory=dict)  # reader options (ih26m subset, mscoco crop / mano_fits, ...); live: its job and queue


#: Source kinds built by other packages: kind -> build(cfg, hand_model, name) (`live`: synth.live).
_SOURCE_KINDS: dict[str, Callable[[SourceConfig, HandModel, str], torch.utils.data.Dataset]] = {}
#: Where the kinds other packages register come from, for the message when none is registered.
_SOURCE_KIND_MODULES = {"live": "synth.live"}


def register_source_kind(kind: str, build: Callable[[SourceConfig, HandModel, str], torch.utils.data.Dataset]) -> None:
    """Make `kind` a source kind of data.sources entries (the generation side registers 'live')."""
    _SOURCE_KINDS[kind] = build


@dataclass
class DataConfig:
    sources: dict[str, SourceConfig] = field(default_factory=lambda: {"real": SourceConfig()})  # name -> source
    ratios: dict[str, float] = field(default_factory=lambda: {"real": 1.0})  # batch shares in [0, 1], summing to 1, by source name
    batch_size: int = 32  # per rank; >= 1
    epoch_source: str | None = None  # one epoch = one pass over this source (ratio > 0; null: the first such source) ...
    steps_per_epoch: int | None = None  # ... or exactly this many steps (>= 1; then epoch_source stays null)
    num_workers: int = 2  # >= 0; 0: load in the main process
    seed: int = 0  # >= 0

    #: keys of the fixed-slot form, answered with the named form (see handrecon.config)
    __moved_keys__: ClassVar[dict[str, str]] = {
        name: f"sources are named entries now: write data.sources: {{{name}: {{kind: ..., root: ..., split: ...}}}} "
        f"(--set data.sources.{name}.root=...)"
        for name in OLD_SOURCE_KEYS
    }

    def __post_init__(self) -> None:
        if not self.sources:
            raise FieldError("sources", "a mapping with at least one named source", self.sources)
        unknown, missing = [k for k in self.ratios if k not in self.sources], [k for k in self.sources if k not in self.ratios]
        if unknown or missing:
            raise FieldError("ratios", f"a share for each source in data.sources {sorted(self.sources)}", self.ratios)
        check_fields(self, "in [0, 1]", "ratios")
        total = sum(self.ratios.values())
        if abs(total - 1) > 1e-6:
            hint = f"; normalised: {({k: round(v / total, 6) for k, v in self.ratios.items()})}" if total > 0 else ""
            raise FieldError("ratios", f"shares summing to 1 (they sum to {total:g}{hint})", self.ratios)
        if self.epoch_source is not None and self.steps_per_epoch is not None:
            raise ValueError("set one of data.epoch_source and data.steps_per_epoch, not both")
        if self.epoch_source is not None and not self.ratios.get(self.epoch_source, 0) > 0:
            raise FieldError("epoch_source", "a source with a ratio > 0 (an epoch over it would never end)", self.epoch_source)
        check_fields(self, ">= 1", "batch_size", "steps_per_epoch")
        check_fields(self, ">= 0", "num_workers", "seed")


    def epoch_source_name(self) -> str | None:
        """The source one epoch passes over: `epoch_source`, or the first source with a share
        when neither it nor `steps_per_epoch` is set; None with `steps_per_epoch`."""
        if self.epoch_source is not None or self.steps_per_epoch is not None:
            return self.epoch_source
        return next(name for name in self.sources if self.ratios[name] > 0)


def build_source(
    cfg: SourceConfig, hand_model: HandModel, load_images: bool = True, name: str | None = None, labels: str = "full"
) -> torch.utils.data.Dataset:
    """A reader (by registry name) or a ShardSource, for one source section (`name`: its key in
    data.sources, for the messages); `labels` as theirs ("mano": MANO-derived labels left to
    `handrecon.data.labels.labels_from_mano`; a live source's samples come complete)."""
    where = f"data.sources.{name}" if name else f"source of kind '{cfg.kind}'"
    if cfg.kind in _SOURCE_KIND_MODULES:
        if cfg.kind not in _SOURCE_KINDS:
            raise UserError(f"{where}: kind '{cfg.kind}' is provided by {_SOURCE_KIND_MODULES[cfg.kind]}: import it first (tools/train.py does)")
        return _SOURCE_KINDS[cfg.kind](cfg, hand_model, name or cfg.kind)
    if cfg.kind == "shards" and cfg.options:
        raise UserError(f"{where}.options: kind 'shards' takes no options, got {sorted(cfg.options)}")
    if "labels" in cfg.options:
        raise UserError(f"{where}.options: 'labels' is chosen by the job that reads the source (training: 'mano'), not by its options")
    if not cfg.root:
        raise UserError(f"{where} has no root folder: set its 'root'")
    if cfg.kind == "shards":
        from .shards import ShardSource

        return ShardSource(cfg.root, hand_model, load_images=load_images, labels=labels)
    from .readers import create_reader

    try:
        return create_reader(cfg.kind, cfg.root, cfg.split, hand_model, load_images=load_images, labels=labels, **cfg.options)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from exc


class MappedDataset(torch.utils.data.Dataset):
    """Applies `fn(sample, index, repeat)` to every sample (augmentation, cropping to the model
    input). Keys are global indices (repeat 0) or :class:`~handrecon.data.mixing.Draw` items."""

    def __init__(self, dataset: torch.utils.data.Dataset, fn: Callable[[dict, int, int], dict]):
        self.dataset, self.fn = dataset, fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | Draw) -> dict:
        index, repeat = key if isinstance(key, Draw) else (key, 0)
        return self.fn(self.dataset[index], index, repeat)


def build_mixed_loader(
    cfg: DataConfig,
    hand_model: HandModel,
    rank: int = 0,
    world_size: int = 1,
    transform: Callable[[dict, int, int], dict] | None = None,
    labels: str = "full",
) -> tuple[torch.utils.data.DataLoader, MixedBatchSampler, ConcatSources]:
    """DataLoader over the configured sources with exact per-batch ratios.

    `transform(sample, global_index, repeat)` runs in the workers (it must give every image the
    same size so batches collate); `repeat` counts earlier draws of the sample in this epoch, so
    a sample that a small source serves several times per epoch can be augmented differently
    each time. `labels="mano"` builds the sources so that the workers run no MANO: pass each
    batch through `handrecon.data.labels.labels_from_mano` on the training device. Call
    `sampler.set_epoch(e)` before each epoch.
    """
    sources = ConcatSources({name: build_source(source, hand_model, name=name, labels=labels) for name, source in cfg.sources.items()})
    for dataset in sources.datasets.values():
        if hasattr(dataset, "start"):  # a live source: its generator process, before the workers copy it
            dataset.start()
    sampler = MixedBatchSampler(
        sources.sizes,
        cfg.ratios,
        cfg.batch_size,
        cfg.seed,
        rank=rank,
        world_size=world_size,
        epoch_source=cfg.epoch_source_name(),
        steps_per_epoch=cfg.steps_per_epoch,
        draws=transform is not None,
    )
    dataset = MappedDataset(sources, transform) if transform is not None else sources
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=cfg.num_workers, persistent_workers=False, pin_memory=torch.cuda.is_available(),
        collate_fn=collate_samples,
    )  # fmt: skip
    return loader, sampler, sources
