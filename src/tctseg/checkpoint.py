"""Checkpoints: a plain dict written atomically, loaded with ``weights_only=True``.

Below training and inference, above methods: the trainer saves and resumes through it,
predict and PFL's labelling load a method from it, and it imports nothing of theirs.

Keys: ``model`` (method state dict), ``optimizer``, ``scheduler``, ``scaler``, ``epoch``
(number of completed epochs), ``rng`` (see :mod:`tctseg.training.seeding`), ``config``
(``Config.to_dict()``), ``classes``, ``method``, ``preprocessing``, ``tctseg_version``,
``best_metric`` and ``history`` (one small dict per epoch).

Before ``torch.load`` sees a file, its first bytes must be torch's zip archive or a pickle
(anything else is refused saying what it is: "a gzip-compressed NIfTI image"), and the
archive's members must be sizes a checkpoint can have: torch stores them uncompressed, and
the pickle holds only the small plain data (weights are separate members), so a compressed
"zip bomb" is refused from its directory, before anything is decompressed.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tctseg.errors import CheckpointError, ConfigError
from tctseg.filetypes import HEAD_BYTES, describe_file, is_pickle, is_zip

if TYPE_CHECKING:
    from tctseg.config import Config
    from tctseg.methods import Method

# preprocessing settings that do not change the prepared data
_RESULT_NEUTRAL_PREPROCESSING = ("workers",)
# the pickle member of a checkpoint holds the plain data (config, history, optimizer scalars):
# ~35 KB after 100 epochs; 64 MB is far above any real one and far below a bomb's gigabytes
MAX_PICKLE_BYTES = 64 * 2**20
# torch writes members uncompressed; one re-zipped by a tool compresses float weights ~1.1:1
MAX_MEMBER_RATIO = 16


def preprocessing_settings(config: Config) -> dict[str, Any]:
    """The preprocessing settings a model depends on, as a plain dict."""
    settings = config.to_dict()["preprocessing"]
    return {k: v for k, v in settings.items() if k not in _RESULT_NEUTRAL_PREPROCESSING}


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` through a temporary file in the same folder, then rename.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
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
    return state


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
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit method {config.method.name!r} ({str(e).splitlines()[0]})") from None
    return method.to(device).eval(), config
