"""The base trainer: two phases (VAE, then UNet on the measured latent scale), exact resume, and
a base folder that the generator reads."""
from __future__ import annotations

import pytest
import torch
from run_cases import stopped_after
from safetensors.torch import load_file

from handrecon.config import load_config
from handrecon.data.readers import create_reader
from handrecon.engine import checkpoint as ckpt
from handrecon.hand_model.mano import HandModel
from synth.models.components import load_components, tiny_components
from synth.pretrain_base import BasePretrainExperiment, BaseTrainer
from synth.settings import GeneratorSettings
from synth.train import PairTransform


def _weights(folder, name):
    return load_file(str(next((folder / name).glob("*.safetensors"))))


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_base_trains_the_vae_then_the_unet_and_resumes_exactly(tmp_path, procedural_root, mano_dir):
    overrides = [
        f"mano_dir={mano_dir}", f"data.sources.real.root={procedural_root}", "data.batch_size=2", "data.num_workers=0", "data.dataset=procedural",
        "train.max_steps=4", "train.vae_steps=2", "train.scale_samples=4", "train.ckpt_every=1", "train.keep_last=5", "train.log_every=1",
        "train.val_every=4", "train.val_samples=1", "train.val_inference_steps=1", "train.device=cpu", "optim.lr=1e-3",
    ]  # fmt: skip
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    BaseTrainer(load_config(BasePretrainExperiment, None, [*overrides, f"out={run_a}"]), progress=False).fit()
    start = tiny_components(seed=0)  # train.seed 0
    base = {s: ckpt.step_dir(run_a, s) / "base" for s in (1, 2, 3, 4)}
    # phase 1 moves the VAE only, phase 2 the UNet only
    assert _equal(_weights(base[2], "unet"), start.unet.state_dict()) and not _equal(_weights(base[2], "vae"), start.vae.state_dict())
    assert _equal(_weights(base[4], "vae"), _weights(base[2], "vae")) and not _equal(_weights(base[4], "unet"), _weights(base[2], "unet"))
    # the UNet trains on unit-variance latents: the scale is 1 / the std of the phase-1 VAE's latent means
    trained = load_components(str(run_a / "base"))
    hand_model = HandModel(mano_dir)
    pairs = PairTransform(hand_model, trained.tokenizer, GeneratorSettings(resolution=64), None, "procedural", condition=False)
    reader = create_reader("ih26m", procedural_root, "train", hand_model)
    pixels = torch.stack([pairs(reader[i], i)["pixel_values"] for i in range(4)])
    with torch.no_grad():
        std = trained.vae.encode(pixels).latent_dist.mean.std()
    assert trained.vae.config.scaling_factor == pytest.approx(float(1 / std), rel=1e-5)
    assert trained.vae.config.scaling_factor != start.vae.config.scaling_factor
    assert _equal(trained.unet.state_dict(), _weights(base[4], "unet")) and trained.resolution == 64
    assert (run_a / "images" / "step_00000004.png").is_file()
    # resumed in phase 1, the run re-measures the scale on entering phase 2 and ends where the uninterrupted one did
    stopped_after(run_a, 1, run_b)
    resumed = BaseTrainer(load_config(BasePretrainExperiment, run_b / "config.yaml", [f"out={run_b}"]), resume=True, progress=False)
    assert resumed.step == 1
    resumed.fit()
    for name in ("unet", "vae"):
        assert _equal(_weights(ckpt.step_dir(run_b, 4) / "base", name), _weights(base[4], name))
    assert load_components(str(run_b / "base")).vae.config.scaling_factor == trained.vae.config.scaling_factor
