"""Live generation for training: a `handrecon.data.live.LiveSource` producer around the pipeline.

`live_source(job, length)` returns a LiveSource whose generator process builds the same
pipeline as the cache job (`synth.cache.CacheWriter`) and, for generation seed s, draws a label
sample and a generation seed from s, composes its prompt with the rules chain and returns the
generated image with the crop's labels (the sample layout, `source` = 'live'). Its throughput
is `LiveSource.stats()`, which the training loop logs next to its samples/s.

Importing this module registers the source kind `live` of `data.sources` entries:

    data:
      sources:
        real: {kind: ih26m, root: datasets/InterHand2.6M, split: train}
        gen:
          kind: live
          root: runs/synth_sd15          # optional: a generator training run (newest ControlNet, its settings)
          options:                       # CacheJob keys (labels, base, controlnet, generator overrides, ...)
            labels: {kind: ih26m, root: datasets/InterHand2.6M, split: train}
            generator: {inference_steps: 10}   # optional: explicit overrides of the ControlNet's settings
            policy: reuse                # and the queue's: length, policy, capacity, buffer_size, timeout
      ratios: {real: 0.7, gen: 0.3}

The generator settings (condition style, crop margin, fusion, hand bias, sampling) are the
ControlNet's own (`synth/settings.py`: saved beside its weights by generator training); the
producer prints where they come from and any override.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from handrecon.config import build_section, check_fields, load_config
from handrecon.data.live import POLICIES, LiveSource
from handrecon.data.loader import SourceConfig, register_source_kind
from handrecon.errors import UserError
from handrecon.hand_model.mano import HandModel

from .cache import CacheJob, CacheWriter, generator_settings
from .settings import describe_settings


@dataclass
class LiveQueue:
    """The queue keys of a live source's options (the other keys are its CacheJob's)."""

    length: int = 10000  # indices the source answers (its size for the sampler); >= 1
    policy: str = field(default="block", metadata={"choices": POLICIES})  # block: wait for the generator; reuse: answer from the buffer
    capacity: int = 64  # generations waiting in the queue; >= 1
    buffer_size: int = 256  # recent generations kept for 'reuse'; >= 1
    timeout: float = 600.0  # seconds a read waits for the generator before it is an error; > 0

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "length", "capacity", "buffer_size")
        check_fields(self, "> 0", "timeout")


class PipelineProducer:
    """Built inside the generator process: models and the label source live there only."""

    def __init__(self, job: CacheJob):
        from handrecon.engine.distributed import pick_device

        from .semantics.chain import SemanticsChain, SemanticsConfig

        self.job = job
        print(describe_settings(job.controlnet, generator_settings(job)[1]), file=sys.stderr, flush=True)
        self.hand_model = HandModel(job.mano_dir)
        self.writer = CacheWriter(job, self.hand_model, pick_device(job.device))
        self.chain = SemanticsChain(SemanticsConfig(tagger="none"), self.hand_model)
        self.tag = job.dataset or job.labels.kind

    def __call__(self, seed: int) -> dict:
        rng = np.random.default_rng([self.job.seed, seed])
        pipe, source = self.writer.pipe, self.writer.source
        index = int(rng.integers(len(source)))
        crop = pipe.crop(source[index])
        record = self.chain([{**crop, "source": self.tag}])[0]  # generate() reads the settings' prompt field
        with torch.no_grad():
            out = pipe.generate([record], [int(rng.integers(2**31 - 1))], samples=[crop], hand_model=self.hand_model)
        return {**crop, "image": out.images[0], "sample_id": f"live-{seed}"}  # the keys of a label sample, so batches collate


def _build(job: CacheJob) -> PipelineProducer:
    return PipelineProducer(job)


def live_source(job: CacheJob, length: int, policy: str = "block", **kwargs) -> LiveSource:
    """A LiveSource generating with `job`'s generator settings (its out/num/shard fields are unused)."""
    return LiveSource(functools.partial(_build, job), length, policy=policy, **kwargs)


def run_settings(run: Path) -> dict:
    """The CacheJob keys a generator training run fixes: its base and its newest ControlNet,
    whose folder holds the generator settings it was trained with."""
    from handrecon.engine import checkpoint as ckpt

    from .train import GeneratorExperiment

    if not (run / "config.yaml").is_file():
        raise UserError(f"{run}: not a generator training run (no config.yaml); give the run folder tools/synth_train.py wrote")
    trained = load_config(GeneratorExperiment, run / "config.yaml")
    return {"base": trained.model.base, "controlnet": str(ckpt.latest_checkpoint(run) / "controlnet")}


def build_live_source(cfg: SourceConfig, hand_model: HandModel, name: str) -> LiveSource:
    """The `kind: live` entry of data.sources: its options are CacheJob keys and LiveQueue keys."""
    prefix = f"data.sources.{name}.options"
    queue_keys = {f.name for f in dataclasses.fields(LiveQueue)}
    queue = build_section(LiveQueue, {k: v for k, v in cfg.options.items() if k in queue_keys}, prefix)
    base = {**(run_settings(Path(cfg.root)) if cfg.root else {}), "mano_dir": str(hand_model.mano_dir)}
    job = build_section(CacheJob, {k: v for k, v in cfg.options.items() if k not in queue_keys}, prefix, base=base)
    if not job.labels.root:
        raise UserError(f"{prefix}.labels: a live source draws its labels from a dataset: set labels.root (and kind, split)")
    return live_source(job, queue.length, queue.policy, capacity=queue.capacity, buffer_size=queue.buffer_size, timeout=queue.timeout,
                       source=name)  # fmt: skip


register_source_kind("live", build_live_source)
