"""The cache job (plan, shards, resume across ranks, refusal), its filter, and live generation."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handrecon.config import ConfigError, load_config
from handrecon.data.augment import crop_to_input
from handrecon.data.readers import create_reader
from handrecon.data.shards import ShardSource
from handrecon.errors import UserError
from handrecon.hand_model.mano import HandModel
from synth.cache import CacheJob, _mask_edges, done_path, load_or_plan, shard_path
from synth.settings import GeneratorOverrides

REPO = Path(__file__).resolve().parents[1]


def _args(out, mano_dir, root, *extra):
    # --set rather than --out / --num: torchrun's own parser reads abbreviations of its options (--num -> --numa-binding)
    return ["--set", f"out={out}", "num=8", f"mano_dir={mano_dir}", f"labels.root={root}", "dataset=procedural", "shard_size=2",
            "batch_size=2", "generator.inference_steps=1", "device=cpu", *extra]  # fmt: skip


def _cache(args, ranks):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else [sys.executable]
    return subprocess.run([*launcher, str(REPO / "tools" / "synth_cache.py"), *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_rank_cache_resumes_without_touching_finished_shards(tmp_path, mano_dir, procedural_root, hand_model):
    out = tmp_path / "cache"
    done = _cache(_args(out, mano_dir, procedural_root), ranks=2)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    keys = [s["key"] for s in manifest["samples"]]
    assert len(keys) == 8 and len(list(out.glob("shard-*.tar"))) == 4
    # a job killed mid-way: shards 1 and 3 unfinished (3 without its tar, 1 with a stale temp file),
    # shard 2's tar lost after its marker was written, no index yet
    before = {j: shard_path(out, j).read_bytes() for j in (0, 2)}
    markers = {j: done_path(out, j).read_bytes() for j in (0, 2)}
    for j in (1, 3):
        done_path(out, j).unlink()
    shard_path(out, 3).unlink()
    shard_path(out, 2).unlink()
    (out / "shard-000001.tar.tmp").write_bytes(b"partial")
    (out / "index.json").unlink()
    again = _cache(_args(out, mano_dir, procedural_root), ranks=2)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout[again.stdout.index("{") :])["reused_by_this_rank"] == 1  # rank 0: shard 0 kept, 2 redone
    assert shard_path(out, 0).read_bytes() == before[0] and done_path(out, 0).read_bytes() == markers[0]  # untouched
    assert shard_path(out, 2).read_bytes() == before[2]  # made again from the same plan and seeds
    source = ShardSource(out, hand_model)
    assert sorted(source.ids) == keys  # every planned sample exactly once
    # labels are the crop of the planned source sample at the generation size
    reader = create_reader("ih26m", procedural_root, "train", hand_model, load_images=False)
    row = manifest["samples"][5]
    sample = source[source.ids.index(row["key"])]
    crop = crop_to_input(reader[row["source_index"]], (64, 64), 2.5)
    for key in ("mano_pose", "mano_transl", "focal", "princpt", "joints2d"):
        np.testing.assert_allclose(sample[key], crop[key], rtol=1e-5, atol=1e-5)
    assert sample["image"].shape == (64, 64, 3)
    assert source.labels(0)["generator"] == manifest["generator_hash"]


@pytest.mark.slow
def test_a_rerun_names_and_redoes_damaged_shards_only(tmp_path, mano_dir, procedural_root, hand_model):
    out = tmp_path / "cache"
    args = _args(out, mano_dir, procedural_root, "num=10")  # 5 shards
    done = _cache(args, ranks=1)
    assert done.returncode == 0, done.stderr[-2000:]
    tars = {j: shard_path(out, j).read_bytes() for j in range(5)}
    markers = {j: json.loads(done_path(out, j).read_text()) for j in range(5)}
    assert all(markers[j]["bytes"] == len(tars[j]) and markers[j]["sha256"] == hashlib.sha256(tars[j]).hexdigest() for j in range(5))
    # 0: truncated to half; 1: bytes of an image flipped, same size; 2: marker torn;
    # 3: a marker of an older version (no size or checksum) over a sound tar; 4: untouched
    shard_path(out, 0).write_bytes(tars[0][: len(tars[0]) // 2])
    offset, size = next(s["jpg"] for s in json.loads((out / "index.json").read_text())["samples"] if s["shard"] == "shard-000001.tar")
    flipped = bytearray(tars[1])
    flipped[offset + size // 2 : offset + size // 2 + 8] = bytes(255 - b for b in flipped[offset + size // 2 : offset + size // 2 + 8])
    shard_path(out, 1).write_bytes(bytes(flipped))
    done_path(out, 2).write_text('{"shard": 2, "plann')
    done_path(out, 3).write_text(json.dumps({k: v for k, v in markers[3].items() if k not in ("bytes", "sha256")}))
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for j in (3, 4) for p in (shard_path(out, j), done_path(out, j))}

    again = _cache(args, ranks=2)  # rank 1 owns shards 1 and 3: rank 0 waits until they verify
    assert again.returncode == 0, again.stderr[-2000:]
    reports = sorted(line for line in again.stderr.splitlines() if line.endswith("; regenerating"))
    assert len(reports) == 3
    assert reports[0] == f"{shard_path(out, 0)}: {len(tars[0]) // 2} bytes, marker says {len(tars[0])}; regenerating"
    digests = hashlib.sha256(flipped).hexdigest()[:12], markers[1]["sha256"][:12]
    assert reports[1] == f"{shard_path(out, 1)}: sha256 {digests[0]}..., marker says {digests[1]}...; regenerating"
    assert reports[2].startswith(f"{shard_path(out, 2)}: marker {done_path(out, 2).name} is unreadable (")
    assert json.loads(again.stdout[again.stdout.index("{") :])["generated_by_this_rank"] == 2  # rank 0: shards 0 and 2
    for j in (0, 1, 2):  # made again from the same plan and seeds, with a new marker
        assert shard_path(out, j).read_bytes() == tars[j]
        assert json.loads(done_path(out, j).read_text())["sha256"] == markers[j]["sha256"]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in kept} == kept
    assert len(ShardSource(out, hand_model)) == 10


def test_a_folder_refuses_another_job(tmp_path, mano_dir, procedural_root, hand_model):
    job = CacheJob(out=str(tmp_path), num=4, mano_dir=str(mano_dir), dataset="procedural")
    job.labels.root = str(procedural_root)
    first = load_or_plan(job, hand_model, True)
    assert load_or_plan(job, hand_model, True) == first  # same job: the same plan
    job.seed = 1
    with pytest.raises(UserError, match="cached with another job or generator"):
        load_or_plan(job, hand_model, True)


def test_bad_jobs_fail_before_anything_is_written(tmp_path, mano_dir, procedural_root, hand_model):
    from synth.cache import run

    for bad, message in (({"shard_size": 0}, "shard_size must be >= 1, got 0"), ({"batch_size": -1}, "batch_size must be")):
        with pytest.raises(ValueError, match=message):
            CacheJob(**bad)
    job = CacheJob(out=str(tmp_path / "typo"), num=4, mano_dir=str(mano_dir), dataset="procedural", controlnet=str(tmp_path / "nope"))
    job.labels.root = str(procedural_root)
    with pytest.raises(UserError, match="controlnet: no folder at"):
        run(job, progress=False)
    assert not (tmp_path / "typo").exists()  # no manifest hashed over the mistyped path


def test_a_controlnet_generates_only_on_the_base_it_was_trained_on(tmp_path, mano_dir, procedural_root):
    # the run's config.yaml beside the controlnet folder records its base (and the seed that
    # draws the random tiny one): another base, or another tiny one, is refused before anything
    # is written; the same base passes that check (and the run then fails on the empty folder)
    from synth.cache import run

    controlnet = tmp_path / "run" / "checkpoints" / "step_00000010" / "controlnet"
    controlnet.mkdir(parents=True)
    other = tmp_path / "other_base"
    other.mkdir()
    for trained, job_keys, message in (
        ({"base": "tiny"}, {"base": str(other)}, "base: the ControlNet .* was trained on base tiny .*: set base=tiny"),
        ({"base": str(other)}, {}, f"base: .* this job's base is tiny: set base={other}"),
        ({"base": "tiny"}, {"seed": 1}, "seed: .* train.seed=3 .* set seed=3"),
    ):
        (controlnet.parent / "config.yaml").write_text(json.dumps({"model": trained, "train": {"seed": 3}}))
        job = CacheJob(out=str(tmp_path / "cache"), num=2, mano_dir=str(mano_dir), dataset="procedural", controlnet=str(controlnet), **{"seed": 3, **job_keys})
        job.labels.root = str(procedural_root)
        with pytest.raises(UserError, match=message):
            run(job, progress=False)
        assert not (tmp_path / "cache").exists()
    (controlnet.parent / "config.yaml").write_text(json.dumps({"model": {"base": str(other)}, "train": {"seed": 3}}))
    job = CacheJob(out=str(tmp_path / "cache"), num=2, mano_dir=str(mano_dir), dataset="procedural", controlnet=str(controlnet), base=os.path.relpath(other), seed=1)
    job.labels.root = str(procedural_root)
    with pytest.raises(Exception) as failed:
        run(job, progress=False)
    assert "was trained on base" not in str(failed.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("generator.crop_margin=-1", "generator.crop_margin must be > 0, got -1.0"),
        ("generator.crop_margin=.inf", "generator.crop_margin must be finite, got inf"),
        ("generator.guidance_scale=-0.5", "generator.guidance_scale must be >= 0, got -0.5"),
        ("generator.guidance_scale=.nan", "generator.guidance_scale must be finite, got nan"),
        ("generator.hand_bias=.inf", "generator.hand_bias must be finite, got inf"),
        ("generator.hand_bias_targets=vae", "invalid value 'vae' for 'generator.hand_bias_targets' (choices: none, unet, controlnet, both)"),
        ("generator.inference_steps=0", "generator.inference_steps must be >= 1, got 0"),
        ("generator.resolution=100", "generator.resolution must be a multiple of 8 or null, got 100"),
        ("hand_bias=2", "'hand_bias': a generator setting: it comes from the ControlNet folder now; override it with generator.hand_bias=..."),
        ("filter.threshold=.nan", "filter.threshold must be finite, got nan"),
    ],
)
def test_out_of_range_settings_are_refused_by_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(CacheJob, overrides=[override])


def test_edge_settings_that_mean_something_are_accepted():
    keys = ["guidance_scale=0", "hand_bias=-1", "hand_bias_targets=none", "crop_margin=0.5", "fusion_resolutions=[]"]
    job = load_config(CacheJob, overrides=[f"generator.{k}" for k in keys])
    assert job.generator.values() == {"guidance_scale": 0, "hand_bias": -1, "hand_bias_targets": "none", "crop_margin": 0.5,
                                      "fusion_resolutions": []}  # 0: no guidance; []: every resolution (null: the ControlNet's)


def test_a_changed_label_source_is_refused(tmp_path, mano_dir, procedural_root, hand_model):
    from synth.cache import MANIFEST, run

    job = CacheJob(out=str(tmp_path), num=2, shard_size=2, batch_size=2, generator=GeneratorOverrides(inference_steps=1), device="cpu",
                   mano_dir=str(mano_dir), dataset="procedural")  # fmt: skip
    job.labels.root = str(procedural_root)
    manifest = load_or_plan(job, hand_model, True)
    manifest["samples"][1]["source_id"] = "not-that-sample"  # as if the dataset on disk had been reordered
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="the label source changed"):
        run(job, progress=False)
    assert not shard_path(tmp_path, 0).exists()


def test_mask_edge_filter_keeps_images_showing_the_outline():
    cond = np.zeros((32, 32, 3), np.uint8)
    cond[8:24, 8:24] = 200
    drawn = np.full((32, 32, 3), 90, np.uint8)
    drawn[8:24, 8:24] = 250  # the hand region stands out: strong gradient on the outline
    keep, score = _mask_edges(drawn, cond, 1.2)
    assert keep and score > 5
    noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    keep, score = _mask_edges(noise, cond, 1.2)
    assert not keep and 0.7 < score < 1.2


@pytest.mark.slow
def test_live_source_generates_labelled_samples(mano_dir, procedural_root):
    from synth.live import live_source

    job = CacheJob(mano_dir=str(mano_dir), dataset="procedural", generator=GeneratorOverrides(inference_steps=1), device="cpu")
    job.labels.root = str(procedural_root)
    with live_source(job, length=4, timeout=300) as source:
        samples = [source[i] for i in range(2)]
    assert source.stats()["taken"] == 2
    for s in samples:
        assert s["source"] == "live" and s["image"].shape == (64, 64, 3) and s["image"].dtype == np.uint8
        assert tuple(s["image_size"]) == (64, 64) and s["mano_valid"].any() and s["sample_id"].startswith("live-")
    reader = create_reader("ih26m", procedural_root, "train", HandModel(mano_dir))
    assert set(samples[0]) == set(crop_to_input(reader[0], (64, 64), 2.5)) | {"source"}  # the keys of a label sample: batches collate


@pytest.mark.slow
def test_train_tool_mixes_a_live_source_and_logs_its_counts(tmp_path, mano_dir, procedural_root):
    """tools/train.py with `kind: live`: the tiny generator runs beside training, a quarter of each
    batch is its output, and produced / taken / reused go to TensorBoard beside samples/s."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    live = (f"{{kind: live, options: {{labels: {{kind: ih26m, root: {procedural_root}, split: train}}, dataset: procedural, "
            "generator: {inference_steps: 1}, device: cpu, policy: reuse, length: 64}}")  # fmt: skip
    args = ["--set", f"out={run}", f"mano_dir={mano_dir}", "model.name=dir_tiny", f"data.sources.real={{kind: ih26m, root: {procedural_root}}}",
            f"data.sources.gen={live}", "data.ratios={real: 0.75, gen: 0.25}", "data.batch_size=8", "data.num_workers=0",
            "train.max_steps=3", "train.log_every=1", "train.device=cpu"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    scalars = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert scalars["data/ratio_gen"] == [0.25] * 3 and scalars["data/ratio_real"] == [0.75] * 3
    produced, taken, reused = scalars["data/gen_produced"], scalars["data/gen_taken"], scalars["data/gen_reused"]
    assert [t + r for t, r in zip(taken, reused)] == [2.0, 4.0, 6.0]  # two live samples a batch, fresh or reused
    assert all(p >= t >= 1 for p, t in zip(produced, taken)) and "train/samples_per_s" in scalars
