"""Run under torchrun by test_trainer: trains, then writes this rank's weights and sample ids."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from handrecon.config import load_config
from handrecon.engine import Experiment, Trainer


def main(config: str) -> None:
    cfg = load_config(Experiment, config)
    trainer = Trainer(cfg, progress=False)
    seen: list[str] = []
    forward_backward = trainer._forward_backward

    def recording(batch, sync):
        seen.extend(batch["sample_id"])
        return forward_backward(batch, sync)

    trainer._forward_backward = recording
    trainer.fit()
    rank = trainer.dist.rank
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"samples": seen, "world_size": trainer.dist.world_size}))
    trainer.close()


if __name__ == "__main__":
    main(sys.argv[1])
