"""`run_compare`: the paper's experiments on the config's data, one table each.

    tables = run_compare(config, ["tct", "tal"], "runs/compare", seeds=3)

Every method trains on the same data, with the same budget and the same seeds
(``train.seed + k`` for seed k), through ``experiment.run_method``. Tables:

- ``main`` (Tab. 1/2): per-class DSC and HD95 per method on the test cases held out from the
  training datasets (:mod:`tctseg.compare.testsets`; every test dataset where none is held
  out); ``paired``, ``efficiency``, ``lowdata`` and ``ablation`` score the same sets;
- ``paired``: the main runs' per-seed differences of the first method against each other
  method (mean DSC, per-class DSC, mean HD95), a paired t-test and an exact Wilcoxon test,
  and every run's wall time;
- ``efficiency`` (Tab. 10): parameters at inference, training s/epoch, inference s/patch;
- ``lowdata`` (Tab. 3): each training dataset cut to 20/50/100% of its cases;
- ``ablation`` (Tab. 5, 7, 8, 9): TCT with one switch changed at a time;
- ``generalisation`` (Tab. 11/12): the main runs per test dataset, unseen (fully labeled
  sets no training set reads) and held-out ones alike, each marked;
- ``transfer`` (Tab. 4): fine-tuning each method's trained model on part of a fully labeled
  set against training from scratch, evaluated on its held-out part.

Written to ``<output>/tables/<name>.{md,csv}``, ``<output>/results.json`` (the main table's
means, and for CLIP-Driven the record of its text embeddings' source) and the HTML report;
runs live in ``<output>/<table>/<variant>/seed<k>/``. CLIP-Driven is compared on the
authors' CLIP embeddings or on what the config names: a missing official file is an error
here, not a silent fallback to MiniLM.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tctseg.compare.efficiency import inference_parameters, inference_seconds
from tctseg.compare.ensembles import ensemble_result
from tctseg.compare.paired import paired_differences
from tctseg.compare.runs import RunBook
from tctseg.compare.subsets import fraction_cases, split_half, with_training_fraction
from tctseg.compare.tables import MISSING, CompareTable, budget_line, format_duration, mean_sd, plural, write_table
from tctseg.compare.testsets import classify_test_sets, restrict
from tctseg.config import Config, DatasetConfig
from tctseg.errors import ConfigError
from tctseg.experiment import TestCase, write_ground_truths
from tctseg.files.layout import LOG_CSV, METRICS_STEM, CompareLayout
from tctseg.files.outputs import write_atomically
from tctseg.methods import method_class

TABLE_NAMES = ("main", "paired", "efficiency", "lowdata", "ablation", "generalisation", "transfer")
DEFAULT_FRACTIONS = (0.2, 0.5, 1.0)
PAPER_PATCH = (192, 192, 64)
# the from-scratch row of the transfer table: the bare U-Net with a plain (marginal) Dice loss
TRANSFER_SCRATCH_METHOD = "tal"
# a class whose test DSC (its mean over the test cases) is below this in a run was "dropped"
# by that run: the model never learned the organ (issue 26's count)
DROPPED_DSC = 0.10

# (paper table, variant folder, row label, method switches changed from the config's own)
ABLATIONS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("Tab. 5", "consistency", "with task consistency", {"consistency": True}),
    ("Tab. 5", "no_consistency", "without task consistency", {"consistency": False}),
    ("Tab. 7", "threshold_none", "threshold: none", {"threshold": None}),
    ("Tab. 7", "threshold_0.5", "threshold: 0.5", {"threshold": 0.5}),
    ("Tab. 7", "threshold_batch_mean", "threshold: batch mean", {"threshold": "batch_mean"}),
    ("Tab. 7", "threshold_task_mean", "threshold: task mean", {"threshold": "task_mean"}),
    ("Tab. 7", "threshold_median", "threshold: median", {"threshold": "median"}),
    ("Tab. 7", "empty_as_one", "absent = IoU 1, previous rule", {"empty_classes": "as_one"}),
    ("Tab. 7", "empty_drop", "absent terms dropped", {"empty_classes": "drop"}),
    ("Tab. 8", "iou_filter", "IoU filter", {"filter": "iou"}),
    ("Tab. 8", "confidence_filter", "confidence filter instead of IoU", {"filter": "confidence"}),
    ("Tab. 9", "uwl", "UWL", {"weighting": "uwl"}),
    ("Tab. 9", "uauwl", "UAUWL", {"weighting": "uauwl"}),
)


def metric_header(classes: Sequence[str]) -> list[str]:
    """Per-class DSC, per-class HD95, then the means."""
    return [f"{c} DSC (%)" for c in classes] + [f"{c} HD95 (mm)" for c in classes] + ["mean DSC (%)", "mean HD95 (mm)"]


def metric_cells(results: Sequence[dict[str, Any]], classes: Sequence[str], dataset: str | None = None) -> list[str]:
    """The :func:`metric_header` cells of one row, mean ± sd over ``results`` (one per seed)."""
    scores = [r.get("per_dataset", {}).get(dataset, {}) if dataset else r for r in results]
    per_class = [s.get("per_class") or {} for s in scores]
    dsc = [mean_sd([p.get(c, {}).get("dsc") for p in per_class], scale=100) for c in classes]
    hd = [mean_sd([p.get(c, {}).get("hd95") for p in per_class]) for c in classes]
    return dsc + hd + [mean_sd([s.get("mean_dsc") for s in scores], scale=100), mean_sd([s.get("mean_hd95") for s in scores])]


def dropped_classes(results: Sequence[dict[str, Any]], classes: Sequence[str],
                    below: float = DROPPED_DSC) -> list[tuple[int, str, float]]:
    """``(run index, class, DSC)`` of every class a run scored below ``below``, in run order.

    ``results``: one ``result.json`` per seed. A class a run did not score (no test case
    annotates it) is not counted.
    """
    dropped = []
    for k, result in enumerate(results):
        for name in classes:
            dsc = _class_dsc(result, name)
            if dsc is not None and not math.isnan(float(dsc)) and float(dsc) < below:
                dropped.append((k, name, float(dsc)))
    return dropped


def dropped_note(results: dict[str, Sequence[dict[str, Any]]], classes: Sequence[str]) -> str:
    """The main table's line counting each method's dropped classes (:func:`dropped_classes`)."""
    parts = []
    for method, runs in results.items():
        scored = sum(_class_dsc(r, c) is not None for r in runs for c in classes)
        dropped = dropped_classes(runs, classes)
        which = "; ".join(f"seed {k} {name} {100 * dsc:.1f} %" for k, name, dsc in dropped)
        parts.append(f"{method} {len(dropped)} of {scored}" + (f" ({which})" if which else ""))
    return (f"Dropped classes (a class whose test DSC is below {100 * DROPPED_DSC:.0f} % in a run), "
            f"out of runs × classes: {', '.join(parts)}.")


def seed_config(config: Config, seed_index: int) -> Config:
    """``config`` for seed k: ``train.seed + k``."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=config.train.seed + seed_index))


