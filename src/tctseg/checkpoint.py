"""Checkpoints: a plain dict written atomically, loaded with ``weights_only=True``.

Below training and inference, above methods: the trainer saves and resumes through it,
predict and PFL's labelling load a method from it, and it imports nothing of theirs.

Keys: ``model`` (method state dict; besides tensors it may hold a method's extra state,
plain data: CLIP-Driven records its text embeddings' source there, :func:`recorded_sources`),
``optimizer``, ``scheduler``, ``scaler``, ``epoch``
(number of completed epochs), ``rng`` (see :mod:`tctseg.training.seeding`), ``config``
(``Config.to_dict()``), ``classes``, ``method``, ``preprocessing``, ``tctseg_version``,
``best_metric`` and ``history`` (one small dict per epoch).

Before ``torch.load`` sees a file, its first bytes must be torch's zip archive or a pickle
(anything else is refused saying what it is: "a gzip-compressed NIfTI image"), and the
archive's members must be sizes a checkpoint can have: torch stores them uncompressed, and
the pickle holds only the small plain data (weights are separate members), so a compressed
"zip bomb" is refused from its directory, before anything is decompressed. After loading,
every field present must have its type (:func:`check_field_types`: ``classes`` a list of names,
``model`` a dict of tensors, ...), or the file is refused naming the field; weights that do not
fit a method are named tensor by tensor (:func:`load_weights`), never torch's bare
"Error(s) in loading state_dict".
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tctseg.errors import CheckpointError, ConfigError
from tctseg.files.filetypes import HEAD_BYTES, describe_file, is_pickle, is_zip
from tctseg.files.outputs import discard, temporary_path

if TYPE_CHECKING:
    from tctseg.config import Config
    from tctseg.methods import Method

# the pickle member of a checkpoint holds the plain data (config, history, optimizer scalars):
# ~35 KB after 100 epochs; 64 MB is far above any real one and far below a bomb's gigabytes
MAX_PICKLE_BYTES = 64 * 2**20
# torch writes members uncompressed; one re-zipped by a tool compresses float weights ~1.1:1
MAX_MEMBER_RATIO = 16
# torch's state-dict key suffix of a module's get_extra_state(): the only non-tensor entries
# a checkpoint's model may hold, and only plain data (CLIP-Driven's record of its embeddings)
EXTRA_STATE_SUFFIX = "_extra_state"


def preprocessing_settings(config: Config) -> dict[str, Any]:
    """The preprocessing settings a model depends on, as a plain dict: the record the
    prepared cache keeps too (:func:`tctseg.preprocessing.scan.prepared_settings`)."""
    from tctseg.preprocessing.scan import prepared_settings

    return prepared_settings(config.preprocessing)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` through a temporary file in the same folder, then rename.

    A crash mid-write leaves the previous checkpoint intact. The temporary name never ends in
    ``.pt`` and is short where the final name is long (:func:`tctseg.files.outputs.temporary_path`);
    removing it after a failure is best effort, so the CheckpointError is what is reported.
    """
    path = Path(path)
    tmp = temporary_path(path, keep_suffix=False)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as e:
        discard(tmp)
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e})") from None
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (weights only, no code is run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    check_checkpoint_file(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{path}: not a readable tctseg checkpoint ({_first_line(e)})") from None
        # torch's message advises weights_only=False; the reason is the first line after that advice
        advice = ("Check the doc", "Please file")
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip() and not ln.startswith(advice)]
        reason = lines[0] if lines else "it holds objects other than tensors and plain data"
        raise CheckpointError(
            f"{path}: refused: a checkpoint may hold only weights and plain data, never code ({reason})"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable tctseg checkpoint ({_first_line(e)})") from None
    missing = [k for k in ("model", "config", "classes", "epoch") if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a tctseg checkpoint (missing {', '.join(missing)})")
    check_field_types(state, path)
    return state


def _is_plain(value: Any, depth: int = 0) -> bool:
    """JSON-like data: str, numbers, bool, None, and lists and str-keyed dicts of them."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if depth > 8:
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v, depth + 1) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())


def _is_weight_entry(key: Any, value: Any) -> bool:
    # a tensor, or a module's extra state (plain data: CLIP-Driven's record of its text embeddings)
    return isinstance(key, str) and (isinstance(value, torch.Tensor) or (key.endswith(EXTRA_STATE_SUFFIX) and _is_plain(value)))


def _is_weights(value: Any) -> bool:
    return isinstance(value, dict) and all(_is_weight_entry(k, v) for k, v in value.items())


def recorded_sources(state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records about the data its method was built from, beside the weights:
    the method's own extra state (``model["_extra_state"]``; CLIP-Driven:
    ``{"text_embeddings": {source, chosen_by, path, sha256, ...}}``), {} when there is none."""
    extra = (state.get("model") or {}).get(EXTRA_STATE_SUFFIX)
    return dict(extra) if isinstance(extra, dict) else {}


def _is_names(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# field → (is it acceptable, what it must be); a field in _REQUIRED_FIELDS must be present
_FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "model": (_is_weights, "a dict of tensors (the method's state dict)"),
    "config": (lambda v: isinstance(v, dict), "a dict (the run's config)"),
    "classes": (_is_names, "a list of class names"),
    "epoch": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a number of epochs (an int >= 0)"),
    "method": (lambda v: isinstance(v, str), "a method name"),
    "preprocessing": (lambda v: v is None or isinstance(v, dict), "a dict of preprocessing settings"),
    "optimizer": (lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list) and all(isinstance(g, dict) for g in v["param_groups"]),
                  "an optimizer state dict (state and param_groups)"),
    "scheduler": (lambda v: v is None or isinstance(v, dict), "a dict"),
    "scaler": (lambda v: v is None or isinstance(v, dict), "a gradient scaler state dict"),
    "rng": (lambda v: isinstance(v, dict), "a dict of random number generator states"),
    "best_metric": (lambda v: v is None or _is_number(v), "a number or None"),
    "history": (lambda v: v is None or (isinstance(v, list) and all(isinstance(r, dict) for r in v)),
                "a list of per-epoch dicts"),
    "tctseg_version": (lambda v: isinstance(v, str), "a version string"),
}


def check_field_types(state: dict[str, Any], path: str | Path) -> None:
    """Refuse (one-line CheckpointError naming ``path`` and the field) a checkpoint field of the
    wrong type (``classes: 5``, ``preprocessing: "abc"``, ``model: [1, 2, 3]``), so that no
    caller meets a TypeError later. Absent optional fields are the caller's to handle."""
    for field, (acceptable, expected) in _FIELD_TYPES.items():
        if field in state and not acceptable(state[field]):
            value = state[field]
            if field == "model" and isinstance(value, dict):
                key, item = next((k, v) for k, v in value.items() if not _is_weight_entry(k, v))
                raise CheckpointError(f"{path}: field 'model' holds {key!r}: {describe_value(item)}, expected {expected}")
            raise CheckpointError(f"{path}: field {field!r} is {describe_value(value)}, expected {expected}")


def describe_value(value: Any) -> str:
    """``value`` in a message: its type and a short repr (``an int (5)``, ``a list ([1, 2, 3])``)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    kind = {bool: "a bool", int: "an int", float: "a float", str: "a string", list: "a list", tuple: "a tuple",
            dict: "a dict", type(None): "None"}.get(type(value), f"a {type(value).__name__}")
    if value is None:
        return kind
    if isinstance(value, (list, tuple, dict)) and len(value) > 8:
        return f"{kind} of {len(value)} items"
    text = repr(value)
    return f"{kind} ({text if len(text) <= 60 else text[:57] + '...'})"


def check_checkpoint_file(path: Path) -> None:
    """Refuse (CheckpointError) a file that is not torch's zip or pickle format, or whose archive
    members are sizes no checkpoint has (a zip bomb), before anything is decompressed or unpickled."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
    if is_pickle(head):
        return  # torch's legacy format: a pickle cannot hold more than the file's bytes
    if not is_zip(head):
        raise CheckpointError(f"{path}: not a tctseg checkpoint: {describe_file(path)}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable tctseg checkpoint (a damaged zip archive: {_first_line(e)})") from None
    for member in members:
        if member.file_size > MAX_MEMBER_RATIO * max(member.compress_size, 1) + 2**20:
            raise CheckpointError(
                f"{path}: refused: archive member {member.filename} would expand from {member.compress_size} to "
                f"{member.file_size} bytes (torch stores checkpoints uncompressed; a zip bomb?)"
            )
        if member.filename.endswith(".pkl") and member.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{path}: refused: its pickle {member.filename} is {member.file_size} bytes, more than the "
                f"{MAX_PICKLE_BYTES} a checkpoint's plain data can need (weights are stored apart)"
            )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def check_compatible(checkpoint: dict[str, Any], config: Config, path: str | Path | None = None) -> None:
    """Refuse a checkpoint whose classes or preprocessing settings differ from ``config``'s."""
    where = f"{path}: " if path is not None else ""
    if list(checkpoint["classes"]) != list(config.classes):
        raise CheckpointError(
            f"{where}checkpoint was trained for classes {list(checkpoint['classes'])}, "
            f"but the config has classes {list(config.classes)}"
        )
    stored = dict(checkpoint.get("preprocessing") or {})
    wanted = preprocessing_settings(config)
    differing = [k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    if differing:
        details = "; ".join(f"preprocessing.{k}: checkpoint {stored.get(k)!r}, config {wanted.get(k)!r}" for k in differing)
        raise CheckpointError(f"{where}checkpoint was trained with other preprocessing settings ({details})")


def load_method_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Method, Config]:
    """Rebuild the method from the config stored in the checkpoint and load its weights.

    Returns ``(method, config)``; the method is in eval mode on ``device``.
    """
    from tctseg.config import config_from_dict
    from tctseg.methods import build_method

    state = load_checkpoint(path)
    try:
        config = config_from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: stored config is not valid ({e})") from None
    # the stored config must agree with the recorded classes and preprocessing (an edited file must not)
    # (a checkpoint without a preprocessing record is checked on its classes only)
    recorded = {**state, "preprocessing": state.get("preprocessing") or preprocessing_settings(config)}
    check_compatible(recorded, config, path)
    method = build_method(config)
    load_weights(method, state["model"], path, config)
    return method.to(device).eval(), config


def load_weights(method: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path, config: Config,
                 trained_with: dict[str, Any] | None = None) -> None:
    """``method.load_state_dict(weights)``, or one CheckpointError line saying what does not fit:
    the first tensor whose shape differs (its shape in the checkpoint and in the method built from
    ``config``) or the missing and unexpected names, and the ``network`` settings in which
    ``trained_with`` (the checkpoint's stored config) differs from ``config``."""
    own = method.state_dict()
    problems = []
    adapts = set(getattr(method, "sized_by_checkpoint", ()))  # the method takes the checkpoint's shape
    differing = [(k, list(weights[k].shape), list(v.shape)) for k, v in own.items()
                 if k not in adapts and isinstance(v, torch.Tensor) and isinstance(weights.get(k), torch.Tensor)
                 and tuple(weights[k].shape) != tuple(v.shape)]
    if differing:
        name, theirs, ours = differing[0]
        more = f" (and {len(differing) - 1} more tensor(s))" if len(differing) > 1 else ""
        problems.append(f"{name} is {theirs} in the checkpoint, {ours} in the model{more}")
    # an extra state (a record, not a weight) that an older checkpoint lacks: the method says so
    missing = [k for k in own if k not in weights and not k.endswith(EXTRA_STATE_SUFFIX)]
    unexpected = [k for k in weights if k not in own]
    for names, what in ((missing, "missing from the checkpoint"), (unexpected, "not in the model")):
        if names:
            problems.append(f"{len(names)} tensor(s) {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    if not problems:
        try:
            method.load_state_dict(weights)
            return
        except (RuntimeError, TypeError, ValueError) as e:
            problems.append(_first_line(e))
    settings = _network_differences(trained_with, config)
    raise CheckpointError(
        f"{path}: weights do not fit method {config.method.name!r}: {'; '.join(problems)}"
        + (f" (the checkpoint was trained with {settings})" if settings else "")
    )


def _network_differences(trained_with: dict[str, Any] | None, config: Config) -> str:
    """``network.width 8, the config has 4`` for every network setting that differs."""
    stored = trained_with.get("network") if isinstance(trained_with, dict) else None
    if not isinstance(stored, dict):
        return ""
    wanted = config.to_dict()["network"]
    return "; ".join(f"network.{k} {stored[k]!r}, the config has {wanted[k]!r}"
                     for k in wanted if k in stored and stored[k] != wanted[k])
