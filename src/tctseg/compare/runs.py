"""Every training run of a comparison, each done once and kept on disk.

A run is ``experiment.run_method`` (train → predict the test cases → evaluate) in
``<output>/<table>/<variant>/seed<k>/<method>/``; its summary goes to
``<output>/<table>/<variant>/seed<k>/result.json`` with a key of everything that defines it
(config, method, test cases, starting weights). On a rerun a folder whose ``result.json``
has the same key is reused and an unfinished training resumes, so an interrupted compare
continues; two variants that are the same run (e.g. 100% of the data and the main table)
train once. A run whose key differs only in the config's ``inference`` section (e.g.
``largest_component`` switched on after the runs) is not trained again: its finished
checkpoint predicts and is scored again with the new settings.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tctseg.config import Config, load_config
from tctseg.errors import OutputError, TctsegError
from tctseg.experiment import TestCase, run_method
from tctseg.files.layout import CompareLayout
from tctseg.files.outputs import write_atomically
from tctseg.files.run_records import seconds_per_epoch


def run_key(
    config: Config, method: str, cases: Sequence[TestCase], init_checkpoint: Path | None, *, training_only: bool = False
) -> str:
    """A short hash of everything that makes a run what it is; ``training_only``: of what
    makes its training (the config without its ``inference`` section)."""
    settings = config.to_dict()
    # where files go and how many workers load them does not change what is trained
    for section, key in (("", "cache_dir"), ("", "output_dir"), ("preprocessing", "workers"), ("train", "num_workers")):
        (settings[section] if section else settings).pop(key, None)
    if training_only:
        settings.pop("inference", None)
    identity = {
        "config": settings,
        "method": method,
        "test_cases": [[c.dataset, c.case_id] for c in cases],
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunBook:
    """Runs (or reuses) the trainings the tables need and prints one progress line per run."""

    def __init__(self, output: Path, *, device: str, progress: bool, overwrite: bool = False):
        self.output = output
        self.device = device
        self.progress = progress
        self.overwrite = overwrite
        self.finished: dict[str, dict[str, Any]] = {}  # key → result, this process
        self.count = 0

    def run(
        self,
        table: str,
        variant: str,
        seed: int,
        config: Config,
        method: str,
        cases: Sequence[TestCase],
        init_checkpoint: Path | None = None,
    ) -> dict[str, Any]:
        """The result of one run: run_method's summary plus ``epoch_time_s``, ``per_dataset``, ``folder``."""
        config = config.with_method(method)
        key = run_key(config, method, cases, init_checkpoint)
        experiment = CompareLayout(self.output).run(table, variant, seed)
        folder, method_run = experiment.root, experiment.method(method)
        label = f"{table}/{variant}/seed{seed} ({method})"
        self.count += 1
        if key in self.finished:
            result = self.finished[key]
            print(f"[compare {self.count}] {label}: same run as {result['folder']}", flush=True)
            return result
        stored = read_json(experiment.result_json)
        train_key = run_key(config, method, cases, init_checkpoint, training_only=True)
        rescored = False
        if stored is not None and not self.overwrite:
            if stored.get("key") == key:
                print(f"[compare {self.count}] {label}: finished before, reused", flush=True)
                self.finished[key] = stored
                return stored
            if trained_key(stored, method_run.config_yaml, method, cases, init_checkpoint) != train_key:
                raise OutputError(
                    f"{experiment.result_json}: holds a run of another config or data; "
                    "use another --output, or --overwrite to train again"
                )
            rescored = True
            print(f"[compare {self.count}] {label}: trained before with other inference settings, "
                  "predicting and scoring again", flush=True)
        else:
            print(f"[compare {self.count}] {label}: training {config.train.epochs} epoch(s) ...", flush=True)
        # an interrupted training resumes; a fresh folder starts without a resume warning
        started = any(marker.exists() for marker in method_run.markers)
        summary = run_method(
            config, method, folder, cases,
            resume=started and not self.overwrite, overwrite=self.overwrite,
            device=self.device, progress=self.progress, init_checkpoint=init_checkpoint,
        )
        metrics = read_json(method_run.metrics_json) or {}
        if rescored:  # the training's own time, from its first result; this call only predicted
            summary = {**summary, "train_time_s": stored.get("train_time_s", summary["train_time_s"]),
                       "wall_time_s": round(float(stored.get("train_time_s") or 0) + summary["predict_time_s"], 1),
                       "rescored": True}
        result = json_safe({
            **summary,
            "key": key,
            "train_key": train_key,
            "method": method,
            "folder": str(folder),
            "epoch_time_s": seconds_per_epoch(method_run.root),  # PFL: all its stages
            "per_dataset": metrics.get("per_dataset", {}),
        })
        text = json.dumps(json_safe(result), indent=2) + "\n"
        write_atomically(experiment.result_json, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the run's result")
        mean = result.get("mean_dsc")
        shown = "–" if mean is None else f"{100 * mean:.1f}%"
        took = summary["predict_time_s"] if rescored else summary["wall_time_s"]
        print(f"[compare {self.count}] {label}: done in {took:.0f} s, mean DSC {shown}", flush=True)
        self.finished[key] = result
        return result


def trained_key(
    stored: dict[str, Any], config_yaml: Path, method: str, cases: Sequence[TestCase], init_checkpoint: Path | None
) -> str | None:
    """The training key of a stored run: its ``train_key``, or for a result written before
    that field existed, the key of the config its training wrote (``config.yaml``); None
    when neither can be read."""
    if stored.get("train_key"):
        return str(stored["train_key"])
    if not config_yaml.is_file():
        return None
    try:
        return run_key(load_config(config_yaml), method, cases, init_checkpoint, training_only=True)
    except TctsegError:
        return None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def json_safe(value: Any) -> Any:
    # JSON has no NaN: a mean over nothing is written as null
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
