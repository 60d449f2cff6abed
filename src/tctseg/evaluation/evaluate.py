"""Evaluate a folder of predicted label maps against a folder of ground truths.

Predictions are NIfTI label maps in GLOBAL ids (1..N in the order of ``classes``, 0 =
background), or per-task masks: a 4-D ``[X, Y, Z, N]`` stack whose channel c−1 is class c's
own binary mask (``tctseg predict --task-masks``; task-prompted methods are scored this way,
each class on its own mask, so two classes may claim one voxel). Ground truths are NIfTI
label maps in their dataset's OWN ids, mapped to global classes through ``label_map``
(source id → global class name; ``background`` / ``ignore`` map to 0; default: the ground
truth already holds global ids). Files are matched by case id (the file name without
``.nii`` / ``.nii.gz`` and without an nnU-Net ``_0000`` channel suffix). Each case is scored
only on the classes its dataset annotates (``annotated``), with the voxel spacing of the
ground truth's affine (its column lengths, as everywhere in tctseg: not the header's pixdim,
which may disagree with the sform or be NaN), using the metrics and empty-mask convention of
:mod:`tctseg.metrics.masks` (so no value is NaN).

Means: a class's mean is over the cases that annotate it; a dataset's mean DSC / HD95 is the
mean of its per-class means (every class weighs the same, however many cases annotate it).
DSC is stored as a fraction in [0, 1] (CSV, JSON) and shown in % in the markdown table.

``metrics.json`` (what the report reads)::

    {"dataset": "kits19", "classes": ["liver", ...], "convention": "...",
     "per_class": {"liver": {"dsc": 0.93, "hd95": 4.1, "cases": 10}, ...},
     "mean_dsc": 0.9, "mean_hd95": 5.2,
     "per_dataset": {"kits19": {"per_class": {...}, "mean_dsc": ..., "mean_hd95": ...}},
     "cases": [{"case_id": "c1", "dataset": "kits19", "class": "liver", "dsc": 0.95,
                "hd95": 3.0, "gt_voxels": 1234, "pred_voxels": 1200}, ...]}
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from tctseg.data.conversion.common import UNLABELLED_NAMES, relabel
from tctseg.data.io import affine_spacing, is_nifti
from tctseg.errors import DataError, LabelError
from tctseg.files.outputs import write_atomically
from tctseg.metrics.masks import dice, hd95
from tctseg.inference import inputs

CONVENTION = (
    "HD95 is the larger of the two directed 95th percentiles of surface distances, in mm "
    "(voxel spacing honoured). Both masks empty: DSC 1, HD95 0. Exactly one empty: DSC 0, "
    "HD95 = the image's field-of-view diagonal in mm."
)


@dataclass
class CaseClassMetric:
    """One class of one case."""

    case_id: str
    dataset: str
    class_name: str
    dsc: float
    hd95: float
    gt_voxels: int
    pred_voxels: int


@dataclass
class EvaluationResult:
    """Per class per case rows, and their means per class and per dataset."""

    classes: list[str]
    rows: list[CaseClassMetric] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.rows))

    def per_class(self, dataset: str | None = None) -> dict[str, dict[str, float]]:
        """``{class: {dsc, hd95, cases}}`` over the cases that annotate it (of one dataset)."""
        out = {}
        for name in self.classes:
            rows = [r for r in self.rows if r.class_name == name and dataset in (None, r.dataset)]
            if rows:
                out[name] = {
                    "dsc": float(np.mean([r.dsc for r in rows])),
                    "hd95": float(np.mean([r.hd95 for r in rows])),
                    "cases": len(rows),
                }
        return out

    def mean(self, dataset: str | None = None) -> dict[str, float]:
        """``{dsc, hd95}``: means of the per-class means (NaN only when nothing was evaluated)."""
        per_class = self.per_class(dataset)
        if not per_class:
            return {"dsc": math.nan, "hd95": math.nan}
        return {
            "dsc": float(np.mean([v["dsc"] for v in per_class.values()])),
            "hd95": float(np.mean([v["hd95"] for v in per_class.values()])),
        }

    def to_dict(self) -> dict[str, Any]:
        mean = self.mean()
        per_dataset = {}
        for name in self.datasets:
            m = self.mean(name)
            per_dataset[name] = {"per_class": self.per_class(name), "mean_dsc": _finite_or_none(m["dsc"]), "mean_hd95": _finite_or_none(m["hd95"])}
        return {
            "dataset": self.datasets[0] if len(self.datasets) == 1 else None,
            "classes": list(self.classes),
            "convention": CONVENTION,
            "per_class": self.per_class(),
            "mean_dsc": _finite_or_none(mean["dsc"]),
            "mean_hd95": _finite_or_none(mean["hd95"]),
            "per_dataset": per_dataset,
            "cases": [
                {
                    "case_id": r.case_id,
                    "dataset": r.dataset,
                    "class": r.class_name,
                    "dsc": r.dsc,
                    "hd95": r.hd95,
                    "gt_voxels": r.gt_voxels,
                    "pred_voxels": r.pred_voxels,
                }
                for r in self.rows
            ],
        }


def _finite_or_none(x: float) -> float | None:
    # JSON has no NaN; a mean over nothing is written as null.
    return None if math.isnan(x) else x


def merge_results(results: Iterable[EvaluationResult]) -> EvaluationResult:
    """One result holding the rows of several (e.g. one per test dataset, same classes)."""
    results = list(results)
    if not results:
        raise ValueError("merge_results needs at least one result")
    merged = EvaluationResult(classes=list(results[0].classes))
    for r in results:
        if r.classes != merged.classes:
            raise ValueError(f"cannot merge results over different classes: {r.classes} vs {merged.classes}")
        merged.rows.extend(r.rows)
    return merged


# --------------------------------------------------------------------------- one case


def evaluate_case(
    pred_array: np.ndarray,
    gt_array_global: np.ndarray,
    spacing: Sequence[float],
    class_ids: Iterable[int],
) -> dict[int, dict[str, float]]:
    """DSC and HD95 of each global class id in ``class_ids``.

    ``pred_array``: an integer label map ``[X, Y, Z]`` in global ids, or per-task masks
    ``[X, Y, Z, N]`` (class c's mask is ``pred_array[..., c-1] > 0``; masks may overlap);
    ``gt_array_global``: an integer label map ``[X, Y, Z]`` in global ids; ``spacing``: voxel
    size in mm per axis. Returns ``{class_id: {"dsc", "hd95", "gt_voxels", "pred_voxels"}}``.
    """
    task_masks = pred_array.ndim == gt_array_global.ndim + 1
    if pred_array.shape[: gt_array_global.ndim] != gt_array_global.shape or pred_array.ndim > gt_array_global.ndim + 1:
        raise DataError(f"prediction shape {pred_array.shape} differs from ground truth {gt_array_global.shape}")
    out = {}
    for class_id in class_ids:
        pred_mask = pred_array[..., class_id - 1] > 0 if task_masks else pred_array == class_id
        gt_mask = gt_array_global == class_id
        out[int(class_id)] = {
            "dsc": dice(pred_mask, gt_mask),
            "hd95": hd95(pred_mask, gt_mask, spacing),
            "gt_voxels": int(gt_mask.sum()),
            "pred_voxels": int(pred_mask.sum()),
        }
    return out


# --------------------------------------------------------------------------- label maps


def to_global_ids(
    labels: np.ndarray, classes: Sequence[str], label_map: dict[int, str] | None, source: str | Path
) -> np.ndarray:
    """Map a label volume in its dataset's ids to global ids (uint8/uint16 ``[X, Y, Z]``).

    ``label_map``: source id → global class name (``background``/``ignore`` → 0); None means
    the volume already holds global ids 0..N. A value the map does not define is a
    :class:`LabelError` naming ``source``.
    """
    labels = _as_integer_labels(labels, source)
    present = [int(v) for v in np.unique(labels)]
    if label_map is None:
        bad = [v for v in present if not 0 <= v <= len(classes)]
        if bad:
            raise LabelError(
                f"{source}: holds label {bad[0]}, but global ids are 0..{len(classes)} "
                f"({', '.join(classes)}); give the dataset's label map"
            )
        return labels.astype(np.uint16, copy=False)
    lookup: dict[int, int] = {0: 0}
    for source_id, name in label_map.items():
        if name in UNLABELLED_NAMES:
            lookup[int(source_id)] = 0
        elif name in classes:
            lookup[int(source_id)] = classes.index(name) + 1
        else:
            raise LabelError(f"label map: class {name!r} (label {source_id}) is not one of {list(classes)}")
    bad = [v for v in present if v not in lookup]
    if bad:
        raise LabelError(
            f"{source}: holds label {bad[0]}, but the label map defines only {sorted(lookup)}"
        )
    return relabel(labels, lookup, np.uint16)


def annotated_classes(classes: Sequence[str], label_map: dict[int, str] | None) -> list[str]:
    """The default annotated set: every global class the label map reaches (all without a map)."""
    if label_map is None:
        return list(classes)
    reached = set(label_map.values())
    return [c for c in classes if c in reached]


def _as_integer_labels(labels: np.ndarray, source: str | Path) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind in "iub":
        return labels
    rounded = np.rint(labels)
    if not np.allclose(labels, rounded, atol=1e-3):
        raise LabelError(f"{source}: a label map must hold whole numbers, found {labels.dtype} values like {labels.flat[0]}")
    return rounded.astype(np.int64)


# --------------------------------------------------------------------------- folders


def case_id_of(path: str | Path) -> str | None:
    """Case id of a NIfTI file name (:func:`tctseg.inference.inputs.case_id_of`: suffix and
    nnU-Net ``_0000`` stripped); None if not NIfTI or hidden."""
    path = Path(path)
    if not is_nifti(path) or path.name.startswith("."):
        return None
    return inputs.case_id_of(path)


def nifti_files_by_case(folder: str | Path) -> dict[str, Path]:
    """``{case_id: path}`` of the NIfTI files directly in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        case_id = case_id_of(path)
        if case_id is None or not path.is_file():
            continue
        if case_id in found:
            raise DataError(f"{folder}: case {case_id!r} has two files, {found[case_id].name} and {path.name}")
        found[case_id] = path
    return found


def evaluate_files(
    pred_path: str | Path,
    gt_path: str | Path,
    classes: Sequence[str],
    label_map: dict[int, str] | None = None,
    annotated: Sequence[str] | None = None,
    dataset_name: str = "dataset",
    case_id: str | None = None,
) -> list[CaseClassMetric]:
    """Score one predicted NIfTI against one ground-truth NIfTI (see the module docstring)."""
    pred_path, gt_path = Path(pred_path), Path(gt_path)
    case_id = case_id or case_id_of(gt_path) or gt_path.name
    pred_img, gt_img = _load(pred_path), _load(gt_path)
    task_masks = len(pred_img.shape) == 4 and len(gt_img.shape) == 3  # [X, Y, Z, N] per-task masks
    if pred_img.shape[:3] != gt_img.shape[:3] or (len(pred_img.shape) != len(gt_img.shape) and not task_masks):
        raise DataError(
            f"case {case_id}: prediction {pred_path} has shape {pred_img.shape}, "
            f"ground truth {gt_path} has shape {gt_img.shape}"
        )
    # the voxel size from the affine (its column lengths), as everywhere else in tctseg: the
    # header's pixdim may disagree with the sform nibabel reads the affine from, or be NaN
    spacing = list(affine_spacing(gt_img.affine))
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise DataError(
            f"{gt_path}: voxel spacing {[round(s, 6) for s in spacing]} mm from its affine (sform, qform or pixdim) "
            "holds a zero or non-finite size"
        )
    if not np.allclose(pred_img.affine, gt_img.affine, atol=1e-2, rtol=1e-3):
        raise DataError(  # one line: the command line prints it as one message
            f"case {case_id}: prediction {pred_path} and ground truth {gt_path} lie on different "
            f"grids (affines differ: {np.round(pred_img.affine, 3).tolist()} vs {np.round(gt_img.affine, 3).tolist()})"
        )
    pred = _as_integer_labels(np.asarray(pred_img.dataobj), pred_path)
    if task_masks:
        if pred.shape[3] != len(classes):
            raise LabelError(
                f"{pred_path}: holds {pred.shape[3]} task masks, but there are {len(classes)} classes ({', '.join(classes)})"
            )
    else:
        bad = [int(v) for v in np.unique(pred) if not 0 <= v <= len(classes)]
        if bad:
            raise LabelError(f"{pred_path}: holds label {bad[0]}, but global ids are 0..{len(classes)}")
    gt = to_global_ids(np.asarray(gt_img.dataobj), classes, label_map, gt_path)
    names = list(annotated) if annotated is not None else annotated_classes(classes, label_map)
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise LabelError(f"annotated class {unknown[0]!r} is not one of {list(classes)}")
    scores = evaluate_case(pred, gt, spacing, [classes.index(n) + 1 for n in names])
    return [
        CaseClassMetric(case_id, dataset_name, name, s["dsc"], s["hd95"], s["gt_voxels"], s["pred_voxels"])
        for name, s in zip(names, scores.values())
    ]


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    classes: Sequence[str],
    label_map: dict[int, str] | None = None,
    annotated: Sequence[str] | None = None,
    dataset_name: str = "dataset",
    progress: bool = True,
) -> EvaluationResult:
    """Score every ground truth in ``gt_dir`` against its prediction in ``pred_dir``.

    A ground truth without a prediction is a :class:`DataError` naming the case; predictions
    without a ground truth are ignored.
    """
    classes = list(classes)
    gts = nifti_files_by_case(gt_dir)
    if not gts:
        raise DataError(f"{gt_dir}: no NIfTI ground truth (.nii / .nii.gz) found")
    preds = nifti_files_by_case(pred_dir)
    missing = [c for c in gts if c not in preds]
    if missing:
        raise DataError(
            f"{pred_dir}: no prediction for case {missing[0]!r} (ground truth {gts[missing[0]]})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    result = EvaluationResult(classes=classes)
    for case_id, gt_path in tqdm(gts.items(), desc=f"evaluate {dataset_name}", unit="case", disable=not progress):
        result.rows.extend(
            evaluate_files(preds[case_id], gt_path, classes, label_map, annotated, dataset_name, case_id)
        )
    return result


def _load(path: Path) -> nib.Nifti1Image:
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises several types for unreadable files
        raise DataError(f"{path}: cannot read as NIfTI ({e})") from None


# --------------------------------------------------------------------------- writers
# each through tctseg.files.outputs.write_atomically: a killed or full-disk run leaves the earlier
# file or none, never half a table, and a failed write is one OutputError naming the file


def write_json(result: EvaluationResult, path: str | Path) -> Path:
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    return write_atomically(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"), "metrics")


def write_csv(result: EvaluationResult, path: str | Path) -> Path:
    """One row per class per case: case_id, dataset, class, dsc, hd95_mm, gt_voxels, pred_voxels."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["case_id", "dataset", "class", "dsc", "hd95_mm", "gt_voxels", "pred_voxels"])
            for r in result.rows:
                writer.writerow([r.case_id, r.dataset, r.class_name, f"{r.dsc:.6f}", f"{r.hd95:.4f}", r.gt_voxels,
                                 r.pred_voxels])

    return write_atomically(Path(path), write, "metrics")


def markdown_table(per_class: dict[str, dict[str, float]], mean: dict[str, float], classes: Sequence[str]) -> str:
    """Rows = classes + "mean"; columns DSC (%) and HD95 (mm)."""
    lines = ["| class | DSC (%) | HD95 (mm) | cases |", "|---|---:|---:|---:|"]
    for name in classes:
        if name in per_class:
            v = per_class[name]
            lines.append(f"| {name} | {100 * v['dsc']:.2f} | {v['hd95']:.2f} | {v['cases']} |")
        else:
            lines.append(f"| {name} | – | – | 0 |")
    lines.append(f"| **mean** | **{_pct(mean['dsc'])}** | **{_mm(mean['hd95'])}** | |")
    return "\n".join(lines)


def result_markdown(result: EvaluationResult) -> str:
    """The markdown table of a result (plus one table per dataset when there are several)."""
    parts = [markdown_table(result.per_class(), result.mean(), result.classes)]
    if len(result.datasets) > 1:
        for name in result.datasets:
            parts.append(f"\n**{name}**\n\n" + markdown_table(result.per_class(name), result.mean(name), result.classes))
    return "\n".join(parts) + "\n"


def write_markdown(result: EvaluationResult, path: str | Path) -> Path:
    text = result_markdown(result)
    return write_atomically(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"), "metrics")


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _mm(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.2f}"
