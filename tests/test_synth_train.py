"""Training the generator: the loss falls on a fixed batch; a resumed run continues exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from run_cases import stopped_after
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import default_collate

from handrecon.config import load_config
from handrecon.data.readers import create_reader
from handrecon.engine import checkpoint as ckpt
from synth.attention import HandTokenContext, install_hand_bias
from synth.models.components import tiny_components
from synth.settings import GeneratorSettings
from synth.train import GeneratorExperiment, GeneratorTrainer, PairTransform, denoising_loss, prompt_dropped, step_generator


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


def test_empty_prompt_draws_follow_the_probability_and_the_seed():
    n, p = 4000, 0.3
    drawn = [prompt_dropped(0, 0, i, 0, p) for i in range(n)]
    share = sum(drawn) / n
    assert abs(share - p) < 5 * (p * (1 - p) / n) ** 0.5, share  # binomial: 5 standard deviations
    assert drawn == [prompt_dropped(0, 0, i, 0, p) for i in range(n)]  # the same seed, the same choice
    for other in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):  # seed, epoch, repeat each change the draws
        seed, epoch, repeat = other
        assert drawn != [prompt_dropped(seed, epoch, i, repeat, p) for i in range(n)]
    assert not any(prompt_dropped(0, 0, i, 0, 0.0) for i in range(n))


def test_an_emptied_pair_has_the_empty_prompt_and_no_hand_tokens(procedural_root, hand_model):
    parts = tiny_components()
    transform = PairTransform(hand_model, parts.tokenizer, GeneratorSettings(resolution=64), None, "procedural", empty_prompt_prob=0.5, seed=3)
    emptied = next(i for i in range(100) if prompt_dropped(3, 0, i, 0, 0.5))
    kept = next(i for i in range(100) if not prompt_dropped(3, 0, i, 0, 0.5))
    sample = create_reader("ih26m", procedural_root, "train", hand_model)[0]
    pair, plain = transform(sample, emptied), transform(sample, kept)
    empty_ids = parts.tokenizer("", padding="max_length", max_length=77, return_tensors="pt")["input_ids"][0]
    assert pair["prompt"] == "" and torch.equal(pair["input_ids"], empty_ids) and not pair["hand_mask"].any()
    assert plain["prompt"] and plain["hand_mask"].any()
    assert torch.equal(pair["pixel_values"], plain["pixel_values"]) and torch.equal(pair["condition"], plain["condition"])
    transform.epoch = 1  # another epoch draws again
    assert [transform(sample, i)["prompt"] == "" for i in range(12)] == [prompt_dropped(3, 1, i, 0, 0.5) for i in range(12)]


def test_the_empty_prompt_probability_is_checked():
    from handrecon.config import ConfigError

    assert load_config(GeneratorExperiment, None, ["data.empty_prompt_prob=0.05"]).data.empty_prompt_prob == 0.05
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match=r"data.empty_prompt_prob must be in \[0, 1\)"):
            load_config(GeneratorExperiment, None, [f"data.empty_prompt_prob={bad}"])


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
        "train.val_inference_steps=1", "train.device=cpu", "optim.lr=1e-3", "optim.grad_accum=2", "data.empty_prompt_prob=0.5",
    ]  # fmt: skip
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    trainer = GeneratorTrainer(load_config(GeneratorExperiment, None, [*overrides, f"out={run_a}"]), progress=False)
    trainer.fit()
    stopped_after(run_a, 2, run_b)
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


def test_a_half_precision_base_trains_an_fp32_controlnet(tmp_path, procedural_root, mano_dir):
    """model.base_dtype=bf16: the frozen VAE, text encoder and UNet are bf16, the ControlNet and its
    optimizer stay fp32; a step and the validation grid run without train.amp as well."""
    from handrecon.errors import UserError

    overrides = [
        f"mano_dir={mano_dir}", f"data.sources.real.root={procedural_root}", "data.batch_size=2", "data.num_workers=0",
        "train.max_steps=1", "train.val_every=1", "train.ckpt_every=1", "train.val_samples=1", "train.val_inference_steps=1",
        "train.device=cpu", "train.amp=off", "optim.lr=1e-3", "model.base_dtype=bf16",
    ]  # fmt: skip
    trainer = GeneratorTrainer(load_config(GeneratorExperiment, None, [*overrides, f"out={tmp_path / 'run'}"]), progress=False)
    parts = trainer.parts
    assert {p.dtype for m in (parts.vae, parts.text_encoder, parts.unet) for p in m.parameters()} == {torch.bfloat16}
    before = {k: v.clone() for k, v in trainer.controlnet.state_dict().items()}
    trainer.fit()
    trainer.close()
    assert np.isfinite(trainer.last_scalars["loss"])
    assert {p.dtype for group in trainer.optimizer.param_groups for p in group["params"]} == {torch.float32}
    assert any(not torch.equal(before[k], v) for k, v in trainer.controlnet.state_dict().items())
    assert (tmp_path / "run" / "images" / "step_00000001.png").is_file()
    with pytest.raises(UserError, match="model.base_dtype=fp16 needs a CUDA device"):
        GeneratorTrainer(load_config(GeneratorExperiment, None, [*overrides, f"out={tmp_path / 'fp16'}", "model.base_dtype=fp16"]), progress=False)


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


def _bias_alphas(*nets) -> set[float]:
    from synth.attention import HandBiasAttnProcessor, attention_layers

    return {m.processor.alpha for net in nets for m in attention_layers(net, "cross").values() if isinstance(m.processor, HandBiasAttnProcessor)}


def _condition(hand_model, crop, style):
    from synth.condition import condition_from_samples

    image = condition_from_samples(hand_model, [crop], (64, 64), style)["image"][0].numpy()
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)  # as the pipeline and the cache store it


@pytest.mark.slow
def test_generator_settings_travel_from_training_to_every_reader(tmp_path, procedural_root, mano_dir, hand_model, capsys, monkeypatch):
    """A ControlNet trained with fusion off, alpha 1.0 and the `hands` condition style carries those
    settings (controlnet/sesahand_settings.json): validation, the cache job and live generation use
    exactly them without being told; an explicit override is printed, recorded in the manifest and
    changes the generator hash."""
    import copy
    import io
    import json

    from PIL import Image

    import synth.pipeline
    from handrecon.data.augment import crop_to_input
    from handrecon.data.loader import SourceConfig, build_source
    from handrecon.data.shards import ShardSource
    from synth.cache import CacheJob, CacheWriter, generator_hash, generator_record, run
    from synth.live import PipelineProducer, build_live_source
    from synth.settings import SETTINGS_FILE, GeneratorOverrides, GeneratorSettings

    run_dir = tmp_path / "run"
    cfg = load_config(GeneratorExperiment, None, [
        f"out={run_dir}", f"mano_dir={mano_dir}", f"data.sources.real.root={procedural_root}", "data.batch_size=1", "data.num_workers=0",
        "data.dataset=procedural", "train.max_steps=1", "train.val_every=1", "train.ckpt_every=1", "train.val_samples=1",
        "train.val_inference_steps=1", "train.device=cpu",
        "generator.structural_fusion=false", "generator.hand_bias=1.0", "generator.condition_style=hands",
    ])  # fmt: skip
    trainer = GeneratorTrainer(cfg, progress=False)
    trainer.fit()
    # training: the pairs, the model and the bias processors; validation (same processors) drew the grid's condition in `hands`
    reader = build_source(trainer.val_source, hand_model)
    crop = crop_to_input(reader[0], (64, 64), 2.5)
    hands, parts = _condition(hand_model, crop, "hands"), _condition(hand_model, crop, "parts")
    assert not np.array_equal(hands, parts)
    pair = trainer.transform(reader[0], 0)["condition"].permute(1, 2, 0).numpy()
    assert np.array_equal((np.clip(pair, 0, 1) * 255 + 0.5).astype(np.uint8), hands)
    assert trainer.controlnet.config.structural_fusion is False and _bias_alphas(trainer.parts.unet, trainer.parts.controlnet) == {1.0}
    grid = np.array(Image.open(run_dir / "images" / "step_00000001.png").convert("RGB"))
    assert np.array_equal(grid[:64, :64], hands)  # condition | generated | real
    trainer.close()

    controlnet = ckpt.latest_checkpoint(run_dir) / "controlnet"
    saved = json.loads((controlnet / SETTINGS_FILE).read_text())
    trained = {**GeneratorSettings().to_dict(), "structural_fusion": False, "hand_bias": 1.0, "condition_style": "hands", "resolution": 64}
    assert saved == trained
    assert json.loads((controlnet / "config.json").read_text())["structural_fusion"] is False

    # the cache job: nothing but the ControlNet folder given (and its own step count, an explicit override)
    job = CacheJob(out=str(tmp_path / "cache"), num=2, shard_size=2, batch_size=2, mano_dir=str(mano_dir), dataset="procedural",
                   controlnet=str(controlnet), generator=GeneratorOverrides(inference_steps=1), device="cpu")  # fmt: skip
    job.labels.root = str(procedural_root)
    capsys.readouterr()
    run(job, progress=False)
    assert f"generator settings: {controlnet / SETTINGS_FILE}; overridden by this job: inference_steps=1 (was 20)" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["generator"] == {"base": "tiny", "controlnet": str(controlnet), "settings": {**trained, "inference_steps": 1},
                                     "overrides": {"inference_steps": 1}}  # fmt: skip
    source, labels = ShardSource(job.out, hand_model), create_reader("ih26m", procedural_root, "train", hand_model)
    for row in manifest["samples"]:
        cond = Image.open(io.BytesIO(source.read_member(source.ids.index(row["key"]), "cond.png"))).convert("RGB")
        assert np.array_equal(np.array(cond), _condition(hand_model, crop_to_input(labels[row["source_index"]], (64, 64), 2.5), "hands"))
    writer = CacheWriter(job, hand_model, torch.device("cpu"))
    assert writer.pipe.controlnet.config.structural_fusion is False and _bias_alphas(writer.pipe.unet, writer.pipe.controlnet) == {1.0}
    assert type(writer.pipe.scheduler).__name__ == "DDIMScheduler" and writer.pipe.settings.to_dict() == {**trained, "inference_steps": 1}

    # live generation from the training run: its newest ControlNet, hence its settings
    def live_job(**generator):
        options = {"labels": {"kind": "ih26m", "root": str(procedural_root)}, "dataset": "procedural", "device": "cpu",
                   "generator": {"inference_steps": 1, **generator}}  # fmt: skip
        live = build_live_source(SourceConfig(kind="live", root=str(run_dir), options=options), hand_model, "gen")
        live.close()  # never started: the job is all this test needs
        return live.factory.args[0]

    styles = []
    render = synth.pipeline.condition_from_samples
    monkeypatch.setattr(synth.pipeline, "condition_from_samples", lambda *a, **kw: styles.append(a[3]) or render(*a, **kw))
    producer = PipelineProducer(live_job())
    assert producer.job.controlnet == str(controlnet) and producer.job.base == "tiny"
    pipe = producer.writer.pipe
    assert pipe.controlnet.config.structural_fusion is False and _bias_alphas(pipe.unet, pipe.controlnet) == {1.0}
    sample = producer(0)
    assert styles == ["hands"] and sample["image"].shape == (64, 64, 3)

    # an explicit override: printed where it is used, recorded, and another generator hash
    capsys.readouterr()
    overridden = PipelineProducer(live_job(hand_bias=2.5))
    assert "overridden by this job: hand_bias=2.5 (was 1.0), inference_steps=1 (was 20)" in capsys.readouterr().err
    assert _bias_alphas(overridden.writer.pipe.unet, overridden.writer.pipe.controlnet) == {2.5}
    other = copy.deepcopy(job)
    other.generator.hand_bias = 2.5
    assert generator_record(other)["overrides"] == {"hand_bias": 2.5, "inference_steps": 1}
    assert generator_hash(other) != generator_hash(job) == manifest["generator_hash"]