def tct_variant(config: Config, **switches: Any) -> Config:
    """``config`` with TCT as the method and some of its switches changed."""
    return config.with_method("tct", **switches)


def _class_dsc(result: dict[str, Any], name: str) -> float | None:
    return (result.get("per_class") or {}).get(name, {}).get("dsc")


def _diff(a: float | None, b: float | None, scale: float) -> str:
    if a is None or b is None or math.isnan(float(a)) or math.isnan(float(b)):
        return MISSING
    return f"{scale * (float(a) - float(b)):+.2f}"


def _p(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.3f}"


def _per_case(seconds: float | None, cases: int) -> float | None:
    return None if seconds is None or not cases else seconds / cases


def _wall_time(results: Sequence[dict[str, Any]]) -> float:
    unique = {r["folder"]: r.get("wall_time_s") or 0.0 for r in results}
    return float(sum(unique.values()))


class Comparison:
    """The runs and tables of one ``tctseg compare``."""

    def __init__(
        self,
        config: Config,
        methods: Sequence[str],
        output: Path,
        *,
        seeds: int,
        fractions: Sequence[float],
        transfer_dataset: str | None,
        infer_patch: Sequence[int],
        device: str,
        progress: bool,
        overwrite: bool,
        ablations: Sequence[str] | None = None,
    ):
        self.config = config
        self.ablations = [a for a in ABLATIONS if ablations is None or a[1] in ablations]
        self.methods = list(methods)
        self.output = output
        self.seeds = seeds
        self.fractions = sorted(set(fractions))
        self.transfer_dataset = transfer_dataset
        self.infer_patch = tuple(infer_patch)
        self.device = device
        self.progress = progress
        self.book = RunBook(output, device=device, progress=progress, overwrite=overwrite)
        self._cases: list[TestCase] | None = None
        self._main: dict[str, list[dict[str, Any]]] = {}
        self.sets = classify_test_sets(config)

    # ------------------------------------------------------------------ shared pieces

    @property
    def test_cases(self) -> list[TestCase]:
        """The config's test cases, their ground truths written once under ``<output>/ground_truth``."""
        if self._cases is None:
            from tctseg.preprocessing.cache import prepare

            prepare(self.config, roles=("train", "validation"), progress=self.progress, wait_for_lock=True)
            self._cases = write_ground_truths(self.config, self.output)
        return self._cases

    def run(self, table: str, variant: str, seed: int, config: Config, method: str) -> dict[str, Any]:
        """One run on the config's test cases, scored on the main table's test sets
        (``self.sets.main``; ``per_dataset`` keeps every test set's own scores)."""
        result = self.book.run(table, variant, seed, config, method, self.test_cases)
        return restrict(result, self.sets.main, self.config.classes) if self.sets.split else result

    def main_results(self, method: str) -> list[dict[str, Any]]:
        """One main-table run per seed of ``method``."""
        if method not in self._main:
            self._main[method] = [
                self.run("main", method, k, seed_config(self.config, k), method) for k in range(self.seeds)
            ]
        return self._main[method]

    def ensemble_results(self, method: str) -> dict[str, Any] | None:
        """``method``'s seeds predicting together (:mod:`tctseg.compare.ensembles`); None for one seed."""
        runs = self.main_results(method)
        if len(runs) < 2:
            return None
        folder = CompareLayout(self.output).ensemble("main", method).root
        result = ensemble_result(self.config, method, runs, self.test_cases, folder,
                                 device=self.device, progress=self.progress)
        return restrict(result, self.sets.main, self.config.classes) if self.sets.split else result

    @property
    def finished_main_results(self) -> dict[str, list[dict[str, Any]]]:
        """The main-table runs made (or reused) so far, per method: what ``results.json`` holds."""
        return dict(self._main)

    def budget(self, wall_time_s: float, extra: str = "") -> str:
        return budget_line(self.config, self.seeds, self.device, wall_time_s, extra)

    # ------------------------------------------------------------------ tables

    def main_table(self) -> CompareTable:
        classes = self.config.classes
        results = {m: self.main_results(m) for m in self.methods}
        datasets = [d for d in dict.fromkeys(c.dataset for c in self.test_cases) if d in self.sets.main]
        counts = ", ".join(f"{d} ({plural(sum(c.dataset == d for c in self.test_cases), 'case')})" for d in datasets)
        notes = [
            f"Test datasets: {counts}; each case is scored on the classes its dataset annotates.",
            self.sets.describe(),
            "DSC in %, HD95 in mm; mean ± sd (sample sd) over seeds.",
            dropped_note(results, classes),
        ]
        per_task = [m for m in results if method_class(m).task_prompted]
        if per_task:
            notes.append(f"{', '.join(per_task)}: one sigmoid per class, scored as their authors do: each class "
                         "on its own mask σ > ½, overlaps allowed; the others on their argmax label maps.")
        rows, ensemble_seconds = [], 0.0
        for m, r in results.items():
            rows.append([m] + metric_cells(r, classes))
            ensemble = self.ensemble_results(m)
            if ensemble is not None:
                rows.append([f"{m} ensemble of {len(r)}"] + metric_cells([ensemble], classes))
                ensemble_seconds += ensemble.get("predict_time_s") or 0.0
                notes.append(
                    f"{m} ensemble of {len(r)}: the {len(r)} seeds' checkpoints predicting together (their "
                    f"probabilities averaged, as tctseg predict A.pt B.pt ...): one prediction, so no sd; "
                    f"{ensemble['seconds_per_case']:.1f} s per test case against "
                    f"{mean_sd([_per_case(x.get('predict_time_s'), len(self.test_cases)) for x in r], digits=1)} s "
                    "for one seed."
                )
        return CompareTable(
            name="main",
            title=("Per-class DSC and HD95 on the held-out test cases (paper Tab. 1/2)" if self.sets.held_out
                   else "Per-class DSC and HD95 on the test datasets (paper Tab. 1/2)"),
            header=["method"] + metric_header(classes),
            rows=rows,
            budget=self.budget(sum(_wall_time(r) for r in results.values()) + ensemble_seconds),
            notes=notes,
        )

    def paired_table(self) -> CompareTable:
        """Per seed k: the first method's scores minus each other method's, then the tests."""
        classes = self.config.classes
        results = {m: self.main_results(m) for m in self.methods}
        reference, others = self.methods[0], self.methods[1:]
        header = ["pair", "seed", "A mean DSC (%)", "B mean DSC (%)", "Δ mean DSC (points)"]
        header += [f"Δ {c} DSC (points)" for c in classes]
        header += ["A mean HD95 (mm)", "B mean HD95 (mm)", "Δ mean HD95 (mm)", "A wall time", "B wall time"]
        rows: list[list[str]] = []
        notes = [
            f"A − B per seed: A = {reference}, B = each other method, both trained with seed train.seed + k "
            "(same data order and initialisation seed). Δ DSC in percentage points, Δ HD95 in mm (negative: A closer).",
            f"The main table's test sets: {', '.join(self.sets.main)}.",
            "Summary rows: mean ± sd of the differences over the seeds, the two-sided paired t-test p "
            "and the two-sided exact Wilcoxon signed-rank p (with 5 seeds its smallest possible value is 0.0625).",
        ]
        if not others:
            notes.append("Needs two methods: nothing to pair.")
        for other in others:
            pair = f"{reference} − {other}"
            a_runs, b_runs = results[reference], results[other]
            for k, (a, b) in enumerate(zip(a_runs, b_runs)):
                rows.append(
                    [pair, str(self.config.train.seed + k),
                     mean_sd([a.get("mean_dsc")], scale=100), mean_sd([b.get("mean_dsc")], scale=100),
                     _diff(a.get("mean_dsc"), b.get("mean_dsc"), 100)]
                    + [_diff(_class_dsc(a, c), _class_dsc(b, c), 100) for c in classes]
                    + [mean_sd([a.get("mean_hd95")]), mean_sd([b.get("mean_hd95")]),
                       _diff(a.get("mean_hd95"), b.get("mean_hd95"), 1)]
                    + [format_duration(a.get("wall_time_s") or 0.0), format_duration(b.get("wall_time_s") or 0.0)]
                )
            tests = {
                "mean DSC": paired_differences([r.get("mean_dsc") for r in a_runs], [r.get("mean_dsc") for r in b_runs]),
                **{c: paired_differences([_class_dsc(r, c) for r in a_runs], [_class_dsc(r, c) for r in b_runs])
                   for c in classes},
                "mean HD95": paired_differences([r.get("mean_hd95") for r in a_runs], [r.get("mean_hd95") for r in b_runs]),
            }
            scale = {name: 1.0 if name == "mean HD95" else 100.0 for name in tests}
            summaries = {
                "mean ± sd": {name: mean_sd(t.differences, scale=scale[name]) for name, t in tests.items()},
                "paired t-test p": {name: _p(t.t_pvalue) for name, t in tests.items()},
                "Wilcoxon p": {name: _p(t.wilcoxon_pvalue) for name, t in tests.items()},
            }
            for label, cells in summaries.items():
                rows.append([pair, label, "", "", cells["mean DSC"], *(cells[c] for c in classes), "", "",
                             cells["mean HD95"], "", ""])
        return CompareTable(
            name="paired",
            title="Paired differences between methods, seed by seed, on the test datasets",
            header=header,
            rows=rows,
            budget=self.budget(sum(_wall_time(r) for r in results.values())),
            notes=notes,
        )

    def efficiency_table(self) -> CompareTable:
        from tctseg.methods import build_method
        from tctseg.network import count_parameters

        patch = "×".join(map(str, self.infer_patch))
        main = {m: self.main_results(m) for m in self.methods}
        run_time = sum(_wall_time(r) for r in main.values())
        start = time.perf_counter()
        rows = []
        for m, results in main.items():
            method_config = self.config.with_method(m)
            method = build_method(method_config)
            counted = inference_parameters(method, self._smallest_patch())
            seconds = inference_seconds(method, self.infer_patch, self.device)
            rows.append([
                m,
                f"{counted / 1e6:.3f}",
                f"{count_parameters(method) / 1e6:.3f}",
                mean_sd([r.get("epoch_time_s") for r in results]),
                f"{seconds:.3f}",
                mean_sd([r.get("mean_dsc") for r in results], scale=100),
            ])
            del method
        timing = time.perf_counter() - start
        return CompareTable(
            name="efficiency",
            title="Parameters, training and inference time (paper Tab. 10)",
            header=["method", "parameters at inference (M)", "parameters in training (M)",
                    "training time per epoch (s)", f"inference time per {patch} patch (s)", "mean DSC (%)"],
            rows=rows,
            budget=self.budget(run_time + timing, extra=f"inference patch {patch} on {self.device}"),
            notes=[
                "Parameters at inference: those method.predict_logits uses (TCT's auxiliary task heads "
                "and loss weights excluded); in training: every parameter the method optimises.",
                f"Training time per epoch: mean epoch_time_s of the main runs' {LOG_CSV} (mean ± sd over seeds); "
                "PFL counts all its stages: each single-organ network's and the final network's epoch time, "
                "plus the labelling time spread over the epochs"
                + (f" ({self._pfl_stage1()})" if "pfl" in self.methods else "") + "; "
                f"inference: median of 3 predict_logits calls on one random [1, 1, {', '.join(map(str, self.infer_patch))}] "
                "patch after a warm-up. Timings on shared CPUs are noisy.",
            ],
        )

    def _pfl_stage1(self) -> str:
        """What PFL's training time counts: N + 1 full trainings, or a shorter stage 1."""
        from tctseg.methods.pfl import stage1_epochs

        epochs = self.config.train.epochs
        stage1 = stage1_epochs(self.config.with_method("pfl"))
        if stage1 == epochs:
            return (f"N + 1 full trainings of {plural(epochs, 'epoch')}, N the single-organ networks; the paper's "
                    "≈ 2 × TAL (Tab. 10) needs a shorter stage 1: method.options.stage1_epochs ≈ train.epochs / N")
        return (f"its single-organ networks trained {stage1} of the final network's {plural(epochs, 'epoch')} each "
                "(method.options.stage1_epochs), so each counts with that share")

    def _smallest_patch(self) -> tuple[int, ...]:
        # a small patch every U-Net level can halve, leaving 2×2×2 at the bottom (instance norm needs > 1 voxel)
        side = 2 ** self.config.network.depth
        return (side, side, side)

    def lowdata_table(self) -> CompareTable:
        from tctseg.preprocessing.cache import load_prepared

        classes = self.config.classes
        _ = self.test_cases  # prepares the cache
        train_ids: dict[str, list[str]] = {}
        for case in load_prepared(self.config, "train"):
            train_ids.setdefault(case.dataset, []).append(case.case_id)
        rows, used = [], []
        for m in self.methods:
            for f in self.fractions:
                results = []
                for k in range(self.seeds):
                    config = with_training_fraction(seed_config(self.config, k), train_ids, f)
                    results.append(self.run("lowdata", f"{m}_{round(100 * f)}pct", k, config, m))
                used += results
                count = sum(len(fraction_cases(ids, f)) for ids in train_ids.values())
                rows.append([m, f"{round(100 * f)}%", str(count)] + metric_cells(results, classes))
        subsets = "; ".join(f"{d}: {plural(len(ids), 'case')}" for d, ids in train_ids.items())
        return CompareTable(
            name="lowdata",
            title="Low-data regimes: a fraction of each training dataset (paper Tab. 3)",
            header=["method", "training fraction", "training cases"] + metric_header(classes),
            rows=rows,
            budget=self.budget(_wall_time(used)),
            notes=[
                f"Training datasets at 100%: {subsets}. Each keeps the first round(fraction · n) "
                "(at least 1) of its cases by sorted case id; same test sets as the main table.",
                "DSC in %, HD95 in mm; mean ± sd over seeds.",
            ],
        )

    def ablation_table(self) -> CompareTable:
        classes = self.config.classes
        own = self.config.method
        rows, used = [], []
        for paper_table, folder, label, switches in self.ablations:
            results = [
                self.run("ablation", folder, k, tct_variant(seed_config(self.config, k), **switches), "tct")
                for k in range(self.seeds)
            ]
            used += results
            same = all(getattr(own, key) == value for key, value in switches.items())
            rows.append([paper_table, label + (" (config)" if same else "")] + metric_cells(results, classes))
        return CompareTable(
            name="ablation",
            title="TCT ablations: consistency (Tab. 5), threshold (Tab. 7), filter (Tab. 8), loss weighting (Tab. 9)",
            header=["paper table", "TCT variant"] + metric_header(classes),
            rows=rows,
            budget=self.budget(_wall_time(used)),
            notes=[
                f"Each row changes one switch of the config's TCT (consistency {own.consistency}, threshold "
                f"{own.threshold}, absent classes {own.empty_classes}, "
                f"{own.filter if own.filter != 'iou' else 'IoU'} filter, weighting "
                f"{own.weighting}); a row equal to the config is marked (config) and is the main table's TCT run.",
                "DSC in %, HD95 in mm; mean ± sd over seeds.",
            ],
        )

    def generalisation_table(self) -> CompareTable:
        classes = self.config.classes
        results = {m: self.main_results(m) for m in self.methods}
        datasets = dict.fromkeys(c.dataset for c in self.test_cases)
        fully = {d for d in datasets if all(set(c.annotated) == set(classes) for c in self.test_cases if c.dataset == d)}
        rows = [
            [d, "yes" if d in fully else "no", m] + metric_cells(r, classes, dataset=d)
            for d in datasets for m, r in results.items()
        ]
        notes = [f"The main table's runs, scored per test dataset ({METRICS_STEM}.json per_dataset); "
                 "– where a dataset does not annotate a class. DSC in %, HD95 in mm; mean ± sd over seeds."]
        if self.sets.held_out:
            notes.append(
                f"Unseen (no training set reads their folders; paper Tab. 11/12): {', '.join(self.sets.unseen) or 'none'}. "
                f"Held out from a training set (the main table's, paper Tab. 1; Fig. 5b's 'Upstream'): "
                f"{', '.join(self.sets.held_out)}."
            )
        return CompareTable(
            name="generalisation",
            title="Per test dataset, fully labeled sets separately (paper Tab. 11/12)",
            header=["test dataset", "fully labeled", "method"] + metric_header(classes),
            rows=rows,
            budget=self.budget(sum(_wall_time(r) for r in results.values())),
            notes=notes,
        )

    def transfer_table(self) -> CompareTable:
        """Rows: from scratch, then each method fine-tuned from its own main checkpoint; × fractions."""
        classes = self.config.classes
        header = ["start", "fine-tune fraction", "fine-tune cases"] + metric_header(classes)
        table = CompareTable(
            name="transfer",
            title="Transfer learning: fine-tuning each trained model vs training from scratch (paper Tab. 4)",
            header=header,
        )
        dataset, ids, why_not = self._transfer_source()
        if dataset is None:
            table.budget = self.budget(0.0)
            table.notes = [f"Not run: {why_not}. Name one with --transfer-dataset."]
            return table
        finetune_ids, heldout_ids = split_half(ids)
        base = dataclasses.replace(self.config, datasets=[
            dataclasses.replace(dataset, role="train", cases=finetune_ids, exclude_cases=None),
            # its own name: a checkpoint's config may not hold one dataset name twice
            dataclasses.replace(dataset, name=f"{dataset.name}_heldout", role="test", cases=heldout_ids, exclude_cases=None),
        ])
        from tctseg.preprocessing.cache import prepare

        prepare(base, roles=("train",), progress=self.progress, wait_for_lock=True)
        transfer_dir = CompareLayout(self.output).table("transfer").root
        cases = write_ground_truths(base, transfer_dir)
        # (row label, folder prefix, method trained, main-table method whose checkpoint starts it)
        starts = [("from scratch", "scratch", TRANSFER_SCRATCH_METHOD, None)]
        starts += [(f"fine-tuned from {m}", f"finetune_{m}", m, m) for m in self.methods]
        used = []
        for label, prefix, method, pretrained in starts:
            for f in self.fractions:
                subset = fraction_cases(finetune_ids, f)
                results = []
                for k in range(self.seeds):
                    config = seed_config(base, k)
                    config = dataclasses.replace(config, datasets=[
                        dataclasses.replace(config.datasets[0], cases=subset), config.datasets[1]])
                    init = Path(self.main_results(pretrained)[k]["checkpoint"]) if pretrained else None
                    results.append(self.book.run("transfer", f"{prefix}_{round(100 * f)}pct", k, config, method, cases, init))
                used += results
                table.rows.append([label, f"{round(100 * f)}%", str(len(subset))] + metric_cells(results, classes))
        table.budget = self.budget(_wall_time(used))
        table.notes = [
            f"Fully labeled set {dataset.name}: fine-tuned on the first {len(finetune_ids)} of its {len(ids)} cases by "
            f"sorted id (a fraction keeps the first round(fraction · n), at least 1), evaluated on the other "
            f"{len(heldout_ids)}. Each method is fine-tuned with its own loss from its main-table checkpoint of "
            f"the same seed; from scratch is the bare U-Net trained with the {TRANSFER_SCRATCH_METHOD.upper()} loss "
            "(on a fully labeled set the marginal Dice is the ordinary Dice). Every row has the same budget.",
            "DSC in %, HD95 in mm; mean ± sd over seeds.",
        ]
        if dataset.role == "train":
            table.notes.append(f"Caution: {dataset.name} is a training dataset, so the pre-trained models have seen these cases.")
        return table

    def _transfer_source(self) -> tuple[DatasetConfig | None, list[str], str]:
        """(dataset, its case ids, why none) — the named dataset, or the first fully labeled one."""
        from tctseg.data.conversion import find_cases

        named = [d for d in self.config.datasets if d.name == self.transfer_dataset]
        if self.transfer_dataset is not None and not named:
            raise ConfigError(f"--transfer-dataset: no dataset {self.transfer_dataset!r} in the config")
        # prefer a set the main runs were not trained on
        candidates = named or sorted(self.config.datasets, key=lambda d: d.role == "train")
        reasons = []
        for dataset in candidates:
            cases = find_cases(dataset, self.config.classes)
            if not all(c.label is not None and set(c.annotated) == set(self.config.classes) for c in cases):
                reasons.append(f"{dataset.name} is not fully labeled")
            elif len(cases) < 2:
                reasons.append(f"{dataset.name} has fewer than 2 cases to split")
            else:
                return dataset, [c.case_id for c in cases], ""
        return None, [], "no fully labeled dataset with at least 2 cases in the config (" + "; ".join(reasons) + ")"


