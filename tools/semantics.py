#!/usr/bin/env python
"""Write human-behaviour prompts (caption -> components -> prompt) for a dataset split; resumable."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from handrecon.cli import add_config_args, config_from_args, run_tool
from handrecon.config import check_fields, save_config
from handrecon.errors import UserError
from synth.semantics.chain import SemanticsChain, SemanticsConfig


@dataclass
class SemanticsRun:
    dataset: str = "procedural"  # ih26m | procedural | reih | hic | mscoco
    data_root: str = ""
    split: str = "train"
    options: dict[str, Any] = field(default_factory=dict)  # reader options, as a data source's: mscoco crop: hand for the generator's hand crops
    mano_dir: str = ""  # default: DATA_ROOT/mano (as make_procedural writes it)
    out: str = "runs/prompts"  # the cache folder; the file is <dataset>_<split>_<hash>.jsonl
    limit: int | None = None  # the first N (>= 1) samples only; null: all
    batch: int = 16  # samples per chain call (and per durable write); >= 1
    semantics: SemanticsConfig = field(default_factory=SemanticsConfig)

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "limit", "batch")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    add_config_args(parser, example="data_root=data/procedural limit=100")
    args = parser.parse_args(argv)
    cfg = config_from_args(SemanticsRun, args, out_key="out")

    from handrecon.data.readers import create_reader, dataset_spec
    from handrecon.hand_model.mano import HandModel
    from synth.semantics.cache import PromptCache, cache_key

    spec = dataset_spec(cfg.dataset)  # an unknown name is an error listing the known ones
    if not cfg.data_root:
        raise UserError("set data_root (the dataset folder)")
    mano_dir = Path(cfg.mano_dir or Path(cfg.data_root) / "mano")
    hand_model = HandModel(mano_dir)
    chain = SemanticsChain(cfg.semantics, hand_model)
    reader = create_reader(spec.reader, cfg.data_root, cfg.split, hand_model, load_images=chain.needs_images, **cfg.options)
    key = cache_key(cfg.semantics)
    path = Path(cfg.out) / f"{cfg.dataset}_{cfg.split}_{key}.jsonl"
    save_config(cfg.semantics, path.with_suffix(".yaml"))
    cache = PromptCache(path)

    total = len(reader) if cfg.limit is None else min(cfg.limit, len(reader))
    todo = [i for i in range(total) if str(reader.get_meta(i)["sample_id"]) not in cache]
    start, made = time.perf_counter(), 0
    with tqdm(total=total, initial=total - len(todo), desc="prompts", unit="sample") as bar:
        for k in range(0, len(todo), cfg.batch):
            samples = [{**reader[i], "source": cfg.dataset} for i in todo[k : k + cfg.batch]]  # the environment follows the dataset
            cache.append(chain(samples))
            made += len(samples)
            bar.update(len(samples))
    rate = made / max(time.perf_counter() - start, 1e-9)
    print(f"{path}: {len(cache)} records ({made} new, {rate:.1f} prompts/s)")
    return 0


if __name__ == "__main__":
    run_tool(main)
