"""DSC / HD95 metrics and evaluation tables (see :mod:`tctseg.evaluation.metrics` for the
empty-mask convention and :mod:`tctseg.evaluation.evaluate` for folders and outputs)."""

from __future__ import annotations

from tctseg.evaluation.evaluate import (
    CaseClassMetric,
    EvaluationResult,
    evaluate_case,
    evaluate_files,
    evaluate_folders,
    merge_results,
    result_markdown,
    to_global_ids,
    write_csv,
    write_json,
    write_markdown,
)
from tctseg.evaluation.metrics import dice, hd95, image_diagonal_mm

__all__ = [
    "CaseClassMetric",
    "EvaluationResult",
    "dice",
    "evaluate_case",
    "evaluate_files",
    "evaluate_folders",
    "hd95",
    "image_diagonal_mm",
    "merge_results",
    "result_markdown",
    "to_global_ids",
    "write_csv",
    "write_json",
    "write_markdown",
]
