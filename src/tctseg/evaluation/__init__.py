"""Evaluation tables: DSC / HD95 per case and class over prediction folders
(:mod:`tctseg.evaluation.evaluate`, folders and outputs). The metrics themselves live below
inference and training in :mod:`tctseg.metrics.masks` (the empty-mask convention); ``dice``,
``hd95`` and ``image_diagonal_mm`` are re-exported here for ``from tctseg.evaluation import dice``."""

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
from tctseg.metrics.masks import dice, hd95, image_diagonal_mm

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
