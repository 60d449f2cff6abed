"""What a run folder records, read without torch: its final folder, PFL's stage record, its
training log (:func:`read_log`, the one reader of ``log.csv``: the report's curves and the
trainer's resume read it here too), its epoch times.

The report and ``tctseg compare`` read a run folder through these functions, so they need
neither the trainer nor PFL's pipeline (nor torch) to do it; the names come from
:class:`tctseg.files.layout.RunLayout`. The pipeline (:mod:`tctseg.training.pfl_pipeline`) writes
``pipeline.json`` and resumes from it through :func:`read_pipeline_record`.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from tctseg.files.layout import RunLayout


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


def read_log_columns(path: str | Path) -> dict[str, list[float]]:
    """A training ``log.csv`` (:mod:`tctseg.training.logging` writes it, one row per epoch) as
    ``{column: one value per row}`` in the header's order: the one reader of that file. An
    empty cell (a value not logged that epoch: validation every few epochs, a ratio with
    nothing to count) or one that is not a number is NaN. Raises OSError (UnicodeDecodeError,
    csv.Error) for a file that cannot be read."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key in row:
            if key is not None:  # cells beyond the header
                columns.setdefault(key, [])
    for key in columns:
        columns[key] = [_number(row.get(key)) for row in rows]
    return columns


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The rows of a training ``log.csv`` (:func:`read_log_columns`), each ``{column: value}``
    without its NaN cells; ``[]`` when there is no such file."""
    if not Path(path).is_file():
        return []
    columns = read_log_columns(path)
    count = len(next(iter(columns.values()), []))
    return [{k: v[i] for k, v in columns.items() if not math.isnan(v[i])} for i in range(count)]


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def mean_epoch_time(log_csv: str | Path) -> float | None:
    """Mean ``epoch_time_s`` over the epochs in a run's ``log.csv`` (None when there is none)."""
    try:
        times = [row["epoch_time_s"] for row in read_log(log_csv) if "epoch_time_s" in row]
    except (OSError, ValueError, csv.Error):
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
