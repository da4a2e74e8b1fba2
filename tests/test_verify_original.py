"""Our networks against the original code: `interwild` runs only with SESAHAND_INTERWILD_SRC set to a
clone of facebookresearch/InterWild (pytorch3d is shimmed; kornia is used when installed), `dir`
only with SESAHAND_DIR_SRC set to a clone of PengfeiRen96/DIR (manopth's chumpy loader is shimmed).
The DIR check runs in a fresh process: both sources have top-level modules of the same names (utils)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = os.environ.get("SESAHAND_INTERWILD_SRC")
DIR_SOURCE = os.environ.get("SESAHAND_DIR_SRC")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


@pytest.mark.skipif(not SOURCE, reason="set SESAHAND_INTERWILD_SRC to a clone of facebookresearch/InterWild")
def test_interwild_matches_the_original_network():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from verify_original import TOLERANCE_M, verify

    results = verify(Path(SOURCE), seeds=[0, 1, 2], batch=2)
    for seed, diffs in results.items():
        assert diffs["mesh (m)"] <= TOLERANCE_M, (seed, diffs)
        assert diffs["joints 3D (m)"] <= TOLERANCE_M, (seed, diffs)
        assert diffs["boxes (px)"] <= 1e-2 and diffs["joints 2D (px)"] <= 1e-2, (seed, diffs)


@pytest.mark.skipif(not DIR_SOURCE, reason="set SESAHAND_DIR_SRC to a clone of PengfeiRen96/DIR")
@pytest.mark.parametrize("root_joint", [0, 9])
def test_dir_matches_the_original_network(root_joint):
    from verify_original import TOLERANCE_M

    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, 'tools'); from verify_original import verify_dir; "
        f"print('RESULT ' + json.dumps(verify_dir(Path({DIR_SOURCE!r}), seeds=[0, 1, 2], batch=2, root_joint={root_joint})))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.split("RESULT ", 1)[1])
    for seed, diffs in results.items():
        for key, value in diffs.items():
            limit = TOLERANCE_M if "(m)" in key else 1e-3  # uv, offsets (0.15 m units), logits, features
            assert value <= limit, (seed, key, value)
