"""The generation ablation: a ControlNet trained per row with the row's pairs and settings, resumed
row by row; the inference-only variant on one reused ControlNet."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from handrecon.config import load_config
from handrecon.engine import checkpoint as ckpt
from handrecon.errors import UserError
from synth.ablation import Ablation, cache_job, final_checkpoint, row_folder, rows, train_config
from synth.settings import SETTINGS_FILE

REPO = Path(__file__).resolve().parents[1]
ROWS = ["w/o all", "+SE"]


def _overrides(out, mano_dir, root, inception_weights, *extra):
    """Two training steps (a checkpoint after each), two generated samples, four real ones, per row."""
    return [
        f"out={out}", f"job.mano_dir={mano_dir}", f"job.labels.root={root}", "job.dataset=procedural", "job.num=2", "job.shard_size=2",
        "job.batch_size=2", "job.generator.inference_steps=1", "job.device=cpu",
        f"train.data.sources.real.root={root}", "train.data.dataset=procedural", "train.data.batch_size=2", "train.data.num_workers=0",
        "train.train.max_steps=2", "train.train.ckpt_every=1", "train.train.keep_last=5", "train.train.val_every=100",
        "train.train.val_samples=1", "train.train.val_inference_steps=1", "train.train.device=cpu", "train.optim.lr=1e-3",
        f"eval.real={{kind: ih26m, root: {root}, split: test}}", "eval.max_real=4", f"eval.inception_weights={inception_weights}",
        "eval.kid_subsets=3", "eval.device=cpu", "alphas=[1.5]", *extra,
    ]  # fmt: skip


def _weights(controlnet: Path) -> dict[str, torch.Tensor]:
    return load_file(str(controlnet / "diffusion_pytorch_model.safetensors"))


def _files(folder: Path, pattern: str = "*") -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob(pattern)) if p.is_file()}


def _untouched(cfg, names) -> dict:
    """The checkpoints and the shards (tars and markers) of rows `names`, bytes and times."""
    return {name: (_files(row_folder(cfg, name) / "train" / "checkpoints"), _files(row_folder(cfg, name) / "cache", "shard-*")) for name in names}


def test_rows_train_with_their_own_settings_in_stable_folders(tmp_path):
    cfg = load_config(Ablation, None, [f"out={tmp_path}", "alphas=[1, 2.5]", "only=['+SE+SF+AE a=2.5', 'w/o all']", "train.out=elsewhere"])
    assert [name for name, _ in rows(cfg)] == ["w/o all", "+SE+SF+AE a=2.5"]  # table order, whatever the order of `only`
    base = train_config(cfg, "w/o all")
    assert base.out == str(tmp_path / "wo_all" / "train") and row_folder(cfg, "+SE+SF+AE a=2.5") == tmp_path / "pSEpSFpAE_a2.5"
    assert (base.generator.prompt_field, base.generator.structural_fusion, base.generator.hand_bias) == ("caption", False, 0.0)
    biased = train_config(cfg, "+SE+SF+AE a=2.5").generator
    assert (biased.prompt_field, biased.structural_fusion, biased.hand_bias) == ("prompt", True, 2.5)
    assert biased.condition_style == cfg.train.generator.condition_style and cfg.train.generator.hand_bias == 2.0  # the section is untouched
    job = cache_job(cfg, "+SE+SF+AE a=2.5")
    assert job.controlnet == str(tmp_path / "pSEpSFpAE_a2.5" / "train" / "checkpoints" / "step_00001000" / "controlnet")
    assert job.generator.values() == {}  # the settings come with the row's ControlNet
    reused = load_config(Ablation, None, [f"out={tmp_path}", "reuse=cn", "train.train.max_steps=null"])
    job = cache_job(reused, "w/o all")
    assert job.controlnet == "cn" and job.generator.values() == {"prompt_field": "caption", "structural_fusion": False, "hand_bias": 0.0}


@pytest.mark.slow
def test_each_row_trains_its_controlnet_and_a_rerun_resumes_row_by_row(
    tmp_path, procedural_root, mano_dir, hand_model, inception_weights, monkeypatch, capsys
):
    import synth.ablation
    import synth.cache
    import synth.train
    from handrecon.data.augment import crop_to_input
    from synth.ablation import run_ablation
    from synth.semantics.chain import SemanticsChain, SemanticsConfig

    out = tmp_path / "ablation"
    only = "only=[" + ", ".join(f"'{name}'" for name in ROWS) + "]"
    cfg = load_config(Ablation, None, _overrides(out, mano_dir, procedural_root, inception_weights, only))
    # the pairs each row's training drew: (sample, prompt) by row folder
    pairs: dict[str, list] = {}
    current: list[list] = [[]]
    train_row, pair_of = synth.ablation.train_row, synth.train.PairTransform.__call__

    def recording_train_row(row_cfg, progress=True):
        current[0] = pairs.setdefault(Path(row_cfg.out).parent.name, [])
        return train_row(row_cfg, progress)

    def recording_pair(self, sample, index, repeat=0):
        pair = pair_of(self, sample, index, repeat)
        current[0].append((sample, pair["prompt"]))
        return pair

    monkeypatch.setattr(synth.ablation, "train_row", recording_train_row)
    monkeypatch.setattr(synth.train.PairTransform, "__call__", recording_pair)
    first = run_ablation(cfg, progress=False)

    # (a) each row's ControlNet carries the row's settings, generated with them, and the weights differ
    toggles = dict(rows(cfg))
    assert [r["row"] for r in first] == ROWS
    controlnets = {}
    for r in first:
        controlnet = final_checkpoint(train_config(cfg, r["row"])) / "controlnet"
        saved = json.loads((controlnet / SETTINGS_FILE).read_text())
        assert {k: saved[k] for k in toggles[r["row"]]} == toggles[r["row"]]
        assert saved["condition_style"] == "parts" and saved["hand_bias_targets"] == "both"  # the shared training section's
        assert json.loads((controlnet / "config.json").read_text())["structural_fusion"] is toggles[r["row"]]["structural_fusion"]
        manifest = json.loads((row_folder(cfg, r["row"]) / "cache" / "manifest.json").read_text())
        assert manifest["generator"]["controlnet"] == str(controlnet) and manifest["generator"]["overrides"] == {"inference_steps": 1}
        assert manifest["generator"]["settings"]["hand_bias"] == toggles[r["row"]]["hand_bias"]
        assert r["mode"] == "retrained" and r["train_seconds"] > 0 and r["generate_seconds"] > 0 and not r["train_resumed_from"]
        controlnets[r["row"]] = _weights(controlnet)
    x, y = controlnets["w/o all"], controlnets["+SE"]
    assert x.keys() == y.keys() and any(not torch.equal(x[k], y[k]) for k in x)  # same init, data and seed: the prompts differ
    table = (out / "ablation.md").read_text().splitlines()
    assert table[0].startswith("Retrained: each row trains its own ControlNet (2 steps, seed 0")
    assert table[2].startswith("| row | mode | fid | kid | fid_h | kid_h |") and table[2].endswith("| training s | generation s |")
    assert [line.split(" | ")[:2] for line in table[4:]] == [[f"| {name}", "retrained"] for name in ROWS]
    assert [r["prompt_field"] for r in json.loads((out / "ablation.json").read_text())] == ["caption", "prompt"]
    assert not (out / "metrics_vs_alpha.png").exists()  # no +SE+SF row to plot against alpha

    # (b) the training pairs: raw captions in 'w/o all', composed prompts in '+SE' (two steps of two pairs each)
    chain = SemanticsChain(SemanticsConfig(tokenizer="tiny"), hand_model)
    for folder, field, other in (("wo_all", "caption", "prompt"), ("pSE", "prompt", "caption")):
        assert len(pairs[folder]) == 4
        for sample, prompt in pairs[folder]:
            record = chain([{**crop_to_input(sample, (64, 64), 2.5), "source": "procedural"}])[0]
            assert prompt == record[field] != record[other], folder

    # (c) a rerun trains and generates nothing again, and reports the recorded times
    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(synth.ablation, "GeneratorTrainer", lambda *a, **k: pytest.fail("a finished row was trained again"))
        m.setattr(synth.cache, "CacheWriter", lambda *a, **k: pytest.fail("a finished cache was generated again"))
        again = run_ablation(cfg, progress=False)
    err = capsys.readouterr().err
    assert err.count("exists, not trained again") == 2 and err.count("is complete, not generated again") == 2
    assert [(r["train_seconds"], r["generate_seconds"], r["fid"]) for r in again] == [(r["train_seconds"], r["generate_seconds"], r["fid"]) for r in first]

    # an interrupted row: '+SE' killed after its first checkpoint, before generating; the other row stays as it is
    se = train_config(cfg, "+SE")
    kept = _untouched(cfg, ["w/o all"])
    tars = {p.name: p.read_bytes() for p in (row_folder(cfg, "+SE") / "cache").glob("shard-*.tar")}
    ckpt_path = final_checkpoint(se)
    shutil.rmtree(ckpt_path)
    shutil.rmtree(row_folder(cfg, "+SE") / "cache")
    assert ckpt.latest_checkpoint(se.out) == ckpt.step_dir(se.out, 1)
    resumed = run_ablation(cfg, progress=False)
    assert resumed[1]["train_resumed_from"] == 1 and "(resumed at step 1)" in (out / "ablation.md").read_text().splitlines()[5]
    assert pairs["pSE"][4:] and len(pairs["pSE"]) == 6  # one more step of two pairs
    weights = _weights(ckpt_path / "controlnet")
    assert all(torch.equal(weights[k], controlnets["+SE"][k]) for k in weights)  # the uninterrupted run's weights, exactly
    assert {p.name: p.read_bytes() for p in (row_folder(cfg, "+SE") / "cache").glob("shard-*.tar")} == tars
    assert _untouched(cfg, ["w/o all"]) == kept

    # a row folder trained with another training config is refused before anything runs
    other = load_config(Ablation, None, _overrides(out, mano_dir, procedural_root, inception_weights, only, "train.optim.lr=1e-2"))
    with pytest.raises(UserError, match=r"wo_all/train was trained with another training config \(it differs in optim.lr\)"):
        run_ablation(other, progress=False)


@pytest.mark.slow
def test_reuse_generates_every_row_with_one_controlnet_and_says_so(tmp_path, procedural_root, mano_dir, inception_weights, capsys):
    from synth.models.components import tiny_components
    from synth.settings import GeneratorSettings, save_settings

    controlnet = tmp_path / "controlnet"
    tiny_components(seed=0).controlnet.save_pretrained(controlnet)
    save_settings(GeneratorSettings(resolution=64), controlnet)
    spec = importlib.util.spec_from_file_location("ablate_generation", REPO / "tools" / "ablate_generation.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "ablation"
    only = "only=['w/o all', '+SE+SF+AE a=1.5']"
    assert tool.main(["--set", *_overrides(out, mano_dir, procedural_root, inception_weights, only), "--reuse", str(controlnet)]) == 0
    printed = capsys.readouterr().out
    table = (out / "ablation.md").read_text()
    assert table in printed
    lines = table.splitlines()
    assert lines[0].startswith(f"Inference-only: every row generates with one ControlNet ({controlnet})")
    assert [line.split(" | ")[:2] for line in lines[4:]] == [["| w/o all", "inference-only"], ["| +SE+SF+AE a=1.5", "inference-only"]]
    assert all(line.split(" | ")[-2] == "-" for line in lines[4:])  # no training time
    assert not list(out.glob("*/train"))
    expected = {"w/o all": {"prompt_field": "caption", "structural_fusion": False, "hand_bias": 0.0, "inference_steps": 1},
                "+SE+SF+AE a=1.5": {"prompt_field": "prompt", "structural_fusion": True, "hand_bias": 1.5, "inference_steps": 1}}  # fmt: skip
    cfg = load_config(Ablation, None, [f"out={out}", "alphas=[1.5]"])
    for name, overrides in expected.items():
        manifest = json.loads((row_folder(cfg, name) / "cache" / "manifest.json").read_text())
        assert manifest["generator"]["controlnet"] == str(controlnet) and manifest["generator"]["overrides"] == overrides
    assert [r["mode"] for r in json.loads((out / "ablation.json").read_text())] == ["inference-only"] * 2
    assert (out / "metrics_vs_alpha.png").is_file() and "metrics_vs_alpha.png" in printed
