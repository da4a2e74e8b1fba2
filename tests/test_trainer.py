"""The training loop: schedules, checkpoints, exact resume, mixing, freezing, validation, DDP."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from run_cases import stopped_after
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from handrecon.config import load_config
from handrecon.engine import Experiment, ScheduleConfig, Trainer
from handrecon.engine import checkpoint as ckpt
from handrecon.engine.optim import lr_factor
from handrecon.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, mano_dir, root, *overrides):
    base = [
        f"out={tmp_path / 'run'}",
        f"mano_dir={mano_dir}",
        "model.name=dir_tiny",
        f"data.sources.real={{kind: ih26m, root: {root}, split: train}}",
        "data.batch_size=8",
        "data.num_workers=0",
        "optim.lr=1e-3",
        "train.log_every=1",
        "train.device=cpu",
    ]
    return load_config(Experiment, None, [*base, *overrides])


def _fit(cfg, **kwargs):
    trainer = Trainer(cfg, progress=False, **kwargs)
    try:
        metrics = trainer.fit()
    finally:
        trainer.close()
    return trainer, metrics


def _scalars(run_dir, tag):
    events = EventAccumulator(str(Path(run_dir) / "tb"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def _weights(path):
    return load_file(str(ckpt.weights_file(path)))


# ---------------------------------------------------------------------------------- schedules
def test_schedules_match_their_closed_forms():
    total = 100
    warm = ScheduleConfig(name="constant", warmup_steps=10)
    assert [lr_factor(s, total, warm) for s in (0, 4, 9, 50)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    step = ScheduleConfig(name="step", milestones=[0.5, 0.8], gamma=0.1)
    assert [lr_factor(s, total, step) for s in (49, 50, 79, 80)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    cos = ScheduleConfig(name="cosine", warmup_steps=20, min_lr_ratio=0.1)
    # after warmup the cosine runs from 1 at step 20 to min_lr_ratio at the last step
    assert lr_factor(20, total, cos) == pytest.approx(1.0)
    assert lr_factor(60, total, cos) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, total, cos) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule.name"):
        ScheduleConfig(name="linear")


# -------------------------------------------------------------------------------- checkpoints
def test_checkpoints_are_atomic_pruned_and_keep_the_best(tmp_path):
    model = torch.nn.Linear(3, 2)
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, model, {"step": step}, "a: 1\n")
    (tmp_path / "checkpoints" / ".tmp-step_00000005").mkdir()  # a crash mid-write
    best = ckpt.BestTracker(tmp_path, "err", "min")
    assert best.update(2, {"err": 5.0}) and not best.update(3, {"err": 6.0}) and not best.update(4, {"err": float("nan")})
    ckpt.prune_checkpoints(tmp_path, keep_last=1, keep_step=best.step)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002", "step_00000004"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000004"
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["step"] == 2
    assert ckpt.BestTracker(tmp_path, "err", "min").step == 2  # persisted
    with pytest.raises(UserError, match="best_metric 'err'"):
        best.update(5, {"other": 1.0})


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_files_get_the_modes_open_gives(tmp_path, umask):
    """safetensors creates its files 0o600; a teammate on a shared cluster must read a run."""
    old = os.umask(umask)
    try:
        folder = ckpt.save_checkpoint(tmp_path, 1, torch.nn.Linear(3, 2), {"step": 1}, "a: 1\n")
        ckpt.write_checkpoint(tmp_path, 2, lambda tmp: os.close(os.open(tmp / "third_party.bin", os.O_CREAT | os.O_WRONLY, 0o600)), {}, "")
    finally:
        os.umask(old)
    files = [*folder.iterdir(), *ckpt.step_dir(tmp_path, 2).iterdir()]
    assert len(files) == 6 and {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o666 & ~umask)}


def test_a_full_disk_while_writing_weights_is_an_os_error(tmp_path):
    from safetensors import SafetensorError

    def full(tmp):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(OSError) as err:
        ckpt.write_checkpoint(tmp_path, 1, full, {}, "")
    assert err.value.errno == 28 and err.value.strerror == os.strerror(28) and ".tmp-step_00000001" in err.value.filename
    assert ckpt.list_checkpoints(tmp_path) == []


class _Killed(BaseException):
    """A kill -9 stand-in: nothing in the loop catches it."""


@pytest.mark.parametrize("window", ["while writing the checkpoint", "after the checkpoint, before best.json"])
def test_a_kill_around_a_new_best_leaves_best_json_naming_a_checkpoint(tmp_path, mano_dir, procedural_root, monkeypatch, window):
    """Every validation improves (metric 10 - step); checkpoints come only from improvements. A
    kill at step 2 in either window must leave best.json naming a complete checkpoint, and the
    resumed run finishes with a consistent record."""
    cfg = _config(tmp_path, mano_dir, procedural_root, "train.max_steps=3", "train.val_every=1", "train.ckpt_every=100", "train.best_metric=m")
    monkeypatch.setattr(Trainer, "validate", lambda self: {"m": 10.0 - self.step})
    save = ckpt.save_checkpoint

    def killed_at_step_2(run_dir, step, *args):
        if step == 2 and window == "while writing the checkpoint":
            raise _Killed
        folder = save(run_dir, step, *args)
        if step == 2:
            raise _Killed
        return folder

    monkeypatch.setattr(ckpt, "save_checkpoint", killed_at_step_2)
    with pytest.raises(_Killed):
        _fit(cfg)
    run = Path(cfg.out)
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["step"] == 1 and (run / best["checkpoint"] / "model.safetensors").is_file()
    assert ckpt.checkpoint_dir(run) == ckpt.step_dir(run, 1)
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    trainer, _ = _fit(cfg, resume=True)
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert trainer.step == 3 and best["step"] == 3 and best["value"] == 7.0
    assert ckpt.checkpoint_dir(run) == ckpt.step_dir(run, 3)


def test_a_best_json_naming_a_missing_checkpoint(tmp_path, mano_dir, procedural_root, monkeypatch, capsys):
    """Left by a kill in an older version: eval refuses the run folder (no silent fall-back to
    another checkpoint); resume drops the record with a warning and sets a new best."""
    cfg = _config(tmp_path, mano_dir, procedural_root, "train.max_steps=2", "train.val_every=1", "train.best_metric=m")
    monkeypatch.setattr(Trainer, "validate", lambda self: {"m": 10.0 - self.step})
    _fit(cfg)
    run = Path(cfg.out)
    stale = {"step": 9, "metric": "m", "value": 1.0, "checkpoint": "checkpoints/step_00000009"}
    (run / "checkpoints" / "best.json").write_text(json.dumps(stale))
    with pytest.raises(UserError, match=r"best.json names checkpoints/step_00000009 \(step 9\), which has no model.safetensors.*latest is .*step_00000002"):
        ckpt.checkpoint_dir(run)
    assert ckpt.checkpoint_dir(ckpt.step_dir(run, 2)) == ckpt.step_dir(run, 2)  # an explicit folder still works
    (run / "checkpoints" / "best.json").write_text("{not json")
    with pytest.raises(UserError, match="best.json: not a valid best-checkpoint record"):
        ckpt.checkpoint_dir(run)
    (run / "checkpoints" / "best.json").write_text(json.dumps(stale))
    trainer, _ = _fit(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=3)), resume=True)
    assert "step_00000009, which does not exist" in capsys.readouterr().out
    assert json.loads((run / "checkpoints" / "best.json").read_text())["step"] == 3


def test_a_malicious_trainer_state_runs_no_code(tmp_path, mano_dir, procedural_root):
    cfg = _config(tmp_path, mano_dir, procedural_root, "train.max_steps=1")
    _fit(cfg)
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = ckpt.step_dir(cfg.out, 1) / ckpt.TRAINER_STATE
    torch.save({"step": 1, "evil": Payload()}, state)
    with pytest.raises(UserError, match=r"trainer.pt: refused to load: .*GLOBAL posix.system"):
        Trainer(cfg, resume=True, progress=False)
    assert not marker.exists()


def test_non_strict_loading_skips_mismatched_tensors(tmp_path):
    src = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    ckpt.save_checkpoint(tmp_path, 1, src, {}, "")
    dst = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5))
    report = ckpt.load_weights(dst, tmp_path, strict=False)
    assert report["mismatched"] == ["1.bias", "1.weight"] and not report["missing"] and not report["unexpected"]
    torch.testing.assert_close(dst[0].weight, src[0].weight)
    with pytest.raises(UserError, match="do not fit"):
        ckpt.load_weights(dst, tmp_path, strict=True)


# ------------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_exact_resume_continues_like_the_uninterrupted_run(tmp_path, mano_dir, procedural_root):
    # 36 train samples / batch 8 = 5 micro-batches an epoch, 2 per step: the resumed step 3 sits
    # in epoch 1 after its first micro-batch, and accumulation spans the epoch boundary.
    overrides = ["optim.grad_accum=2", "train.max_steps=6", "train.ckpt_every=3", "train.keep_last=5", "data.num_workers=2"]
    full = _config(tmp_path / "a", mano_dir, procedural_root, *overrides)
    _fit(full)
    run_a = Path(full.out)
    # the run "crashed" after its step-3 checkpoint: a folder with only that much of it
    run_b = tmp_path / "b" / "run"
    stopped_after(run_a, 3, run_b)
    resumed = load_config(Experiment, run_b / "config.yaml", [f"out={run_b}"])
    trainer, _ = _fit(resumed, resume=True)
    assert trainer.step == 6
    losses_a, losses_b = _scalars(run_a, "loss/loss"), _scalars(run_b, "loss/loss")
    assert sorted(losses_b) == [4, 5, 6]
    assert [losses_b[s] for s in (4, 5, 6)] == [losses_a[s] for s in (4, 5, 6)]
    assert len({losses_a[s] for s in losses_a}) == 6  # the losses do change from step to step
    final_a, final_b = _weights(ckpt.step_dir(run_a, 6)), _weights(ckpt.step_dir(run_b, 6))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert any(not torch.equal(final_a[k], _weights(ckpt.step_dir(run_a, 3))[k]) for k in final_a)


def test_mixed_sources_log_the_configured_ratio_and_validation_tracks_the_best(tmp_path, mano_dir, procedural_root):
    cfg = _config(
        tmp_path,
        mano_dir,
        procedural_root,
        f"data.sources.synth={{kind: ih26m, root: {procedural_root}, split: test}}",
        "data.ratios={real: 0.75, synth: 0.25}",
        "train.max_steps=4",
        "train.val_every=2",
        "train.keep_last=1",
        "train.best_metric=interwild/mpvpe_all_wrist_mm",
        f"val={{dataset: procedural, root: {procedural_root}, split: val, max_samples: 6, images: 2}}",
    )
    trainer, metrics = _fit(cfg)
    run = Path(cfg.out)
    assert set(_scalars(run, "data/ratio_synth").values()) == {0.25}
    assert set(_scalars(run, "data/ratio_real").values()) == {0.75}
    val = _scalars(run, "val/interwild/mpvpe_all_wrist_mm")
    assert sorted(val) == [2, 4] and val[4] == pytest.approx(metrics["interwild/mpvpe_all_wrist_mm"])
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["value"] == pytest.approx(min(val.values())) and best["step"] == min(val, key=val.get)
    assert (run / best["checkpoint"] / "model.safetensors").is_file()  # kept despite keep_last=1
    assert ckpt.latest_checkpoint(run).name == "step_00000004"
    assert sorted(p.name for p in (run / "images").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    lrs = _scalars(run, "train/lr")
    assert lrs[4] < lrs[1]  # cosine decay


def test_frozen_parameters_and_their_statistics_stay_fixed(tmp_path, mano_dir, procedural_root):
    cfg = _config(tmp_path, mano_dir, procedural_root, "train.max_steps=2", "train.freeze=[backbone]")
    trainer = Trainer(cfg, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    frozen = [k for k in before if k.startswith("backbone.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # incl. BatchNorm running stats
    assert any(not torch.equal(before[k], after[k]) for k in before if not k.startswith("backbone."))
    with pytest.raises(UserError, match="no parameter starts with 'nope'"):
        Trainer(_config(tmp_path / "x", mano_dir, procedural_root, "train.freeze=[nope]"), progress=False)


def test_init_loads_weights_and_runs_refuse_to_overwrite(tmp_path, mano_dir, procedural_root):
    cfg = _config(tmp_path, mano_dir, procedural_root, "train.max_steps=1")
    _fit(cfg)
    with pytest.raises(UserError, match="already holds checkpoints"):
        Trainer(cfg, progress=False)
    fine = _config(tmp_path / "fine", mano_dir, procedural_root, "train.max_steps=1")
    trainer = Trainer(fine, init=cfg.out, progress=False)
    source = _weights(cfg.out)
    assert trainer.step == 0
    assert all(torch.equal(v, source[k]) for k, v in trainer.model.state_dict().items())
    trainer.close()


def test_fp16_on_cpu_is_a_clear_error(tmp_path, mano_dir, procedural_root):
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        Trainer(_config(tmp_path, mano_dir, procedural_root, "train.amp=fp16"), progress=False)


def test_bf16_autocast_trains(tmp_path, mano_dir, procedural_root):
    trainer, _ = _fit(_config(tmp_path, mano_dir, procedural_root, "train.amp=bf16", "train.max_steps=2"))
    losses = _scalars(trainer.run_dir, "loss/loss")
    assert sorted(losses) == [1, 2] and all(np.isfinite(v) for v in losses.values())


@pytest.mark.slow
def test_train_tool_resume_and_eval_checkpoint_agree(tmp_path, mano_dir, procedural_root):
    """tools/train.py runs, --resume extends it, and tools/eval.py --checkpoint reproduces the
    trainer's own validation numbers on the same split."""
    run = tmp_path / "run"
    common = [
        f"mano_dir={mano_dir}",
        "model.name=dir_tiny",
        f"data.sources.real={{kind: ih26m, root: {procedural_root}, split: train}}",
        "data.batch_size=8",
        "data.num_workers=0",
        "train.device=cpu",
        f"val={{dataset: procedural, root: {procedural_root}, split: val, max_samples: null, images: 0}}",
        "augment.framing=image",  # not the default: eval must take it from the run
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def tool(*args):
        return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)

    done = tool("tools/train.py", "--set", f"out={run}", "train.max_steps=2", *common)
    assert done.returncode == 0, done.stderr
    again = tool("tools/train.py", "--resume", str(run), "--set", "train.max_steps=3")
    assert again.returncode == 0, again.stderr
    trained = json.loads(again.stdout[again.stdout.index("{") :])
    assert trained["step"] == 3
    bad = tool("tools/train.py", "configs/train_tiny.yaml", "--resume", str(run))
    assert bad.returncode == 2 and "give --set overrides only" in bad.stderr

    out = tmp_path / "eval"
    ev = tool("tools/eval.py", "--checkpoint", str(ckpt.step_dir(run, 3)), "--dataset", "procedural", "--data-root", str(procedural_root), "--split", "val",
              "--mano-dir", str(mano_dir), "--out", str(out), "--overlays", "0")  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    reported = json.loads((out / "metrics.json").read_text())["metrics"]
    for key, value in reported.items():
        assert value == pytest.approx(trained[key], rel=1e-5, nan_ok=True), key
    assert (out / "predictions.npz").is_file()


