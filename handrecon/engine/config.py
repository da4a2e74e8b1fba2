"""The experiment config `tools/train.py` reads (YAML + `--set`, see `handrecon.config`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import FieldError, check_fields
from ..data.augment import AugmentConfig
from ..data.loader import DataConfig
from ..data.readers import list_datasets
from ..models import ModelConfig
from .loop import LoopConfig
from .optim import OptimConfig, ScheduleConfig


@dataclass
class TrainConfig(LoopConfig):
    """The loop's keys (handrecon.engine.loop.LoopConfig) and the regressor's own."""

    sync_bn: bool = False  # torchrun on CUDA: BatchNorm statistics over all ranks' samples
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes kept fixed, e.g. [hand_backbone]
    best_metric: str | None = None  # a validation metric key; null: the validation protocol's main one (interwild/mpvpe_all_wrist_mm, ...)
    best_mode: str = field(default="min", metadata={"choices": ("min", "max")})


@dataclass
class ValConfig:
    """Periodic validation with the metrics module; `dataset: null` switches it off."""

    dataset: str | None = None  # a registered dataset (ih26m, procedural, reih, hic): its reader and metric rules
    root: str = ""
    split: str = "val"
    protocol: str = field(default="interwild", metadata={"choices": ("interwild", "dir", "dir_wrist")})
    max_samples: int | None = 512  # the first N (>= 1) samples of the split (a fixed subset); null: all
    batch_size: int = 16  # >= 1
    images: int = 8  # samples drawn with their predicted mesh per validation (0: none)

    def __post_init__(self) -> None:
        if self.dataset is not None and self.dataset not in list_datasets():
            raise ValueError(f"val.dataset must be one of {list_datasets()} or null, got {self.dataset!r}")
        check_fields(self, ">= 1", "max_samples", "batch_size")
        check_fields(self, ">= 0", "images")


@dataclass
class Experiment:
    out: str = "runs/train"  # the run folder: config, checkpoints, TensorBoard, images
    mano_dir: str = ""  # folder with MANO_RIGHT.pkl and MANO_LEFT.pkl
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # output_size is set to model's input_size
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val: ValConfig = field(default_factory=ValConfig)

    def __post_init__(self) -> None:
        from ..metrics import PROTOCOLS

        main = PROTOCOLS[self.val.protocol].main
        if self.train.best_metric is None:
            self.train.best_metric = main
        elif self.val.dataset is not None and not self.train.best_metric.startswith(main.split("/")[0] + "/"):
            raise FieldError("train.best_metric", f"a metric of val.protocol '{self.val.protocol}' (e.g. {main})", self.train.best_metric)
