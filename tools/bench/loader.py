#!/usr/bin/env python
"""Benchmark the training loader (real + shards, mixed) against decoding the same images alone.

Both loaders read the same batches (one MixedBatchSampler) in the same process, alternately, so
load from other processes affects both alike; each rate is the median of --repeats epochs, worker
start-up excluded. The mixed loader is the trainer's: sources built with labels="mano", so the
workers run no MANO. The trainer then passes each batch through labels_from_mano on its device;
the last columns add that step, run here in this process on the CPU (on a GPU it costs about a
millisecond per batch), so they bound what a CPU-only run gets.
"""
from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from handrecon.cli import run_tool
from handrecon.data.labels import labels_from_mano
from handrecon.data.loader import DataConfig, SourceConfig, build_mixed_loader
from handrecon.data.procedural import ProceduralConfig, generate
from handrecon.data.readers import create_reader
from handrecon.data.shards import ShardSource, build_index, encode_image, labels_from_sample, write_shard
from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano


class DecodeOnly(torch.utils.data.Dataset):
    """The same images as the mixed loader, decoded and nothing else (the upper bound)."""

    def __init__(self, real, shards: ShardSource):
        self.real, self.shards = real, shards

    def __len__(self) -> int:
        return len(self.real) + len(self.shards)

    def __getitem__(self, i: int) -> torch.Tensor:
        if i < len(self.real):
            data = open(self.real.get_meta(i)["image_path"], "rb").read()
        else:
            data = self.shards.read_member(i - len(self.real), "jpg")
        return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB")))


def _rate(loader, step=lambda batch: batch) -> float:
    """Samples per second over one pass, after the first batch (worker start-up is not throughput)."""
    it = iter(loader)
    step(next(it))
    start, n = time.perf_counter(), 0
    for batch in it:
        batch = step(batch)
        n += len(batch["image"]) if isinstance(batch, dict) else len(batch)
    return n / (time.perf_counter() - start)


def _make_data(root: Path, num: int, size: int) -> HandModel:
    write_standin_mano(root / "mano")
    hand_model = HandModel(root / "mano")
    proc = ProceduralConfig(image_size=(size, size), split_fractions=(1.0, 0.0, 0.0))
    generate(hand_model, proc, root / "real", num, seed=0, progress=False)
    generate(hand_model, proc, root / "synth_src", num // 2, seed=1, progress=False)
    src = create_reader("ih26m", root / "synth_src", "train", hand_model)
    samples = [src[i] for i in range(len(src))]
    for k in range(0, len(samples), 32):
        write_shard(
            root / "shards" / f"shard-{k // 32:06d}.tar",
            [(f"s{int(s['sample_id']):06d}", encode_image(s["image"], "JPEG"), encode_image(s["image"][..., 0], "PNG"), labels_from_sample(s)) for s in samples[k : k + 32]],
        )
    build_index(root / "shards")
    return hand_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--num", type=int, default=256, help="real images (synthetic: half as many)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="epochs measured per loader and worker count (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process (workers use 1); more spin against decoding on few cores")
    parser.add_argument("--data", default=None, help="reuse (or create) the benchmark data in this folder instead of a temporary one")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.data) if args.data else Path(tempfile.mkdtemp())
    hand_model = HandModel(root / "mano") if (root / "shards" / "index.json").is_file() else _make_data(root, args.num, args.size)

    cfg = DataConfig(
        sources={"real": SourceConfig("ih26m", str(root / "real")), "synth": SourceConfig("shards", str(root / "shards"))},
        ratios={"real": 0.7, "synth": 0.3},
        batch_size=args.batch,
    )
    real = create_reader("ih26m", root / "real", "train", hand_model)
    print(f"{len(real)} real + {len(ShardSource(root / 'shards', hand_model))} shard images at {args.size}x{args.size}, batch {args.batch}, "
          f"ratios 0.7/0.3, torch threads {args.threads}, median of {args.repeats}")  # fmt: skip
    print(f"{'workers':>7}  {'decode-only':>12}  {'mixed':>12}  {'ratio':>6}  {'mixed + labels step on CPU':>27}  {'ratio':>6}")
    for workers in args.workers:
        cfg.num_workers = workers
        loader, sampler, _ = build_mixed_loader(cfg, hand_model, labels="mano")
        decode = torch.utils.data.DataLoader(DecodeOnly(real, ShardSource(root / "shards", hand_model)), batch_sampler=sampler, num_workers=workers)
        rates: dict[str, list[float]] = {"decode": [], "mixed": [], "step": []}
        for _ in range(args.repeats):
            rates["decode"].append(_rate(decode))
            rates["mixed"].append(_rate(loader))
            rates["step"].append(_rate(loader, lambda batch: labels_from_mano(batch, hand_model)))
        bound, mixed, step = (statistics.median(rates[k]) for k in ("decode", "mixed", "step"))
        print(f"{workers:>7}  {bound:>10.1f}/s  {mixed:>10.1f}/s  {mixed / bound:>5.2f}x  {step:>25.1f}/s  {step / bound:>5.2f}x")
    return 0


if __name__ == "__main__":
    run_tool(main)
