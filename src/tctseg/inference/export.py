"""Prediction outputs: probabilities back to the scan's original grid, and the files of a
prediction folder (like nnU-Net's ``export_prediction.py``).

Label maps, probabilities and task masks are written through :func:`tctseg.data.io.save_nifti`
(atomic, never over an input); ``index.json`` and the per-case reports through
:func:`tctseg.files.outputs.write_atomically`, so a killed run never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from tctseg.data.io import NIFTI_SUFFIXES
from tctseg.errors import OutputError
from tctseg.files.layout import PredictionsLayout
from tctseg.files.outputs import write_atomically
from tctseg.inference.inputs import PredictionInput

if TYPE_CHECKING:
    from tctseg.preprocessing import PreparedGeometry

TASK_THRESHOLD = 0.5  # a task's voxel is in its mask when σ_c > ½ (the authors' threshold)


@dataclass
class PredictionResult:
    """What happened to one case. ``status``: ``written`` | ``skipped`` (output existed) | ``failed``.
    ``models``: the ``{checkpoint, sha256}`` of each model that predicted it in this run (None when
    this run did not predict it); ``modality``: the scan's (CT or MR), as predict was given it;
    ``backend``: the engine that ran the network (:mod:`tctseg.inference.backends`), with ``models``."""

    case_id: str
    image: Path
    status: str
    prediction: Path | None = None
    probabilities: Path | None = None
    task_masks: Path | None = None
    label: Path | None = None
    dataset: str | None = None
    error: str | None = None
    seconds: float = 0.0
    models: list[dict[str, str | None]] | None = None
    modality: str | None = None
    backend: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


# --------------------------------------------------------------------------- back to the original grid


def labels_in_original_space(
    probabilities: np.ndarray,
    geometry: PreparedGeometry,
    want_probabilities: bool = False,
    *,
    task_probabilities: bool = False,
    want_task_masks: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Prepared-space probabilities ``[C, X', Y', Z']`` → original-grid labels ``[X, Y, Z]`` uint8.

    Each class map is resampled back (linear) on its own and the argmax kept running, so the
    peak memory is a few original-size volumes, not C of them; the maps stay in RAS voxel
    order and only the uint8 results are reoriented to the scan's, once (the same values as
    reorienting every map: a permutation and flips). With ``want_probabilities``
    also returns uint8 probabilities ``[X, Y, Z, C]`` (round(255·p)).

    ``task_probabilities``: the C = N channels are task probabilities σ_c (no background);
    label c+1 goes where σ_c is the largest AND above ½, background elsewhere (the argmax
    of ``[1 − max σ, σ_1, …, σ_N]``). ``want_task_masks`` then also returns each task's own
    mask σ_c > ½ as uint8 ``[X, Y, Z, N]`` (overlaps kept).

    Returns ``(labels, probabilities or None, task masks or None)``.
    """
    from tctseg.preprocessing.geometry import from_ras_grid, resample

    if want_task_masks and not task_probabilities:
        raise ValueError("task masks need task probabilities")
    shape = tuple(geometry.ras_shape)  # the scan's grid in RAS order; reoriented at the end
    channels = probabilities.shape[0]
    labels = np.zeros(shape, dtype=np.uint8)
    # a task must beat ½ to be foreground; a softmax class must beat the classes before it
    best = np.full(shape, TASK_THRESHOLD if task_probabilities else -np.inf, dtype=np.float32)
    offset = 1 if task_probabilities else 0  # task c is label c + 1
    scaled = np.zeros(shape + (channels,), dtype=np.uint8) if want_probabilities else None
    masks = np.zeros(shape + (channels,), dtype=np.uint8) if want_task_masks else None
    better = np.empty(shape, dtype=bool)
    for c in range(channels):
        channel = resample(np.ascontiguousarray(probabilities[c], dtype=np.float32), shape, "linear")
        np.greater(channel, best, out=better)  # strict: ties keep the lower class id, like argmax
        labels[better] = c + offset
        np.maximum(best, channel, out=best)
        if scaled is not None:
            scaled[..., c] = np.clip(np.rint(channel * 255.0), 0, 255).astype(np.uint8)
        if masks is not None:
            masks[..., c] = channel > TASK_THRESHOLD
        del channel
    del best, better

    def back(ras: np.ndarray | None) -> np.ndarray | None:
        if ras is None:
            return None
        if ras.ndim == 3:
            return from_ras_grid(ras, geometry)
        return np.ascontiguousarray(np.moveaxis(from_ras_grid(np.moveaxis(ras, -1, 0), geometry), 0, -1))

    return back(labels), back(scaled), back(masks)


# --------------------------------------------------------------------------- writing


_OUTPUT_KEYS = ("prediction", "probabilities", "task_masks")  # the files of an index entry


def read_index(output_dir: Path) -> list[dict[str, Any]]:
    """The entries of ``<output_dir>/index.json`` (``[]`` when there is none).

    Raises :class:`OutputError` when the file is not an index ``tctseg predict`` wrote (a list
    of ``{case_id, prediction, ...}``): predict would replace it, so it is someone else's.
    """
    path = PredictionsLayout(output_dir).index
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        ok = isinstance(entries, list) and all(
            isinstance(e, dict) and "case_id" in e and isinstance(e.get("prediction"), str) for e in entries
        )
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        ok = False
    if not ok:
        raise OutputError(
            f"{path}: is not a prediction index tctseg wrote (a JSON list of cases); predict would replace it: "
            "choose an empty or new output folder"
        )
    return entries