def _check_text_embeddings(config: Config, methods: Sequence[str]) -> None:
    """A comparison names CLIP-Driven's embeddings: refuse (one line) the MiniLM that ``clip``
    would fall back to without the authors' file, unless the config chose it."""
    from tctseg.methods.text_embeddings import (
        CLIP_FILE_KEY, FILE_KEY, MODEL_KEY, OFFICIAL_CLIP_PATH, SHARED_ENV, default_fallback, official_clip_path,
    )

    for name in methods:
        if method_class(name).name != "clip":
            continue
        options = config.with_method(name).method.options
        why = default_fallback(config.classes, options)
        if why is not None:
            point = (f"give your own embeddings ({FILE_KEY}: FILE)" if official_clip_path(options).is_file()
                     else f"set {SHARED_ENV} to the folder holding {OFFICIAL_CLIP_PATH} or {CLIP_FILE_KEY} to the file")
            raise ConfigError(
                f"{MODEL_KEY}: compare does not put MiniLM in place of CLIP-Driven's official CLIP text embeddings "
                f"unasked ({why}): {point}, or choose {MODEL_KEY}: minilm"
            )


def _check_methods_build(config: Config, methods: Sequence[str], tables: Sequence[str]) -> None:
    """Build every method the tables train once, so a missing option fails now, not after hours of training."""
    from tctseg.methods import build_method

    extra = (["tct"] if "ablation" in tables else []) + ([TRANSFER_SCRATCH_METHOD] if "transfer" in tables else [])
    for name in dict.fromkeys([*methods, *extra]):
        build_method(config.with_method(name))


