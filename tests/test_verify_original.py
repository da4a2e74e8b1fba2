"""`interwild` against InterWild's own code: runs only with SESAHAND_INTERWILD_SRC set to a clone
of facebookresearch/InterWild (pytorch3d is shimmed; kornia is used when installed)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SOURCE = os.environ.get("SESAHAND_INTERWILD_SRC")


@pytest.mark.skipif(not SOURCE, reason="set SESAHAND_INTERWILD_SRC to a clone of facebookresearch/InterWild")
def test_interwild_matches_the_original_network():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from verify_original import TOLERANCE_M, verify

    results = verify(Path(SOURCE), seeds=[0, 1, 2], batch=2)
    for seed, diffs in results.items():
        assert diffs["mesh (m)"] <= TOLERANCE_M, (seed, diffs)
        assert diffs["joints 3D (m)"] <= TOLERANCE_M, (seed, diffs)
        assert diffs["boxes (px)"] <= 1e-2 and diffs["joints 2D (px)"] <= 1e-2, (seed, diffs)
