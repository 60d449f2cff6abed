"""Training: the one loop for every method, checkpoints, logs, seeding and distributed set-up."""

from tctseg.checkpoint import (
    check_compatible,
    load_checkpoint,
    load_method_from_checkpoint,
    save_checkpoint,
)
from tctseg.training.trainer import Trainer, learning_rate

__all__ = [
    "Trainer",
    "check_compatible",
    "learning_rate",
    "load_checkpoint",
    "load_method_from_checkpoint",
    "save_checkpoint",
]
