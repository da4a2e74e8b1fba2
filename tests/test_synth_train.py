"""Training the generator: the loss falls on a fixed batch; a resumed run continues exactly."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import default_collate

from handrecon.config import load_config
from handrecon.data.readers import create_reader
from handrecon.engine import checkpoint as ckpt
from synth.attention import HandTokenContext, install_hand_bias
from synth.models.components import tiny_components
from synth.settings import GeneratorSettings
from synth.train import GeneratorExperiment, GeneratorTrainer, PairTransform, denoising_loss, step_generator


def test_pairs_hold_image_condition_and_hand_mask(procedural_root, hand_model):
    parts = tiny_components()
    transform = PairTransform(hand_model, parts.tokenizer, GeneratorSettings(resolution=64), None, "procedural")
    pair = transform(create_reader("ih26m", procedural_root, "train", hand_model)[0], 0)
    assert pair["pixel_values"].shape == (3, 64, 64) and -1 <= pair["pixel_values"].min() and pair["pixel_values"].max() <= 1
    assert pair["condition"].shape == (3, 64, 64) and pair["condition"].max() > 0
    assert "plain patterned background" in pair["prompt"]
    assert pair["hand_mask"].shape == (77,) and pair["hand_mask"].any() and not pair["hand_mask"][0]
    ids = pair["input_ids"][pair["hand_mask"]]
    assert "hand" in parts.tokenizer.decode(ids).replace(" ", "")


@pytest.mark.slow
def test_training_lowers_the_denoising_loss_on_a_fixed_batch(procedural_root, hand_model):
    parts = tiny_components(seed=0)
    context = HandTokenContext()
    for net in (parts.unet, parts.controlnet):
        install_hand_bias(net, context, 2.0)
    transform = PairTransform(hand_model, parts.tokenizer, GeneratorSettings(resolution=64), None, "procedural")
    reader = create_reader("ih26m", procedural_root, "train", hand_model)
    batch = default_collate([transform(reader[i], i) for i in range(4)])
    for name in ("vae", "text_encoder", "unet"):
        getattr(parts, name).requires_grad_(False)
    optimizer = torch.optim.AdamW(parts.controlnet.parameters(), 1e-3)

    def loss():
        return denoising_loss(parts, parts.controlnet, context, batch, step_generator(0, 0, 0, 0, torch.device("cpu")))

    with torch.no_grad():
        before = loss().item()
    for _ in range(12):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss().item()
    print(f"denoising loss on a fixed batch: {before:.4f} -> {after:.4f} after 12 steps")
    assert after < 0.9 * before, (before, after)


def _losses(run):
    events = EventAccumulator(str(Path(run) / "tb"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("loss/loss")}


@pytest.mark.slow
def test_resumed_generator_training_continues_exactly(tmp_path, procedural_root, mano_dir):
    overrides = [
        f"mano_dir={mano_dir}", f"data.sources.real.root={procedural_root}", "data.batch_size=2", "data.num_workers=2", "data.dataset=procedural",
        "train.max_steps=4", "train.ckpt_every=2", "train.keep_last=5", "train.log_every=1", "train.val_every=100", "train.val_samples=1",
        "train.val_inference_steps=1", "train.device=cpu", "optim.lr=1e-3", "optim.grad_accum=2",
    ]  # fmt: skip
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    trainer = GeneratorTrainer(load_config(GeneratorExperiment, None, [*overrides, f"out={run_a}"]), progress=False)
    trainer.fit()
    (run_b / "checkpoints").mkdir(parents=True)
    shutil.copy(run_a / "config.yaml", run_b / "config.yaml")
    shutil.copytree(ckpt.step_dir(run_a, 2), ckpt.step_dir(run_b, 2))
    resumed = GeneratorTrainer(load_config(GeneratorExperiment, run_b / "config.yaml", [f"out={run_b}"]), resume=True, progress=False)
    assert resumed.step == 2
    resumed.fit()
    a, b = _losses(run_a), _losses(run_b)
    assert sorted(b) == [3, 4] and [a[3], a[4]] == [b[3], b[4]]
    weights = [load_file(str(ckpt.step_dir(r, 4) / "controlnet" / "diffusion_pytorch_model.safetensors")) for r in (run_a, run_b)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert (run_a / "images" / "step_00000004.png").is_file()
    with pytest.raises(Exception, match="already holds checkpoints"):
        GeneratorTrainer(load_config(GeneratorExperiment, None, [*overrides, f"out={run_a}"]), progress=False)


@pytest.mark.slow
def test_two_process_gloo_generator_training_keeps_ranks_identical(tmp_path, procedural_root, mano_dir):
    import json
    import os
    import subprocess
    import sys

    from handrecon.config import save_config

    run = tmp_path / "run"
    cfg = load_config(GeneratorExperiment, None, [
        f"out={run}", f"mano_dir={mano_dir}", f"data.sources.real.root={procedural_root}", "data.batch_size=2", "data.num_workers=0",
        "train.max_steps=2", "train.val_every=100", "train.val_samples=1", "train.val_inference_steps=1", "train.device=cpu",
        "optim.lr=1e-3",
    ])  # fmt: skip
    save_config(cfg, tmp_path / "config.yaml")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(repo / "tests" / "ddp_worker.py")]
    done = subprocess.run([*cmd, "generator", str(tmp_path / "config.yaml")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [load_file(str(run / f"rank{r}.safetensors")) for r in (0, 1)]
    saved = load_file(str(ckpt.step_dir(run, 2) / "controlnet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(ranks[0][k], ranks[1][k]) and torch.equal(ranks[0][k], saved[k]) for k in saved)
    seen = [set(json.loads((run / f"rank{r}.json").read_text())["samples"]) for r in (0, 1)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]


@pytest.mark.slow
def test_gradient_checkpointing_trains_the_same_weights(tmp_path, procedural_root, mano_dir):
    """Checkpointed blocks re-run their attention in backward: the hand bias must still be set
    then (it was not, and backward failed), and the result must equal the plain run's."""
    overrides = [
        f"mano_dir={mano_dir}", f"data.sources.real.root={procedural_root}", "data.batch_size=2", "data.num_workers=0", "data.dataset=procedural",
        "train.max_steps=2", "train.ckpt_every=2", "train.val_every=100", "train.val_samples=1", "train.val_inference_steps=1",
        "train.device=cpu", "optim.lr=1e-3", "generator.hand_bias=2.0", "generator.hand_bias_targets=both",
    ]  # fmt: skip
    weights = {}
    for checkpointing in (False, True):
        run = tmp_path / str(checkpointing)
        cfg = load_config(GeneratorExperiment, None, [*overrides, f"out={run}", f"model.gradient_checkpointing={str(checkpointing).lower()}"])
        trainer = GeneratorTrainer(cfg, progress=False)
        trainer.fit()
        weights[checkpointing] = {k: v.detach().clone() for k, v in trainer.controlnet.state_dict().items()}
        trainer.close()
    assert weights[True].keys() == weights[False].keys()
    moved = 0
    for key, value in weights[False].items():
        torch.testing.assert_close(weights[True][key], value, rtol=1e-5, atol=1e-6)
        moved += int(key.startswith("controlnet_down_blocks") and value.abs().sum() > 0)
    assert moved  # the zero convolutions did train


def test_the_generator_loop_counts_epochs_like_the_regressors(tmp_path, procedural_root, mano_dir):
    """train.max_steps=null: the run is train.epochs passes over the epoch source, as in tools/train.py."""
    cfg = load_config(GeneratorExperiment, None, [
        f"out={tmp_path / 'run'}", f"mano_dir={mano_dir}", f"data.sources.real.root={procedural_root}", "data.batch_size=4",
        "data.num_workers=0", "train.max_steps=null", "train.epochs=3", "optim.grad_accum=2", "train.device=cpu",
    ])  # fmt: skip
    trainer = GeneratorTrainer(cfg, progress=False)
    batches = -(-trainer.sources.sizes["real"] // 4)  # an epoch ends with the batch that reaches the last real sample
    assert trainer.steps_per_epoch == batches // 2 and trainer.total_steps == 3 * trainer.steps_per_epoch
    trainer.close()

