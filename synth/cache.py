"""Caching generations ahead of training: a planned, sharded, resumable, multi-rank job.

1. **Plan.** `manifest.json` fixes every sample up front: the label sample it is drawn from (an
   index into a source dataset, chosen by the job seed), its prompt (prompt cache or the rules
   chain) and its generation seed, the generator it uses (`generator`: base, ControlNet, the
   resolved `GeneratorSettings` and this job's overrides), the hash of the generator (those
   settings and the ControlNet's files) and of the job config. A folder whose manifest has
   other hashes is refused.
2. **Shards.** Shard j holds samples [j*S, (j+1)*S); rank r of K generates the shards with
   j % K == r. A shard is written under a temporary name and renamed when complete, then its
   done marker `shard-XXXXXX.done.json` is written: its stats, the samples written, and the
   tar's size (`bytes`) and `sha256`. A rerun verifies each finished shard of its rank against
   its marker (size, checksum, and the sample count read from the tar) and skips it, so a killed
   job redoes only unfinished shards and finished ones keep their bytes. A damaged shard (size
   or checksum differs, unreadable tar, unreadable marker) is reported in one line naming it,
   its marker removed and the shard made again. A marker of an older version has no size or
   checksum: its shard is verified by reading the tar (complete members, sample count).
3. **Index.** When every shard is done and verified, `index.json` gives random access
   (`ShardSource`).

Labels are the crop of the source sample at the generation resolution (`crop_to_input` with
the settings' `crop_margin`), i.e. exactly the camera and MANO parameters the condition was
rendered from. An optional quality filter (a registry) drops samples; the rejections are counted
in the stats.

Generator settings (`synth/settings.py`) come from the ControlNet folder (`controlnet: null`:
the defaults); a job changes one only by setting it under `generator` (e.g.
`generator.hand_bias=1.0`), which the job prints and which enters the manifest and, when it
changes a value, the generator hash.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from handrecon.config import FieldError, check_fields, config_to_dict
from handrecon.data.loader import SourceConfig, build_source
from handrecon.data.shards import build_index, encode_image, labels_from_sample, scan_shard, write_shard
from handrecon.errors import UserError
from handrecon.hand_model.mano import HandModel
from handrecon.io import atomic_write_json, file_sha256

from .settings import GeneratorOverrides, GeneratorSettings, apply_overrides, describe_settings, read_settings

MANIFEST = "manifest.json"


@dataclass
class FilterConfig:
    name: str = "none"  # none | mask_edges
    threshold: float = 1.2  # mask_edges: image-gradient ratio on the hand outline vs elsewhere; finite

    def __post_init__(self) -> None:
        if self.name not in FILTERS:
            raise FieldError("name", f"one of {sorted(FILTERS)}", self.name)
        check_fields(self, "finite", "threshold")


@dataclass
class CacheJob:
    out: str = "runs/synth_cache"
    num: int = 256  # samples planned; >= 1
    shard_size: int = 32  # >= 1
    seed: int = 0  # >= 0
    mano_dir: str = ""
    labels: SourceConfig = field(default_factory=lambda: SourceConfig(kind="ih26m", root="", split="train"))  # label source
    dataset: str = ""  # the label dataset's name in rules prompts (procedural, ih26m, ...); default: labels.kind
    prompts: str = ""  # a prompt cache .jsonl keyed by the label samples' ids; empty: the rules chain
    base: str = "tiny"  # tiny | a Stable Diffusion 1.x diffusers folder: the ControlNet's own (checked against its run's config.yaml)
    controlnet: str | None = None  # a trained ControlNet folder (RUN/checkpoints/step_XXXXXXXX/controlnet): its weights and settings; null: untrained, default settings
    generator: GeneratorOverrides = field(default_factory=GeneratorOverrides)  # explicit overrides of the ControlNet's settings (synth/settings.py)
    batch_size: int = 8  # images per pipeline call; >= 1
    device: str = "auto"
    filter: FilterConfig = field(default_factory=FilterConfig)

    #: generator settings of the earlier flat form: they come from the ControlNet folder now
    __moved_keys__: ClassVar[dict[str, str]] = {
        name: f"a generator setting: it comes from the ControlNet folder now; override it with generator.{name}=..."
        for name in ("prompt_field", "structural_fusion", "crop_margin", "hand_bias", "hand_bias_targets", "inference_steps", "guidance_scale")
    }

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "num", "shard_size", "batch_size")
        check_fields(self, ">= 0", "seed")


# ---------------------------------------------------------------------------------- filters
def _mask_edges(image: np.ndarray, condition: np.ndarray, threshold: float) -> tuple[bool, float]:
    """Is the rendered hand outline visible in the image? The mean image-gradient magnitude on
    the outline of the condition's hand mask over the mean elsewhere."""
    gray = image.astype(np.float32).mean(-1)
    grad = np.hypot(*np.gradient(gray))
    mask = condition.max(-1) > 0
    outline = mask ^ np.pad(mask, 1, mode="edge")[2:, 1:-1] | mask ^ np.pad(mask, 1, mode="edge")[1:-1, 2:]
    if not outline.any() or outline.all():
        return True, float("nan")
    score = float(grad[outline].mean() / max(grad[~outline].mean(), 1e-6))
    return score >= threshold, score