def _exists(output_dir: Path, listed: Any) -> bool:
    # where the index says, or in the folder itself (a folder moved since keeps its predictions)
    return isinstance(listed, str) and (Path(listed).is_file() or (output_dir / Path(listed).name).is_file())


def write_index(output_dir: Path, results: Sequence[PredictionResult]) -> Path:
    """``<output_dir>/index.json``: ``[{case_id, image, prediction[, probabilities, task_masks, label, dataset, modality, models, backend]}]``.

    ``models``: the checkpoints that predicted the case, ``[{checkpoint, sha256}]`` (one, or an
    ensemble's members; both null for a model given in memory); a skipped case keeps its
    earlier entry's, and so its ``backend`` (torch, onnxruntime or openvino: what ran the
    network). ``modality``: the scan's, which the report's overlays are drawn by.

    The index is also the record of which files in the folder tctseg wrote
    (:func:`check_own_outputs`). Entries of earlier runs whose prediction file still exists
    are kept (this run's win; an earlier entry's probabilities or task masks that this run did
    not write stay listed while their files exist).
    """
    path = PredictionsLayout(output_dir).index
    entries: dict[str, dict[str, Any]] = {}
    try:
        for entry in read_index(output_dir):
            if _exists(output_dir, entry.get("prediction")):
                entries[str(entry["case_id"])] = entry
    except OutputError:
        pass  # a foreign index was refused before the first case (check_own_outputs); rebuilt from this run
    for r in results:
        if not r.ok or r.prediction is None:
            continue
        entry: dict[str, Any] = {"case_id": r.case_id, "image": str(r.image.resolve()), "prediction": str(r.prediction.resolve())}
        earlier = entries.get(r.case_id, {})
        for key, written in (("probabilities", r.probabilities), ("task_masks", r.task_masks)):
            if written is not None:
                entry[key] = str(written.resolve())
            elif _exists(output_dir, earlier.get(key)):
                entry[key] = earlier[key]
        if r.label is not None:
            entry["label"] = str(Path(r.label).resolve())
        if r.dataset is not None:
            entry["dataset"] = r.dataset
        if r.modality is not None:
            entry["modality"] = r.modality
        if r.models is not None:
            entry["models"] = r.models
            if r.backend is not None:
                entry["backend"] = r.backend
        else:  # skipped: predicted by an earlier run
            entry.update({k: earlier[k] for k in ("models", "backend") if k in earlier})
        entries[r.case_id] = entry
    text = json.dumps(sorted(entries.values(), key=lambda e: e["case_id"]), indent=2) + "\n"
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the prediction index")


def check_output_dir(output_dir: Path, cases: Sequence[PredictionInput], input_folders: Sequence[Path] = ()) -> None:
    """Refuse (OutputError) an output folder that is an input's folder, an INPUT folder the
    cases were found in, or lies inside a DICOM series folder (its outputs would become inputs)."""
    out = output_dir.resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{output_dir}: exists and is not a folder")
    for folder in input_folders:
        if out == Path(folder).resolve():
            raise OutputError(f"{output_dir}: is the input folder {folder}; choose another output folder")
    for case in cases:
        image = Path(case.image).resolve()
        if image.is_dir() and (out == image or image in out.parents):
            raise OutputError(f"{output_dir}: lies inside the input DICOM series folder {case.image}; choose another output folder")
        if not image.is_dir() and out == image.parent:
            raise OutputError(f"{output_dir}: is the folder of the input {case.image}; choose another output folder")


def check_own_outputs(output_dir: Path) -> None:
    """Refuse (OutputError) an output folder holding a file that looks like one predict writes
    but that the folder's own ``index.json`` does not list: ground truths, or another tool's or
    a person's files. A rerun would skip such a file as a finished case, and ``--overwrite``
    would write over it; predict may skip or replace only what it wrote.

    Looks like predict's: a NIfTI file (``.nii``, ``.nii.gz``), a per-case report
    (``<case>_preview.png``, ...: :attr:`PredictionsLayout.REPORT_SUFFIXES`), and the files
    that gather every case (``statistics.json``, ...: :attr:`PredictionsLayout.GATHERING_FILES`). Listed: the files of an index entry, the
    per-case reports of a case the index lists, and the gathering files when an index exists.
    Hidden files (the lock, temporary names) are not looked at. An ``index.json`` that is not
    tctseg's is refused too (:func:`read_index`).
    """
    if not output_dir.is_dir():
        return
    entries = read_index(output_dir)
    listed = {Path(e[key]).name for e in entries for key in _OUTPUT_KEYS if isinstance(e.get(key), str)}
    folder = PredictionsLayout(output_dir)
    case_suffixes = folder.REPORT_SUFFIXES
    listed |= {f"{e['case_id']}{suffix}" for e in entries for suffix in case_suffixes}
    index = folder.index
    has_index = index.is_file()
    for path in sorted(output_dir.iterdir()):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if name in folder.GATHERING_FILES:
            foreign = not has_index
        else:
            foreign = name.endswith((*NIFTI_SUFFIXES, *case_suffixes)) and name not in listed
        if foreign:
            raise OutputError(
                f"{output_dir}: holds {name}, which tctseg did not write there (its {index.name} "
                "does not list it): predict skips or replaces only its own outputs, choose an empty or new output folder"
            )