def check_tables(names: Sequence[str]) -> list[str]:
    """Requested table names in the paper's order; ConfigError for an unknown one."""
    unknown = [n for n in names if n not in TABLE_NAMES]
    if unknown:
        raise ConfigError(f"--tables: unknown table {unknown[0]!r}; known: {', '.join(TABLE_NAMES)}, all")
    return [n for n in TABLE_NAMES if n in names]


def run_compare(
    config: Config,
    methods: Sequence[str],
    output: str | Path,
    *,
    seeds: int = 1,
    tables: Sequence[str] = TABLE_NAMES,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    transfer_dataset: str | None = None,
    infer_patch: Sequence[int] = PAPER_PATCH,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    ablations: Sequence[str] | None = None,
) -> dict[str, CompareTable]:
    """Train, evaluate and write the requested tables (``TABLE_NAMES``) into ``<output>/tables/``.

    ``ablations``: the ablation table's rows to run, by variant folder name (``ABLATIONS``,
    e.g. ``["no_consistency", "empty_as_one"]``); None runs every row.
    """
    from tctseg.report import build_report

    if seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {seeds}")
    if not methods:
        raise ConfigError("--methods: no method given")
    if len(infer_patch) != 3 or any(int(p) < 1 for p in infer_patch):
        raise ConfigError(f"--infer-patch: expected three sizes >= 1, got {list(infer_patch)}")
    for f in fractions:
        fraction_cases(["x"], f)  # checks the range before any training
    names = check_tables(tables)
    known = [a[1] for a in ABLATIONS]
    unknown = [a for a in (ablations or []) if a not in known]
    if unknown or (ablations is not None and not ablations):
        raise ConfigError(f"--ablations: unknown row {unknown[0] if unknown else '(none)'!r}; known: {', '.join(known)}")
    _check_text_embeddings(config, methods)
    _check_methods_build(config, methods, names)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    comparison = Comparison(
        config, methods, output, seeds=seeds, fractions=fractions, transfer_dataset=transfer_dataset,
        infer_patch=infer_patch, device=device, progress=progress, overwrite=overwrite, ablations=ablations,
    )
    builders: dict[str, Callable[[], CompareTable]] = {
        "main": comparison.main_table,
        "paired": comparison.paired_table,
        "efficiency": comparison.efficiency_table,
        "lowdata": comparison.lowdata_table,
        "ablation": comparison.ablation_table,
        "generalisation": comparison.generalisation_table,
        "transfer": comparison.transfer_table,
    }
    start = time.perf_counter()
    written: dict[str, CompareTable] = {}
    layout = CompareLayout(output)
    for name in names:
        table = builders[name]()
        write_table(table, layout.tables)
        print(f"[compare] table {name}: {layout.tables / (name + '.md')}", flush=True)
        written[name] = table
    if comparison.finished_main_results:
        write_results(comparison.finished_main_results, config.classes, layout.results_json)
    build_report(output)
    print(f"[compare] {comparison.book.count} run(s), {format_duration(time.perf_counter() - start)}", flush=True)
    return written