def test_nonfinite_outputs_fail_validation_and_never_become_best(tmp_path, mano_dir, procedural_root):
    from handrecon.engine.trainer import VAL_FAILED

    val = f"val={{dataset: procedural, root: {procedural_root}, split: val, max_samples: 6, images: 2}}"
    cfg = _config(tmp_path, mano_dir, procedural_root, "train.max_steps=2", "train.val_every=1", val)
    trainer = Trainer(cfg, progress=False)

    def diverged(module, inputs, out):  # a model that diverged: NaN meshes at evaluation
        return out if module.training else {**out, "verts": out["verts"] * float("nan")}

    trainer.model.register_forward_hook(diverged)
    try:
        metrics = trainer.fit()
    finally:
        trainer.close()
    assert metrics == {VAL_FAILED: 6.0}
    assert _scalars(cfg.out, f"val/{VAL_FAILED}") == {1: 6.0, 2: 6.0}
    assert not (Path(cfg.out) / "checkpoints" / "best.json").exists()
    assert not (Path(cfg.out) / "images").exists()  # no overlays of NaN meshes


class _FocalModel(torch.nn.Module):
    """Predicts every vertex coordinate as the input's focal length: shows what crop it was fed."""

    input_size = (64, 48)

    def forward(self, batch):
        focal = batch["focal"].float()[:, :1, None]
        return {"verts": focal.expand(-1, 1556, 3), "rel_trans": torch.zeros(len(focal), 3)}


