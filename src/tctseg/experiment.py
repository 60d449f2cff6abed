"""An experiment end to end: train each method, predict the test sets, evaluate, report.

This is what ``tctseg run`` and ``make demo`` do, written with the library's own stages:

    prepare cache → Trainer.fit() per method → predict_cases() on every test dataset
    → evaluate against the ground truth (in the scan's own space) → results.json → report

Run folder::

    <run_dir>/
      ground_truth/<dataset>/<case_id>.nii.gz   test labels in GLOBAL ids, on the scan's grid
      <method>/                                 one training run folder per method (train's;
                                                PFL: stage1/, stage2/, stage3/ inside, see
                                                tctseg.training.pfl_pipeline)
        predictions/<dataset>/<case_id>.nii.gz, predictions/index.json
        predictions/<dataset>/<case_id>_tasks.nii.gz   task-prompted methods: each class's own mask
        metrics/metrics.{json,csv,md}
      results.json                              per method: per-class and mean DSC / HD95, times;
                                                CLIP-Driven: "text_embeddings", the record of
                                                its embeddings' source its checkpoint holds
      report.html, report.md

Scoring: a method with one softmax over the classes is scored on its label map. A
task-prompted method (``Method.task_prompted``: DoDNet, CLIP-Driven, Hermes — one sigmoid
per class) is scored as its authors score it: each class on its own mask σ_c > ½
(``<case_id>_tasks.nii.gz``), overlaps allowed, so a task that also claims another organ
(TCT paper Fig. 4: both kidneys for one kidney task) loses the DSC it would hide in an
argmax label map. Each test case is predicted with the tasks its dataset annotates
(:func:`case_tasks`): Hermes then attends only to their task tokens, as its authors'
evaluation passes the test dataset's task list; for the other methods it changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tctseg.checkpoint import load_checkpoint, recorded_sources
from tctseg.config import Config, InferenceConfig
from tctseg.data.conversion import find_cases
from tctseg.data.io import save_nifti
from tctseg.errors import ConfigError, DataError
from tctseg.evaluation.evaluate import EvaluationResult, evaluate_files, write_csv, write_json, write_markdown
from tctseg.files.layout import ExperimentLayout, PredictionsLayout, RunLayout
from tctseg.files.outputs import write_atomically
from tctseg.inference.export import write_index
from tctseg.inference.inputs import PredictionInput
from tctseg.inference.predict import predict_cases


@dataclass(frozen=True)
class TestCase:
    """A test scan, its ground truth in global ids on the scan's own grid, and what it annotates."""

    dataset: str
    case_id: str
    image: Path
    ground_truth: Path
    annotated: tuple[str, ...]


def write_ground_truths(config: Config, run_dir: Path) -> list[TestCase]:
    """Convert every test dataset's labels to global ids, once, under ``run_dir/ground_truth``."""
    cases = []
    for dataset in config.datasets_with_role("test"):
        for source in find_cases(dataset, config.classes):
            if source.label is None:
                raise DataError(f"{source.image}: test case {source.case_id} of {dataset.name} has no label")
            path = ExperimentLayout(run_dir).ground_truth_of(dataset.name, source.case_id)
            if not path.exists():
                image, label = source.load()
                save_nifti(label.astype(np.uint8), image.affine, path, dtype=np.uint8)
            cases.append(TestCase(dataset.name, source.case_id, source.image, path, tuple(source.annotated)))
    if not cases:
        raise ConfigError("datasets: no dataset has role 'test', so there is nothing to evaluate")
    return cases


def case_tasks(case: TestCase, classes: Sequence[str]) -> tuple[int, ...]:
    """The global class ids (1..N) a test case's dataset annotates."""
    return tuple(sorted(list(classes).index(name) + 1 for name in case.annotated))


def predict_test_cases(
    checkpoint: Path | tuple, cases: Sequence[TestCase], method_dir: Path, *, device: str, progress: bool,
    task_masks: bool = False, classes: Sequence[str] | None = None, inference: InferenceConfig | None = None,
) -> float:
    """Predict every test case into ``method_dir/predictions/<dataset>/``; returns seconds taken.

    ``checkpoint``: a checkpoint file or ``(method, config)``; ``task_masks``: also write each
    class's own mask (task-prompted methods). ``classes`` (the config's): each case is
    predicted with the tasks its dataset annotates (:func:`case_tasks`; Hermes then uses only
    their task tokens, as its authors evaluate; the other methods are unchanged); None:
    every task. ``inference`` (the experiment config's): its settings win over those the
    checkpoint was trained with, so a run re-scored with new post-processing (e.g.
    ``largest_component``) uses them; None: the checkpoint's.
    """
    start = time.perf_counter()
    run = RunLayout(method_dir)
    settings = {} if inference is None else dataclasses.asdict(inference)  # predict_cases' own keywords
    results = []
    for dataset in dict.fromkeys(c.dataset for c in cases):
        inputs = [
            PredictionInput(c.case_id, c.image, c.ground_truth, c.dataset,
                            case_tasks(c, classes) if classes is not None else None)
            for c in cases if c.dataset == dataset
        ]
        results += predict_cases(checkpoint, inputs, run.predictions_for(dataset), overwrite=True,
                                 save_task_masks=task_masks, device=device, progress=progress, **settings)
    failed = [r for r in results if not r.ok]
    if failed:
        raise DataError(f"prediction failed for {len(failed)} test case(s): " + "; ".join(f"{r.case_id}: {r.error}" for r in failed))
    write_index(run.predictions, results)  # one index over every dataset, for the report
    return time.perf_counter() - start


