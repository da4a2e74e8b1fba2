"""Run under torchrun by the trainer tests: trains, then writes this rank's weights, sample ids
and final metrics.

    ddp_worker.py regressor|generator CONFIG [resume]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from handrecon.config import load_config


def _trainer(kind: str, config: str, resume: bool = False):
    if kind == "regressor":
        from handrecon.engine import Experiment, Trainer

        trainer = Trainer(load_config(Experiment, config), progress=False, resume=resume)
        return trainer, trainer.model
    from synth.train import GeneratorExperiment, GeneratorTrainer

    trainer = GeneratorTrainer(load_config(GeneratorExperiment, config), progress=False)
    return trainer, trainer.controlnet


def main(kind: str, config: str, resume: str = "") -> None:
    trainer, model = _trainer(kind, config, resume == "resume")
    seen: list[str] = []
    loader = trainer.loader

    class Recording:
        """The trainer's loader, noting the sample ids of every batch it hands out."""

        def __iter__(self):
            for batch in loader:
                seen.extend(batch["sample_id"])
                yield batch

    trainer.loader = Recording()
    metrics = trainer.fit()
    rank = trainer.dist.rank
    out = Path(trainer.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"samples": seen, "world_size": trainer.dist.world_size, "metrics": metrics}))
    trainer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