def test_predictions_use_the_requested_framing(procedural_root, hand_model):
    from handrecon.data.augment import FRAMINGS, crop_to_input
    from handrecon.data.readers import create_reader
    from handrecon.engine import predict_dataset

    reader = create_reader("ih26m", procedural_root, "val", hand_model)
    seen = {}
    for framing in FRAMINGS:
        pred = predict_dataset(_FocalModel(), reader, batch_size=3, progress=False, framing=framing)
        expected = [crop_to_input(reader[i], _FocalModel.input_size, framing=framing)["focal"][0] for i in range(len(reader))]
        np.testing.assert_allclose(pred["verts"][:, 0, 0], expected, rtol=1e-6)
        seen[framing] = pred["verts"][:, 0, 0]
    assert not np.allclose(seen["hands"], seen["image"])  # the hands fill more of a hand crop


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(tmp_path, mano_dir, procedural_root):
    val = f"val={{dataset: procedural, root: {procedural_root}, split: val, max_samples: 5, images: 0}}"  # 3 + 2 per rank
    cfg = _config(tmp_path, mano_dir, procedural_root, "train.max_steps=3", "data.batch_size=4", val)
    from handrecon.config import save_config

    save_config(cfg, tmp_path / "config.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "tests" / "ddp_worker.py")]
    done = subprocess.run([*cmd, "regressor", str(tmp_path / "config.yaml")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [load_file(str(Path(cfg.out) / f"rank{r}.safetensors")) for r in (0, 1)]
    saved = _weights(cfg.out)
    initial = json.loads((Path(cfg.out) / "rank0.json").read_text())
    assert all(torch.equal(ranks[0][k], ranks[1][k]) and torch.equal(ranks[0][k], saved[k]) for k in saved)
    # the ranks read different samples (each its own share of every batch)
    seen = [set(json.loads((Path(cfg.out) / f"rank{r}.json").read_text())["samples"]) for r in (0, 1)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert initial["world_size"] == 2
    # validation split over the ranks gives the metrics of one process scoring every sample
    metrics = [json.loads((Path(cfg.out) / f"rank{r}.json").read_text())["metrics"] for r in (0, 1)]
    assert "interwild/mpvpe_all_wrist_mm" in metrics[0] and metrics[0].keys() == metrics[1].keys()
    assert all(metrics[1][k] == pytest.approx(v, rel=0, abs=0, nan_ok=True) for k, v in metrics[0].items())
    single = Trainer(_config(tmp_path / "single", mano_dir, procedural_root, val), progress=False)
    try:
        ckpt.load_weights(single.model, ckpt.step_dir(cfg.out, 3), strict=True)
        alone = single.validate()
    finally:
        single.close()
    assert alone.keys() == metrics[0].keys()
    for key, value in alone.items():
        assert metrics[0][key] == pytest.approx(value, rel=1e-5, nan_ok=True), key


@pytest.mark.slow
def test_dir_recipe_two_process_gloo_run_resumes_exactly(tmp_path, mano_dir, procedural_root):
    """configs/dir.yaml at tiny size on 2 gloo processes: a run stopped after its step-2 checkpoint
    and resumed ends with the weights of the uninterrupted 4-step run."""
    from handrecon.config import save_config

    tiny = [
        f"out={tmp_path / 'a'}", f"mano_dir={mano_dir}", "model.name=dir_tiny", "model.options.pretrained=''",
        f"data.sources.ih26m={{kind: ih26m, root: {procedural_root}, split: train}}", "data.batch_size=4", "data.num_workers=0",
        "train.max_steps=4", "train.ckpt_every=2", "train.keep_last=5", "train.device=cpu", "val.dataset=procedural",
        f"val.root={procedural_root}", "val.max_samples=4", "val.images=0",
    ]  # fmt: skip
    cfg = load_config(Experiment, REPO / "configs" / "dir.yaml", tiny)
    assert (cfg.optim.name, cfg.optim.lr, cfg.schedule.name, cfg.model.options["root_joint"]) == ("adamw", 5e-4, "cosine", 0)
    save_config(cfg, tmp_path / "a.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "tests" / "ddp_worker.py")]
    done = subprocess.run([*cmd, "regressor", str(tmp_path / "a.yaml")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_a, run_b = Path(cfg.out), tmp_path / "b"
    (run_b / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt.step_dir(run_a, 2), ckpt.step_dir(run_b, 2))
    save_config(dataclasses.replace(cfg, out=str(run_b)), tmp_path / "b.yaml")
    shutil.copy(tmp_path / "b.yaml", run_b / "config.yaml")
    done = subprocess.run([*cmd, "regressor", str(tmp_path / "b.yaml"), "resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    final_a, final_b = _weights(ckpt.step_dir(run_a, 4)), _weights(ckpt.step_dir(run_b, 4))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert any(not torch.equal(final_a[k], _weights(ckpt.step_dir(run_a, 2))[k]) for k in final_a)
    assert all(torch.equal(final_b[k], v) for k, v in load_file(str(run_b / "rank1.safetensors")).items())


def test_each_torchrun_rank_gets_its_own_gpu(monkeypatch):
    from handrecon.engine.distributed import dist_info, pick_device

    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("RANK", "7")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert pick_device("cuda") == torch.device("cuda", 3)  # not cuda:0 on every rank
    assert pick_device("cuda:1") == torch.device("cuda", 1)  # an explicit index is kept
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == (torch.device("cuda", 3) if torch.cuda.is_available() else torch.device("cpu"))
    assert (dist_info().rank, dist_info().world_size, dist_info().local_rank) == (7, 8, 3)
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert pick_device("cuda") == torch.device("cuda", 0) and not dist_info().enabled
