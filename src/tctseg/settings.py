"""The allowed values of every named setting — one home for each list.

``tctseg.config`` validates a YAML file against these before anything is built, and the code
that acts on a setting (the converters, the trainer's optimiser and schedule, the U-Net's
norm, the consistency filter, TCT's weighting, the augmentation presets) imports the same
tuple for its own checks and error messages. This module imports nothing from tctseg and no
torch, so the config stays light and there is no import circle. ``tests/test_settings.py``
asserts that every value listed here is one its owner acts on, and that the owner acts on
no other.
"""

from __future__ import annotations

from collections.abc import Sequence

from tctseg.errors import ConfigError

# DatasetConfig.format → tctseg.data.conversion.CONVERTERS
DATASET_FORMATS = ("kits19", "msd", "chaos_nifti", "chaos_dicom", "btcv", "word", "amos", "nnunet")
DATASET_ROLES = ("train", "validation", "test")
MODALITIES = ("CT", "MR")

# train.* → tctseg.training.trainer (learning_rate, build_optimizer, autocast_dtype)
SCHEDULES = ("constant", "poly", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")
AMP_MODES = ("auto", "bf16", "fp16", "off")
# train.augment_preset → tctseg.data.augment.AUGMENT_PRESETS
AUGMENT_PRESETS = ("light", "strong")

# network.norm → tctseg.network.unet.make_norm
NORMS = ("batch", "instance", "group", "none")

# method.threshold (besides a number or null) → tctseg.losses.consistency
THRESHOLDS = ("median", "task_mean", "batch_mean")
# method.filter: which consistency terms count (SPEC "Eq. 5–6", Tab. 8 revised) → tctseg.losses.consistency
CONSISTENCY_FILTERS = ("iou", "confidence")
# method.empty_classes: what a class absent from both heads' masks in a sample does (SPEC "Eq. 5–6")
EMPTY_RULES = ("keep", "drop", "as_one")
# method.weighting → tctseg.methods.tct.TCTMethod
WEIGHTINGS = ("uauwl", "uwl", "fixed")


def check_choice(key: str, value: object, allowed: Sequence[str]) -> None:
    """Raise ConfigError naming ``key`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def check_patch_size(key: str, patch_size: Sequence[int]) -> tuple[int, int, int]:
    """A patch is three positive integers [X, Y, Z]; returns it as a tuple of ints."""
    try:
        patch = tuple(int(p) for p in patch_size)
    except (TypeError, ValueError):
        patch = ()
    if len(patch) != 3 or min(patch) < 1 or any(p != q for p, q in zip(patch, patch_size)):
        raise ConfigError(f"{key}: expected three positive integers [X, Y, Z], got {list(patch_size)}")
    return patch  # type: ignore[return-value]
