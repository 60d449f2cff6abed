"""Training: the one loop for every method, PFL's staged pipeline, the run folder, logs, seeding
and distributed set-up. Checkpoints: :mod:`tctseg.checkpoint`."""

from tctseg.training.build import build_trainer
from tctseg.training.trainer import Trainer, learning_rate

__all__ = [
    "Trainer",
    "build_trainer",
    "learning_rate",
]
