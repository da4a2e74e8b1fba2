#!/usr/bin/env python
"""Prompts per second of the offline (rules) semantics chain, stage by stage, against reading
the same samples' labels alone (the baseline every stage adds to)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from handrecon.cli import run_tool
from handrecon.data.procedural import ProceduralConfig, generate
from handrecon.data.readers import create_reader
from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano
from synth.hand_tokens import hand_tokens
from synth.semantics.chain import SemanticsChain, SemanticsConfig


def _timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--num", type=int, default=200, help="procedural samples")
    parser.add_argument("--tokenizer", default="sd15", help="CLIP tokenizer of the hand columns")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp())
    write_standin_mano(root / "mano")
    hand_model = HandModel(root / "mano")
    generate(hand_model, ProceduralConfig(image_size=(64, 64), split_fractions=(1.0, 0.0, 0.0)), root / "data", args.num, 0, progress=False)
    reader = create_reader("ih26m", root / "data", "train", hand_model, load_images=False)
    chain = SemanticsChain(SemanticsConfig(tokenizer=args.tokenizer), hand_model)

    samples, t_read = _timed(lambda: [reader[i] for i in range(len(reader))])
    captions, t_cap = _timed(lambda: chain.captioner(samples))
    components, t_ext = _timed(lambda: chain.extractor([c for c, _ in captions]))
    prompts, t_com = _timed(lambda: chain.composer([c for c, _ in components]))
    _, t_tok = _timed(lambda: [hand_tokens(p, chain.tokenizer, chain.finder) for p, _ in prompts])
    n, chain_time = len(samples), t_cap + t_ext + t_com + t_tok
    print(f"{n} procedural samples, tokenizer {args.tokenizer}, tagger: {chain.finder.path}")
    for name, t in (("read labels (baseline)", t_read), ("captioner", t_cap), ("extractor", t_ext), ("composer", t_com), ("hand tokens", t_tok)):
        print(f"{name:24s} {n / t:9.1f} samples/s   {t / t_read:6.2f}x the baseline time")
    print(f"{'whole chain':24s} {n / chain_time:9.1f} prompts/s  {chain_time / t_read:6.2f}x the baseline time")
    return 0


if __name__ == "__main__":
    run_tool(main)
