"""Training: the experiment config, the loop, checkpoints, distributed plumbing, prediction."""
from .config import Experiment, TrainConfig, ValConfig
from .optim import OptimConfig, ScheduleConfig
from .predict import predict_dataset, save_predictions
from .trainer import Trainer

__all__ = ["Experiment", "OptimConfig", "ScheduleConfig", "TrainConfig", "Trainer", "ValConfig", "predict_dataset", "save_predictions"]
