#!/usr/bin/env python
"""Write the procedural stand-in MANO model (MANO_RIGHT.pkl, MANO_LEFT.pkl) into a folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from handrecon.cli import run_tool
from handrecon.hand_model.standin import write_standin_mano


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip())
    parser.add_argument("--out", required=True, type=Path, help="folder to write MANO_RIGHT.pkl and MANO_LEFT.pkl into")
    args = parser.parse_args(argv)
    right, left = write_standin_mano(args.out)
    print(f"wrote {right} and {left}")
    return 0


if __name__ == "__main__":
    run_tool(main)
