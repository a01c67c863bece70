"""The training engine: config, loop, checkpoints, evaluation."""

from gradpen.train.config import Config, load
from gradpen.train.loop import Trainer, TrainingDiverged
from gradpen.train.run import open_run, train

__all__ = ["Config", "Trainer", "TrainingDiverged", "load", "open_run", "train"]
