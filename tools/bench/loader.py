#!/usr/bin/env python
"""Benchmark the mixed loader (real + shards) against decoding the same images alone."""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from handrecon.cli import run_tool
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


def _rate(loader, batches: int) -> float:
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            break
        n += len(batch["image"]) if isinstance(batch, dict) else len(batch)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--num", type=int, default=256, help="real images (synthetic: half as many)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp())
    write_standin_mano(root / "mano")
    hand_model = HandModel(root / "mano")
    proc = ProceduralConfig(image_size=(args.size, args.size), split_fractions=(1.0, 0.0, 0.0))
    generate(hand_model, proc, root / "real", args.num, seed=0, progress=False)
    generate(hand_model, proc, root / "synth_src", args.num // 2, seed=1, progress=False)
    src = create_reader("ih26m", root / "synth_src", "train", hand_model)
    samples = [src[i] for i in range(len(src))]
    for k in range(0, len(samples), 32):
        write_shard(
            root / "shards" / f"shard-{k // 32:06d}.tar",
            [(f"s{int(s['sample_id']):06d}", encode_image(s["image"], "JPEG"), encode_image(s["image"][..., 0], "PNG"), labels_from_sample(s)) for s in samples[k : k + 32]],
        )
    build_index(root / "shards")

    cfg = DataConfig(
        sources={"real": SourceConfig("ih26m", str(root / "real")), "synth": SourceConfig("shards", str(root / "shards"))},
        ratios={"real": 0.7, "synth": 0.3},
        batch_size=args.batch,
    )
    print(f"{args.num} real + {args.num // 2} shard images at {args.size}x{args.size}, batch {args.batch}, ratios 0.7/0.3")
    for workers in args.workers:
        cfg.num_workers = workers
        loader, sampler, sources = build_mixed_loader(cfg, hand_model)
        steps = len(sampler) - 1
        mixed = _rate(loader, steps)
        decode = DecodeOnly(create_reader("ih26m", root / "real", "train", hand_model), ShardSource(root / "shards", hand_model))
        bound = _rate(torch.utils.data.DataLoader(decode, batch_sampler=sampler, num_workers=workers), steps)
        print(f"workers={workers}: mixed loader {mixed:7.1f} samples/s, decode-only {bound:7.1f} samples/s, mixed vs decode-only: {mixed / bound:.2f}x")
    return 0


if __name__ == "__main__":
    run_tool(main)
