"""Live generation for training: a `handrecon.data.live.LiveSource` producer around the pipeline.

`live_source(job, length)` returns a LiveSource whose generator process builds the same
pipeline as the cache job (`synth.cache.CacheWriter`) and, for generation seed s, draws a label
sample and a generation seed from s, composes its prompt with the rules chain and returns the
generated image with the crop's labels (the sample layout, `source` = 'live'). Its throughput
is `LiveSource.stats()`, which the caller logs next to the trainer's samples/s.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from handrecon.data.augment import crop_to_input
from handrecon.data.live import LiveSource
from handrecon.hand_model.mano import HandModel

from .cache import CacheJob, CacheWriter


class PipelineProducer:
    """Built inside the generator process: models and the label source live there only."""

    def __init__(self, job: CacheJob):
        from handrecon.engine.distributed import pick_device

        from .semantics.chain import SemanticsChain, SemanticsConfig

        self.job = job
        self.hand_model = HandModel(job.mano_dir)
        self.writer = CacheWriter(job, self.hand_model, pick_device(job.device))
        self.chain = SemanticsChain(SemanticsConfig(tagger="none"), self.hand_model)
        self.tag = job.dataset or job.labels.kind

    def __call__(self, seed: int) -> dict:
        rng = np.random.default_rng([self.job.seed, seed])
        source = self.writer.source
        index = int(rng.integers(len(source)))
        size = (self.writer.resolution, self.writer.resolution)
        crop = crop_to_input(source[index], size, self.job.crop_margin)
        prompt = self.chain([{**crop, "source": self.tag}])[0]["prompt"]
        with torch.no_grad():
            out = self.writer.pipe.generate([prompt], [int(rng.integers(2**31 - 1))], samples=[crop], hand_model=self.hand_model,
                                            num_inference_steps=self.job.inference_steps, guidance_scale=self.job.guidance_scale)  # fmt: skip
        return {**crop, "image": out.images[0], "sample_id": f"live-{seed}", "prompt": prompt}


def _build(job: CacheJob) -> PipelineProducer:
    return PipelineProducer(job)


def live_source(job: CacheJob, length: int, policy: str = "block", **kwargs) -> LiveSource:
    """A LiveSource generating with `job`'s generator settings (its out/num/shard fields are unused)."""
    return LiveSource(functools.partial(_build, job), length, policy=policy, **kwargs)