FILTERS: dict[str, Callable[[np.ndarray, np.ndarray, float], tuple[bool, float]] | None] = {"none": None, "mask_edges": _mask_edges}


# ---------------------------------------------------------------------------------- plan
def generator_settings(job: CacheJob) -> tuple[GeneratorSettings, dict[str, tuple[Any, Any]]]:
    """The job's generator settings: its ControlNet's (`controlnet: null`: the defaults) with the
    job's explicit overrides; and {key: (ControlNet's, job's)} for each override."""
    return apply_overrides(read_settings(job.controlnet), job.generator)


def generator_record(job: CacheJob) -> dict:
    """The manifest's `generator` entry: what generates, with which settings and overrides."""
    settings, changed = generator_settings(job)
    return {"base": job.base, "controlnet": job.controlnet, "settings": settings.to_dict(), "overrides": {k: v for k, (_, v) in changed.items()}}


def generator_hash(job: CacheJob) -> str:
    """What decides the generated pixels: base, ControlNet weights (and the files beside them),
    the resolved generator settings (an override that changes a value changes the hash)."""
    digest = hashlib.sha256()
    settings, _ = generator_settings(job)
    digest.update(json.dumps({"base": job.base, "controlnet": job.controlnet, "settings": settings.to_dict()}, sort_keys=True).encode())
    if job.controlnet:
        for file in sorted(Path(job.controlnet).glob("*")):
            if file.is_file():
                digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()[:16]


def _job_hash(job: CacheJob) -> str:
    """Every setting except where and how fast it runs (out, device, batch_size)."""
    data = {k: v for k, v in config_to_dict(job).items() if k not in ("out", "device", "batch_size")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def plan(job: CacheJob, hand_model: HandModel) -> dict:
    """The manifest (see the module docstring); pure function of the job and its inputs."""
    source = build_source(job.labels, hand_model, load_images=False)
    if len(source) == 0:
        raise UserError(f"the label source {job.labels.root} ({job.labels.kind}, split {job.labels.split}) has no samples")
    rng = np.random.default_rng(job.seed)
    picks = rng.integers(0, len(source), size=job.num)
    seeds = rng.integers(0, 2**31 - 1, size=job.num)
    ids = [str(source.get_meta(int(i))["sample_id"]) for i in picks]
    prompt_field = generator_settings(job)[0].prompt_field
    if job.prompts:
        from .semantics.cache import load_prompts

        records = load_prompts(job.prompts)
        missing = sorted({s for s in ids if s not in records})
        if missing:
            raise UserError(f"{job.prompts} has no prompt for label samples {missing[:5]}; run tools/semantics.py over {job.labels.root}")
        prompts = [records[s][prompt_field] for s in ids]
    else:
        from .semantics.chain import SemanticsChain, SemanticsConfig

        chain = SemanticsChain(SemanticsConfig(tagger="none"), hand_model)
        tag = job.dataset or job.labels.kind
        prompts = [r[prompt_field] for r in chain([{**source[int(i)], "source": tag} for i in picks])]
    return {
        "version": 1,
        "job_hash": _job_hash(job),
        "generator_hash": generator_hash(job),
        "generator": generator_record(job),
        "num": job.num,
        "shard_size": job.shard_size,
        "samples": [
            {"key": f"{k:08d}", "source_index": int(i), "source_id": s, "seed": int(seed), "prompt": p}
            for k, (i, s, seed, p) in enumerate(zip(picks, ids, seeds, prompts))
        ],
    }


def wait_until(ready: Callable[[], bool], poll_s: float = 2.0) -> None:
    """Block until `ready()`: the ranks of a cache job meet through the files they write, not
    collective calls, so a rank with more shards (or rank 0 planning a long job) never runs
    into a process-group timeout; torchrun stops the waiting ranks if another rank fails."""
    while not ready():
        time.sleep(poll_s)


def load_or_plan(job: CacheJob, hand_model: HandModel, is_main: bool, poll_s: float = 2.0) -> dict:
    """The folder's manifest, written by rank 0 on the first run (the other ranks wait for the
    file); a different job is refused."""
    out = Path(job.out)
    path = out / MANIFEST
    if is_main and not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, plan(job, hand_model))
    wait_until(path.is_file, poll_s)
    manifest = json.loads(path.read_text())
    expected = (_job_hash(job), generator_hash(job))
    if (manifest["job_hash"], manifest["generator_hash"]) != expected:
        raise UserError(
            f"{out} was cached with another job or generator (job {manifest['job_hash']}, generator {manifest['generator_hash']}; "
            f"this run: job {expected[0]}, generator {expected[1]}); use another --out"
        )
    return manifest