def evaluate_test_cases(
    config: Config, cases: Sequence[TestCase], method_dir: Path, *, task_masks: bool = False
) -> EvaluationResult:
    """DSC / HD95 of each case on the classes its dataset annotates; tables under ``metrics/``.

    ``task_masks``: score each class on its own mask (``<case_id>_tasks.nii.gz``) instead of
    the label map (task-prompted methods).
    """
    result = EvaluationResult(classes=list(config.classes))
    run = RunLayout(method_dir)
    for c in cases:
        predictions = PredictionsLayout(run.predictions_for(c.dataset))
        prediction = predictions.task_masks(c.case_id) if task_masks else predictions.label_map(c.case_id)
        result.rows += evaluate_files(prediction, c.ground_truth, config.classes, None, c.annotated, c.dataset, c.case_id)
    metrics = run.metrics
    metrics.root.mkdir(parents=True, exist_ok=True)
    write_json(result, metrics.json)
    write_csv(result, metrics.csv)
    write_markdown(result, metrics.md)
    return result


def run_method(
    config: Config,
    method: str,
    run_dir: Path,
    cases: Sequence[TestCase],
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
    init_checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Train ``method`` into ``run_dir/<method>``, predict and evaluate the test cases.

    ``init_checkpoint``: start a fresh training from this checkpoint's weights (fine-tuning).
    """
    from tctseg.methods import method_class
    from tctseg.training.build import build_trainer

    per_task = method_class(method).task_prompted  # scored as its authors do (module docstring)
    method_config = config.with_method(method)
    method_dir = ExperimentLayout(run_dir).method(method).root
    start = time.perf_counter()
    # a resumed fine-tuning keeps its own weights; PFL runs its three stages (methods/pfl.py)
    trainer = build_trainer(method_config, method_dir, resume=resume, overwrite=overwrite, device=device,
                            progress=progress, init_checkpoint=init_checkpoint)
    summary = trainer.fit()
    train_seconds = time.perf_counter() - start
    best = Path(summary["best_checkpoint"]) if summary.get("best_checkpoint") else None
    checkpoint = best if best is not None and best.exists() else Path(summary["last_checkpoint"])
    # each test case with its dataset's tasks (Hermes' evaluation; a new scan's predict: all tasks)
    predict_seconds = predict_test_cases(checkpoint, cases, method_dir, device=device, progress=progress,
                                         task_masks=per_task, classes=method_config.classes,
                                         inference=method_config.inference)
    result = evaluate_test_cases(method_config, cases, method_dir, task_masks=per_task)
    mean = result.mean()
    return {
        # what the checkpoint records it was built from (CLIP-Driven: "text_embeddings"), first
        **recorded_sources(load_checkpoint(checkpoint)),
        "scoring": "per_task" if per_task else "label_map",
        "per_class": result.per_class(),
        "mean_dsc": mean["dsc"],
        "mean_hd95": mean["hd95"],
        "checkpoint": str(checkpoint),
        "train_time_s": round(train_seconds, 1),
        "predict_time_s": round(predict_seconds, 1),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }


def run_experiment(
    config: Config,
    methods: Sequence[str],
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Every method under the same data, budget and seed; writes ``results.json`` and the report."""
    from tctseg.preprocessing.cache import prepare
    from tctseg.report import build_report

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    prepare(config, roles=("train", "validation"), progress=progress, wait_for_lock=True)
    cases = write_ground_truths(config, run_dir)
    results: dict[str, Any] = {}
    for method in methods:
        results[method] = run_method(config, method, run_dir, cases, resume=resume, overwrite=overwrite,
                                     device=device, progress=progress)
        text = json.dumps(results, indent=2) + "\n"
        write_atomically(ExperimentLayout(run_dir).results_json, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                         "the experiment's results")
    build_report(run_dir)
    return results
