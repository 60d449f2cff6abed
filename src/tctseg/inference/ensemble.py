"""An ensemble: several checkpoints of one method predicting each scan together
(``tctseg predict A.pt B.pt C.pt INPUT OUTPUT``, like nnU-Net's ``-f 0 1 2 3 4``).

Every member runs its own sliding window over the scan and the members' probabilities are
averaged before the label map: the softmax over N+1 classes, or for a task-prompted method
(``Method.task_prompted``) the N task sigmoids σ_c, and for ``--qc`` on TCT the auxiliary
heads' ``gʲ`` too. One member is plain prediction: its probabilities are used as they are.

The average is taken on the prepared grid, which every member shares because they agree on
the preprocessing, and then resampled back to the scan's grid once. Going back (trilinear
resampling, then an axis permutation and flips) is linear, so this IS the average of the
members' probabilities in the scan's own space, at the cost of one resampling instead of one
per member.

Members must mean the same thing by their probabilities, or the average means nothing: the
same classes in the same order, the same preprocessing settings (so the same grid and
intensities), the same method (so the same output kind: softmax or task sigmoids, auxiliary
heads or none) and the same modality; and, unless the caller sets them, the same inference
settings that change the result (overlap, flip TTA, largest component). A difference is one
:class:`~tctseg.errors.CheckpointError` line naming the two checkpoints and the setting. A
checkpoint given twice is refused: it would double its weight and make the members' agreement
look better than it is. Each member keeps its own network settings and patch size.

Which members made a prediction is recorded in the folder's ``index.json``: each case's
``models``, the checkpoints' resolved paths and sha256 (:meth:`EnsembleMember.record`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

from tctseg.errors import CheckpointError
from tctseg.files.layout import CHECKPOINT_BEST

if TYPE_CHECKING:
    import torch

    from tctseg.config import Config

# one model: a checkpoint path, or a method and its config already in memory
ModelLike = Union[str, Path, "tuple[torch.nn.Module, Config]"]
# the inference settings whose config values members must share unless the caller sets them
RESULT_INFERENCE_SETTINGS = ("overlap", "tta_flip", "largest_component")


@dataclass(frozen=True)
class EnsembleMember:
    """One model of an ensemble. ``checkpoint`` and ``sha256`` are None for a model given in
    memory; ``label`` names it in messages (the checkpoint path, or ``model k``)."""

    method: Any  # torch.nn.Module
    config: Config
    label: str
    checkpoint: Path | None = None
    sha256: str | None = None

    @property
    def task_prompted(self) -> bool:
        """One sigmoid per class instead of one softmax (see ``Method.task_prompted``)."""
        return bool(getattr(self.method, "task_prompted", False))

    def record(self) -> dict[str, str | None]:
        """``{checkpoint, sha256}`` for the prediction index (both None for an in-memory model)."""
        return {"checkpoint": None if self.checkpoint is None else str(self.checkpoint), "sha256": self.sha256}


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_members(models: Sequence[ModelLike], device: str) -> list[EnsembleMember]:
    """Each model → an :class:`EnsembleMember` on ``device`` (a checkpoint is loaded by
    :func:`tctseg.checkpoint.load_method_from_checkpoint` and hashed). Raises CheckpointError
    for no model, a folder given as a checkpoint, or a checkpoint given twice."""
    if not models:
        raise CheckpointError("predict: no model given; name one checkpoint, or several for an ensemble")
    members: list[EnsembleMember] = []
    for k, model in enumerate(models, start=1):
        if isinstance(model, tuple):
            method, config = model
            member = EnsembleMember(method, config, f"model {k}")
        else:
            from tctseg.checkpoint import load_method_from_checkpoint

            path = Path(model)
            if path.is_dir():
                raise CheckpointError(f"{path}: is a folder; give its checkpoint file(s), e.g. {path / CHECKPOINT_BEST}")
            sha256 = file_sha256(path) if path.is_file() else None  # a missing file: the loader says so
            method, config = load_method_from_checkpoint(path, device=device)
            member = EnsembleMember(method, config, str(path), path.resolve(), sha256)
        for earlier in members:
            if earlier.method is member.method or (member.sha256 is not None and earlier.sha256 == member.sha256):
                raise CheckpointError(
                    f"{member.label}: is the same model as {earlier.label}"
                    + (f" (sha256 {member.sha256[:12]}…)" if member.sha256 else "")
                    + "; an ensemble's members must differ"
                )
        members.append(member)
    return members


def member_profile(member: EnsembleMember, unset_inference: Sequence[str] = RESULT_INFERENCE_SETTINGS) -> dict[str, Any]:
    """What members must agree on, as ``{setting: value}``: classes, method, output kind (and
    auxiliary heads or none), every result-changing preprocessing setting, and the inference
    settings in ``unset_inference`` (those the caller leaves to the config)."""
    from tctseg.checkpoint import preprocessing_settings
    from tctseg.inference.quality import has_auxiliary_heads

    config = member.config
    profile: dict[str, Any] = {
        "classes": list(config.classes),
        "method": config.method.name,
        "output": "one sigmoid per class" if member.task_prompted else "one softmax over the classes",
        "auxiliary heads": has_auxiliary_heads(member.method),
    }
    profile.update({f"preprocessing.{k}": v for k, v in sorted(preprocessing_settings(config).items())})
    inference = config.to_dict()["inference"]
    profile.update({f"inference.{k}": inference.get(k) for k in unset_inference})
    return profile


def check_members_agree(labels: Sequence[str], profiles: Sequence[Mapping[str, Any]]) -> None:
    """Raise CheckpointError (one line naming both members and the setting) at the first
    profile that differs from the first member's. ``labels[k]`` names member k."""
    first = profiles[0]
    for label, profile in zip(labels[1:], profiles[1:]):
        for key in [*first, *(k for k in profile if k not in first)]:
            if first.get(key) != profile.get(key):
                raise CheckpointError(
                    f"{labels[0]} and {label} differ in {key} ({first.get(key)!r} vs {profile.get(key)!r}); "
                    "an ensemble's members must agree on it"
                )