def shard_path(out: Path, j: int) -> Path:
    return out / f"shard-{j:06d}.tar"


def finished(out: Path, j: int) -> bool:
    """Shard j is complete: its marker (written after the tar's rename) and its tar exist."""
    return done_path(out, j).is_file() and shard_path(out, j).is_file()


def done_path(out: Path, j: int) -> Path:
    return out / f"shard-{j:06d}.done.json"


def shard_problem(out: Path, j: int) -> str | None:
    """What is wrong with finished shard j, as one line naming its tar; None when its tar is
    what its marker describes: size and sha256 (absent from older markers), then the samples
    read from the tar against the marker's count."""
    tar, done = shard_path(out, j), done_path(out, j)
    try:
        marker = json.loads(done.read_bytes())
    except (OSError, ValueError) as exc:
        return f"{tar}: marker {done.name} is unreadable ({exc})"
    kinds = {"written": int, "bytes": int, "sha256": str}
    if not isinstance(marker, dict) or "written" not in marker or any(not isinstance(marker.get(k, t()), t) for k, t in kinds.items()):
        return f"{tar}: marker {done.name} is not a shard marker (written, bytes, sha256)"
    size = tar.stat().st_size
    if "bytes" in marker and size != marker["bytes"]:
        return f"{tar}: {size} bytes, marker says {marker['bytes']}"
    if "sha256" in marker and (digest := file_sha256(tar)) != marker["sha256"]:
        return f"{tar}: sha256 {digest[:12]}..., marker says {marker['sha256'][:12]}..."
    try:
        count = len(scan_shard(tar))
    except UserError as exc:
        return str(exc)
    if count != marker["written"]:
        return f"{tar}: {count} samples, marker says {marker['written']}"
    return None


# ---------------------------------------------------------------------------------- generate
class CacheWriter:
    """Generates and writes the shards of one rank."""

    def __init__(self, job: CacheJob, hand_model: HandModel, device: torch.device):
        from .models.components import load_components
        from .pipeline import SesaHandPipeline

        self.job, self.hand_model, self.device = job, hand_model, device
        settings, _ = generator_settings(job)
        parts = load_components(job.base, job.controlnet, job.seed, **settings.fusion())
        self.pipe = SesaHandPipeline.from_components(parts, settings).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.settings, self.resolution = self.pipe.settings, self.pipe.resolution
        self.source = build_source(job.labels, hand_model)
        self.filter = FILTERS[job.filter.name]

    def shard(self, manifest: dict, j: int) -> dict:
        """Generate shard j and write it and its done marker; returns its stats."""
        job, out = self.job, Path(self.job.out)
        rows = manifest["samples"][j * job.shard_size : (j + 1) * job.shard_size]
        start, records, rejected, scores = time.perf_counter(), [], 0, []
        for b in range(0, len(rows), job.batch_size):
            batch = rows[b : b + job.batch_size]
            samples = [self.source[r["source_index"]] for r in batch]
            for row, sample in zip(batch, samples):
                if str(sample["sample_id"]) != row["source_id"]:
                    raise UserError(
                        f"{out / MANIFEST}: sample {row['key']} was planned from label sample {row['source_id']} at index "
                        f"{row['source_index']}, which now holds {sample['sample_id']}: the label source changed; use another --out"
                    )
            crops = [self.pipe.crop(sample) for sample in samples]
            gen = self.pipe.generate([r["prompt"] for r in batch], [r["seed"] for r in batch], samples=crops, hand_model=self.hand_model)
            for row, crop, image, cond in zip(batch, crops, gen.images, gen.conditions):
                if self.filter is not None:
                    keep, score = self.filter(image, cond, job.filter.threshold)
                    scores.append(score)
                    if not keep:
                        rejected += 1
                        continue
                labels = labels_from_sample(crop, prompt=row["prompt"], seed=row["seed"], generator=manifest["generator_hash"],
                                            source_id=row["source_id"])  # fmt: skip
                labels["sample_id"] = row["key"]
                records.append((row["key"], encode_image(image, "JPEG"), encode_image(cond, "PNG"), labels))
        tar = write_shard(shard_path(out, j), records)
        stats = {"shard": j, "planned": len(rows), "written": len(records), "rejected": rejected, "seconds": time.perf_counter() - start}
        if scores:
            stats["filter_scores"] = [round(s, 4) for s in scores]
        stats.update(bytes=tar.stat().st_size, sha256=file_sha256(tar))  # what a rerun verifies (shard_problem)
        atomic_write_json(done_path(out, j), stats)
        return stats