def write_results(main: dict[str, list[dict[str, Any]]], classes: Sequence[str], path: Path) -> None:
    """``results.json`` in the report's format: per method the seed means of the main runs."""

    def mean(values: list[Any]) -> float | None:
        finite = [float(v) for v in values if v is not None]
        return sum(finite) / len(finite) if finite else None

    summary = {}
    for method, results in main.items():
        per_class = {}
        for c in classes:
            scores = [r.get("per_class", {}).get(c) for r in results]
            scores = [s for s in scores if s]
            if scores:
                per_class[c] = {"dsc": mean([s.get("dsc") for s in scores]), "hd95": mean([s.get("hd95") for s in scores])}
        summary[method] = {
            "per_class": per_class,
            "mean_dsc": mean([r.get("mean_dsc") for r in results]),
            "mean_hd95": mean([r.get("mean_hd95") for r in results]),
            "wall_time_s": sum(r.get("wall_time_s") or 0.0 for r in results),
            "seeds": len(results),
        }
        # what the runs were made with (CLIP-Driven's embeddings): one record, or each different one
        records = {json.dumps(r["text_embeddings"], sort_keys=True): r["text_embeddings"]
                   for r in results if isinstance(r.get("text_embeddings"), dict)}
        if records:
            found = list(records.values())
            summary[method]["text_embeddings"] = found[0] if len(found) == 1 else found
    text = json.dumps(summary, indent=2) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the comparison's results")
