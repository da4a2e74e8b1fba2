#!/usr/bin/env python
"""Benchmark the two-hand MANO forward (smplx) for a batch, against one sample at a time."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from handrecon.cli import run_tool
from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--mano-dir", type=Path, default=None, help="MANO folder (default: the stand-in in a temp folder)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    mano_dir = args.mano_dir or Path(tempfile.mkdtemp())
    if args.mano_dir is None:
        write_standin_mano(mano_dir)
    model = HandModel(mano_dir).to(args.device)
    gen = torch.Generator().manual_seed(0)

    def params(n):
        return dict(
            betas=torch.randn(n, 10, generator=gen).to(args.device),
            global_orient=torch.randn(n, 3, generator=gen).to(args.device),
            hand_pose=(0.3 * torch.randn(n, 45, generator=gen)).to(args.device),
            transl=torch.randn(n, 3, generator=gen).to(args.device),
        )

    p = params(args.batch)
    ones = [params(1) for _ in range(args.batch)]

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def forward():
        with torch.no_grad():
            model(p, p)
        sync()

    def forward_backward():
        q = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        model(q, q).vertices.square().sum().backward()
        sync()

    def one_by_one():
        with torch.no_grad():
            for o in ones:
                model(o, o)
        sync()

    t_fwd, t_bwd, t_loop = _time(forward, args.repeats), _time(forward_backward, args.repeats), _time(one_by_one, max(2, args.repeats // 5))
    print(f"device: {args.device}; two hands, batch {args.batch}")
    print(f"forward:            {t_fwd * 1e3:7.2f} ms/batch")
    print(f"forward + backward: {t_bwd * 1e3:7.2f} ms/batch")
    print(f"one sample at a time: {t_loop * 1e3:7.2f} ms for {args.batch}; batched vs per-sample: {t_loop / t_fwd:.1f}x")
    return 0


if __name__ == "__main__":
    run_tool(main)
