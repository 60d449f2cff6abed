"""The allowed values of every named setting — one home for each list.

``tctseg.config`` validates a YAML file against these before anything is built, and the code
that acts on a setting (the converters, the trainer's optimiser and schedule, the U-Net's
norm, the consistency filter, TCT's weighting, the augmentation presets) imports the same
tuple for its own checks and error messages. This module imports only :mod:`tctseg.errors`
from tctseg and no torch, so the config stays light and there is no import circle.
``tests/test_settings.py`` asserts that every value listed here is one its owner acts on, and
that the owner acts on no other.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

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

# predict --backend → tctseg.inference.backends (all but torch: pip install ".[fast-cpu]")
INFERENCE_BACKENDS = ("torch", "onnxruntime", "openvino", "openvino-bf16")

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
# method.options: the keys each method reads (its module docstring says what they do) →
# tctseg.methods (each method's from_config). A key no method reads is refused, naming it;
# one config may carry several methods' options, since ``tctseg compare`` runs them all.
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "tct": (),
    "tal": (),
    "pfl": ("stage1_epochs",),
    "me": ("exclusion_weight",),
    "aal": ("focal_gamma", "entropy_weight", "empty_patch_entropy_weight"),
    "dodnet": ("head_channels",),
    "clip": ("head_channels", "text_embeddings", "text_model", "clip_embeddings", "text_template"),
    "hermes": ("modalities", "modality", "modality_tokens", "modality_loss_weight", "blocks"),
}


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


def check_method_options(method: str, options: Mapping[object, object]) -> None:
    """Refuse (ConfigError naming ``method.options.<key>``) a key of ``options`` that no method
    in :data:`METHOD_OPTIONS` reads. A method this table does not list (one a user registered)
    reads its own options: nothing is checked for it."""
    if method not in METHOD_OPTIONS:
        return
    known = sorted({key for keys in METHOD_OPTIONS.values() for key in keys})
    for key in options:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        own = ", ".join(METHOD_OPTIONS[method]) or "none"
        raise ConfigError(
            f"method.options.{key}: unknown option{hint}; method {method} reads: {own}; "
            f"known to any method: {', '.join(known)}"
        )
