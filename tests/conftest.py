"""Shared fixtures: the stand-in MANO model is written once per test session."""
from __future__ import annotations

import pytest
import torch

from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano


@pytest.fixture(scope="session")
def mano_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mano")
    write_standin_mano(out)
    return out


@pytest.fixture(scope="session")
def hand_model(mano_dir):
    return HandModel(mano_dir)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
