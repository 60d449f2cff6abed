"""Which test sets the main table scores: held-out cases of a training set, or unseen sets.

The paper scores Tab. 1 (and Tab. 3, 5, 7–10) on cases held out from its partially labeled
training sets, and Tab. 11/12 on fully labeled sets no model trained on (BTCV, WORD,
AMOS-CT). A config says which is which by where a test set comes from:

- **held out**: a test dataset read from the same folder, in the same format, as a training
  dataset (configs/paper_ct.yaml's ``kits19_test`` beside ``kits19``, each with its own
  ``cases:``) — scored in the main table;
- **unseen**: a test dataset from a folder no training dataset reads — scored only per
  dataset, in the generalisation table.

When a config has no held-out test set (every test set unseen, as in the phantom demo) the
main table scores every test set, as it did before this distinction, and says so.

:func:`restrict` re-pools a run's scores over some of its test datasets from the
per-dataset scores every run keeps (``per_dataset`` of ``metrics.json``): per class the
case-weighted mean over the datasets that annotate it, then the mean over classes — the same
means :class:`tctseg.evaluation.evaluate.EvaluationResult` takes over all cases.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tctseg.config import Config, DatasetConfig


def _source(dataset: DatasetConfig) -> tuple[str, str]:
    return dataset.format, os.path.normpath(os.path.abspath(os.path.expanduser(dataset.path)))


@dataclass(frozen=True)
class EvaluationSets:
    """The config's test datasets, split by where they come from."""

    held_out: tuple[str, ...]  # test datasets read from a training dataset's folder
    unseen: tuple[str, ...]  # test datasets from folders no training dataset reads
    held_out_from: dict[str, tuple[str, ...]]  # held-out test dataset → training datasets of its folder

    @property
    def main(self) -> tuple[str, ...]:
        """What the main table scores: the held-out sets, or every test set where there is none."""
        return self.held_out or self.unseen

    @property
    def split(self) -> bool:
        """True when the main table leaves some test sets out (both kinds present)."""
        return bool(self.held_out and self.unseen)

    def describe(self) -> str:
        """One sentence for a table's notes."""
        if not self.held_out:
            return ("No test set is held out from a training set (none shares a training set's folder), "
                    "so every test set is scored here.")
        held = "; ".join(f"{t} (from {', '.join(self.held_out_from[t])})" for t in self.held_out)
        text = f"Scored on the test cases held out from the training sets: {held}."
        if self.unseen:
            text += (f" The unseen test sets ({', '.join(self.unseen)}: no training set reads their folders) "
                     "are scored only in the generalisation table.")
        return text


def classify_test_sets(config: Config) -> EvaluationSets:
    """Split ``config``'s test datasets into held-out and unseen ones (module docstring)."""
    trained: dict[tuple[str, str], list[str]] = {}
    for d in config.datasets_with_role("train"):
        trained.setdefault(_source(d), []).append(d.name)
    held_out, unseen, origin = [], [], {}
    for d in config.datasets_with_role("test"):
        sources = trained.get(_source(d))
        if sources:
            held_out.append(d.name)
            origin[d.name] = tuple(sources)
        else:
            unseen.append(d.name)
    return EvaluationSets(tuple(held_out), tuple(unseen), origin)


def restrict(result: dict[str, Any], datasets: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """A copy of a run's ``result`` whose ``per_class``, ``mean_dsc`` and ``mean_hd95`` are
    pooled over ``datasets`` only (from ``result["per_dataset"]``); ``scored_on`` names them.

    A class's DSC / HD95 is the mean over the cases of those datasets that annotate it
    (each dataset's per-class mean weighted by its case count); the means are over the
    classes scored. The other keys (``per_dataset``, times, checkpoint) are kept as they are.
    """
    per_dataset = result.get("per_dataset") or {}
    per_class: dict[str, dict[str, float]] = {}
    for c in classes:
        scores = [(per_dataset.get(d) or {}).get("per_class", {}).get(c) for d in datasets]
        scores = [s for s in scores if s and s.get("cases")]
        cases = sum(int(s["cases"]) for s in scores)
        if not cases:
            continue
        per_class[c] = {
            "dsc": sum(float(s["dsc"]) * int(s["cases"]) for s in scores) / cases,
            "hd95": sum(float(s["hd95"]) * int(s["cases"]) for s in scores) / cases,
            "cases": cases,
        }

    def mean(key: str) -> float | None:
        return sum(v[key] for v in per_class.values()) / len(per_class) if per_class else None

    return {**result, "per_class": per_class, "mean_dsc": mean("dsc"), "mean_hd95": mean("hd95"),
            "scored_on": list(datasets)}
