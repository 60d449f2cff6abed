"""The ensemble row of a method with several seeds: its seeds' checkpoints predicting together.

nnU-Net users predict with the five models of a cross-validation at once; here the K seeds
of a method's main-table runs are the members (``tctseg predict A.pt B.pt ... INPUT OUTPUT``,
:mod:`tctseg.inference.ensemble`: the members' probabilities averaged before the label map).
The ensemble predicts the same test cases as the single runs, is scored the same way, and
lands in ``<output>/main/<method>/ensemble/`` (``<method>/predictions``, ``<method>/metrics``
and ``result.json``). Its key is the members' checkpoints (path, size, modification time)
and the config's ``inference`` settings: a rerun with the same finished seeds reuses it; a new
seed, a retrained one or new inference settings (e.g. ``largest_component``) predict again.

One ensemble is one prediction per case, so its row has no sd over seeds; the cost is K
networks per scan (``predict_time_s``, and ``seconds_per_case``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tctseg.compare.runs import json_safe, read_json
from tctseg.config import Config, InferenceConfig
from tctseg.experiment import TestCase, evaluate_test_cases, predict_test_cases
from tctseg.files.layout import ExperimentLayout
from tctseg.files.outputs import write_atomically
from tctseg.methods import method_class


def members_key(checkpoints: Sequence[Path], inference: InferenceConfig) -> str:
    """A short hash of the members (each checkpoint's path, size and modification time) and
    the inference settings they predict with."""
    identity: list[Any] = []
    for checkpoint in checkpoints:
        stat = Path(checkpoint).stat()
        identity.append([str(checkpoint), stat.st_size, stat.st_mtime_ns])
    identity.append(dataclasses.asdict(inference))
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def ensemble_result(
    config: Config,
    method: str,
    runs: Sequence[dict[str, Any]],
    cases: Sequence[TestCase],
    folder: Path,
    *,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """Predict and score ``cases`` with the checkpoints of ``runs`` (one result per seed, as
    :class:`~tctseg.compare.runs.RunBook` returns them) as one ensemble, into ``folder``.

    Returns a result like a run's: ``per_class``, ``mean_dsc``, ``mean_hd95``,
    ``per_dataset``, plus ``members`` (the checkpoints), ``predict_time_s`` and
    ``seconds_per_case``.
    """
    checkpoints = [Path(r["checkpoint"]) for r in runs]
    key = members_key(checkpoints, config.inference)
    layout = ExperimentLayout(folder)
    stored = read_json(layout.result_json)
    if stored is not None and stored.get("key") == key:
        return stored
    method_config = config.with_method(method)
    per_task = method_class(method).task_prompted
    method_dir = layout.method(method).root
    seconds = predict_test_cases(checkpoints, cases, method_dir, device=device, progress=progress,
                                 task_masks=per_task, classes=method_config.classes,
                                 inference=method_config.inference)
    scores = evaluate_test_cases(method_config, cases, method_dir, task_masks=per_task)
    mean = scores.mean()
    metrics = read_json(layout.method(method).metrics_json) or {}
    result = json_safe({
        "key": key,
        "method": method,
        "members": [str(c) for c in checkpoints],
        "scoring": "per_task" if per_task else "label_map",
        "per_class": scores.per_class(),
        "mean_dsc": mean["dsc"],
        "mean_hd95": mean["hd95"],
        "per_dataset": metrics.get("per_dataset", {}),
        "predict_time_s": round(seconds, 1),
        "seconds_per_case": round(seconds / max(len(cases), 1), 1),
        "folder": str(folder),
    })
    text = json.dumps(result, indent=2) + "\n"
    write_atomically(layout.result_json, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the ensemble's result")
    return result
