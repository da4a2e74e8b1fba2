"""Shared fixtures: the stand-in MANO model is written once per test session."""
from __future__ import annotations

import os

import pytest
import torch

from handrecon.hand_model.mano import HandModel
from handrecon.hand_model.standin import write_standin_mano

if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist workers share the cores: torch's default of one thread per core in every worker
    # oversubscribes them, and CPU torch then runs several times slower
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(autouse=True)
def _grad_mode_is_left_on():
    """A tool that turns autograd off for the process (torch.set_grad_enabled(False)) instead of
    in a context breaks every later training step in that process: fail the test that did it."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("autograd was left disabled for the process; use torch.no_grad() as a context")


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


@pytest.fixture(scope="session")
def procedural_root(tmp_path_factory, hand_model):
    """A small procedural dataset in InterHand2.6M format (train / val / test splits)."""
    from handrecon.data.procedural import ProceduralConfig, generate

    out = tmp_path_factory.mktemp("procedural")
    generate(hand_model, ProceduralConfig(image_size=(128, 128), split_fractions=(0.6, 0.2, 0.2)), out, num=60, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A randomly initialised FID InceptionV3 of the right architecture, saved as a weights file."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    original_load, original_from_url = fe.FeatureExtractorInceptionV3.load_state_dict, fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *a, **k: {}
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, state, *a, **k: None
    try:
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fe.FeatureExtractorInceptionV3.load_state_dict, fe.load_state_dict_from_url = original_load, original_from_url
    path = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path