def check_trained_base(job: CacheJob) -> None:
    """Refuse a base other than the one the job's ControlNet was trained on, as its run's
    config.yaml (beside the controlnet folder) records it: `model.base`, and for the random tiny
    base, which its seed draws, `train.seed`."""
    import yaml

    config = Path(job.controlnet or ".").parent / "config.yaml"
    if not job.controlnet or not config.is_file():
        return
    trained = yaml.safe_load(config.read_text()) or {}
    base, seed = trained.get("model", {}).get("base"), trained.get("train", {}).get("seed")
    same = base == job.base if "tiny" in (base, job.base) else Path(str(base)).resolve() == Path(job.base).resolve()
    if base is not None and not same:
        raise UserError(f"base: the ControlNet {job.controlnet} was trained on base {base} (model.base in {config.resolve()}); this job's base is {job.base}: set base={base}")
    if base == "tiny" and seed is not None and seed != job.seed:
        raise UserError(f"seed: the ControlNet {job.controlnet} was trained on the tiny base drawn with train.seed={seed} ({config.resolve()}); this job's seed {job.seed} draws another: set seed={seed}")


def run(job: CacheJob, progress: bool = True) -> dict:
    """Plan (or reload) the job, generate this rank's unfinished shards, index when all are done."""
    from handrecon.engine.distributed import dist_info, pick_device

    for name in ("base", "controlnet"):  # before the manifest records a hash over a mistyped path
        folder = getattr(job, name)
        if folder and folder != "tiny" and not Path(folder).is_dir():
            raise UserError(f"{name}: no folder at {folder}")
    check_trained_base(job)
    if not job.mano_dir:
        raise UserError("mano_dir is not set: give the folder with MANO_RIGHT.pkl and MANO_LEFT.pkl")
    device, dist = pick_device(job.device), dist_info()  # no process group: see wait_until
    if dist.is_main:
        print(describe_settings(job.controlnet, generator_settings(job)[1]), file=sys.stderr, flush=True)
    hand_model = HandModel(job.mano_dir)
    manifest = load_or_plan(job, hand_model, dist.is_main)
    out = Path(job.out)
    shards = -(-manifest["num"] // manifest["shard_size"])
    ours, verified = range(dist.rank, shards, dist.world_size), set()
    for j in ours:
        if not finished(out, j):
            continue
        problem = shard_problem(out, j)
        if problem is None:
            verified.add(j)
        else:
            print(f"{problem}; regenerating", file=sys.stderr, flush=True)
            done_path(out, j).unlink()
    mine = [j for j in ours if j not in verified]
    writer = CacheWriter(job, hand_model, device) if mine else None
    tb = None
    if dist.is_main and mine:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(out / "tb")
    with tqdm(total=len(mine) * job.shard_size, desc=f"cache rank {dist.rank}", unit="sample", disable=not progress) as bar:
        for j in mine:
            stats = writer.shard(manifest, j)
            bar.update(stats["planned"])
            if tb is not None:
                tb.add_scalar("cache/samples_per_s", stats["planned"] / stats["seconds"], j)
    if tb is not None:
        tb.close()
    # per rank: a count over all shards would race with the other ranks' progress
    summary = {"shards": shards, "reused_by_this_rank": len(ours) - len(mine), "generated_by_this_rank": len(mine)}
    if dist.is_main:  # the other ranks are done once their shards are finished and verified
        verified.update(mine)

        def all_verified() -> bool:  # another rank's shard is checked once finished (its rank redoes a damaged one)
            verified.update(j for j in range(shards) if j not in verified and finished(out, j) and shard_problem(out, j) is None)
            return len(verified) == shards

        wait_until(all_verified)
        stats = [json.loads(done_path(out, j).read_text()) for j in range(shards)]
        build_index(out)
        summary.update(
            written=sum(s["written"] for s in stats), rejected=sum(s["rejected"] for s in stats),
            samples_per_s=sum(s["planned"] for s in stats) / max(sum(s["seconds"] for s in stats), 1e-9),
        )  # fmt: skip
    return summary
