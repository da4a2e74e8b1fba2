"""Every command-line tool answers --help with its one-line purpose."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p for p in (ROOT / "tools").rglob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_tool_help_states_its_purpose(tool):
    purpose = ast.get_docstring(ast.parse(tool.read_text()))
    assert purpose, f"{tool} needs a module docstring with its one-line purpose"
    first_line = purpose.strip().splitlines()[0]
    out = subprocess.run([sys.executable, str(tool), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert " ".join(first_line.split()) in " ".join(out.stdout.split())


def test_make_standin_mano_writes_both_files(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_standin_mano.py"), "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"MANO_RIGHT.pkl", "MANO_LEFT.pkl"}
