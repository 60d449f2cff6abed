"""What a run folder records, read without torch: its final folder, PFL's stage record, its epoch times.

The report and ``tctseg compare`` read a run folder through these functions, so they need
neither the trainer nor PFL's pipeline (nor torch) to do it; the names come from
:class:`tctseg.layout.RunLayout`. The pipeline (:mod:`tctseg.training.pfl_pipeline`) writes
``pipeline.json`` and resumes from it through :func:`read_pipeline_record`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tctseg.layout import RunLayout


def read_pipeline_record(run_dir: str | Path) -> dict[str, Any] | None:
    """``pipeline.json`` of a staged (PFL) run (None for a plain run or an unreadable file)."""
    try:
        record = json.loads(RunLayout(run_dir).pipeline_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def final_run_folder(run_dir: str | Path) -> Path:
    """The folder with a run's final checkpoints and ``log.csv``: ``stage3/`` of a staged run."""
    layout = RunLayout(run_dir)
    return layout.stage3.root if layout.pipeline_json.exists() else layout.root


def mean_epoch_time(log_csv: str | Path) -> float | None:
    """Mean ``epoch_time_s`` over the epochs in a run's ``log.csv`` (None when there is none)."""
    try:
        with Path(log_csv).open(encoding="utf-8", newline="") as f:
            times = [float(row["epoch_time_s"]) for row in csv.DictReader(f) if row.get("epoch_time_s")]
    except (OSError, KeyError, ValueError):
        return None
    return sum(times) / len(times) if times else None


def seconds_per_epoch(run_dir: str | Path) -> float | None:
    """Training seconds per epoch of a run folder (the efficiency table, paper Tab. 10).

    A plain run: the mean ``epoch_time_s`` of its ``log.csv``. A staged (PFL) run: every
    stage counts, spread over the final network's E epochs — each single-organ network's
    mean epoch time × its epochs / E (its ``stage1_epochs``; = E by default, so its mean
    epoch time), plus the final network's mean epoch time, plus the labelling time / E. None
    while a part is missing.
    """
    layout = RunLayout(run_dir)
    record = read_pipeline_record(layout.root)
    if record is None:
        return mean_epoch_time(layout.log_csv)
    epochs = record["epochs"]
    stage1 = record.get("stage1", {})
    # a record from before stage1_epochs existed: each network trained the full schedule
    shares = [(stage1[name].get("epochs") or epochs) / epochs for name in stage1] + [1.0]
    runs = [layout.stage1_network(name) for name in stage1] + [layout.stage3]
    times = [mean_epoch_time(run.log_csv) for run in runs]
    labelling = record.get("stage2", {}).get("seconds")
    if any(t is None for t in times) or labelling is None:
        return None
    return sum(t * share for t, share in zip(times, shares)) + labelling / epochs
