"""PNG overlays of prediction against ground truth, one representative slice per organ.

For each class, the case and axial slice with the largest ground-truth area of that class
(among the cases that annotate it) is drawn: the image in grey (the window of the case's
recorded modality, :func:`tctseg.preprocessing.intensity.display_window`: CT the soft-tissue
window, MR the slice's 1st–99th percentile), the ground-truth contour in green and the
prediction contour in red, cropped around both, in radiological view (patient's right on
the left, anterior up).

The cases come from ``<method_dir>/predictions/index.json``, written by ``tctseg predict``::

    [
      {"case_id": "case_00001",           # required
       "dataset": "phantom",              # required
       "image": "data/imagesTs/case_00001_0000.nii.gz",    # the scan that was predicted
       "label": "data/labelsTs/case_00001.nii.gz",         # its ground truth, or null
       "prediction": "phantom/case_00001.nii.gz",          # the predicted label map
       "label_map": {"1": "liver", "2": "spleen"},          # optional: ground-truth id →
                                                           #   class; default global ids
       "annotated": ["liver", "spleen"],                    # optional: default every class
                                                           #   the label map reaches
       "modality": "CT"}                                    # optional: CT or MR, as predict
    ]                                                      #   was given it

An entry without ``modality`` (an index written before predict recorded it) is drawn in the
run's modality as predict would have taken it (its training data's), when the caller gives
one (``default_modality``); otherwise in the percentile window.

Relative paths are relative to the folder holding ``index.json``. The file may also be a
mapping ``{"cases": [...]}``. Image, label and prediction share one voxel grid (predict
writes in the scan's original geometry); each is reoriented to RAS before slicing, so
"axial" is the third array axis.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import nibabel as nib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from tctseg.data.io import Volume, load_volume  # noqa: E402
from tctseg.errors import DataError  # noqa: E402
from tctseg.evaluation.evaluate import annotated_classes, to_global_ids  # noqa: E402
from tctseg.preprocessing.intensity import display_window  # noqa: E402
from tctseg.settings import MODALITIES  # noqa: E402

GT_COLOUR = "#00d000"
PRED_COLOUR = "#ff2020"


@dataclass
class PredictionRecord:
    """One entry of ``predictions/index.json`` with absolute paths."""

    case_id: str
    dataset: str
    image: Path
    label: Path | None
    prediction: Path
    label_map: dict[int, str] | None = None
    annotated: list[str] | None = None
    modality: str | None = None  # CT or MR as predict was given it; None in an older index


@dataclass
class Overlay:
    """A rendered overlay of one class."""

    class_name: str
    case_id: str
    dataset: str
    slice_index: int
    gt_area: int
    dsc_on_slice: float
    png: bytes = field(repr=False)


def load_index(index_path: str | Path) -> list[PredictionRecord]:
    """Read ``predictions/index.json`` (format in the module docstring)."""
    index_path = Path(index_path)
    try:
        raw: Any = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{index_path}: cannot read prediction index ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{index_path}: cannot read prediction index (not UTF-8 text: byte "
                        f"0x{e.object[e.start]:02x} at offset {e.start})") from None
    except RecursionError:
        raise DataError(f"{index_path}: cannot read prediction index (JSON nested too deeply)") from None
    entries = raw.get("cases") if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise DataError(f"{index_path}: expected a list of cases (or {{'cases': [...]}})")
    base = index_path.parent
    records = []
    for i, entry in enumerate(entries):
        try:
            label_map = entry.get("label_map")
            modality = entry.get("modality")
            if modality is not None and modality not in MODALITIES:
                raise ValueError(f"modality {modality!r} is not {' or '.join(MODALITIES)}")
            records.append(
                PredictionRecord(
                    case_id=str(entry["case_id"]),
                    dataset=str(entry.get("dataset", "")),
                    image=base / entry["image"],
                    label=base / entry["label"] if entry.get("label") else None,
                    prediction=base / entry["prediction"],
                    label_map={int(k): str(v) for k, v in label_map.items()} if label_map else None,
                    annotated=list(entry["annotated"]) if entry.get("annotated") else None,
                    modality=modality,
                )
            )
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise DataError(f"{index_path}: entry {i} is malformed ({type(e).__name__}: {e})") from None
    return records


def class_overlays(
    records: list[PredictionRecord], classes: list[str], problems: list[str] | None = None,
    default_modality: str | None = None,
) -> list[Overlay]:
    """One overlay per class that some case's ground truth contains (in ``classes`` order).

    A case whose files cannot be read is skipped; its error message is appended to
    ``problems`` (when given) so the report can say so. Each is drawn in its record's
    modality, else ``default_modality`` (for an index that does not record it).
    """
    best: dict[str, tuple[int, int, int]] = {}  # class → (area, record index, slice)
    for i, record in enumerate(records):
        if record.label is None:
            continue
        try:
            gt = _global_label(record, classes)
        except DataError as e:
            (problems if problems is not None else []).append(str(e))
            continue
        names = record.annotated or annotated_classes(classes, record.label_map)
        for name in (n for n in names if n in classes):  # an index may name classes the run does not have
            areas = (gt == classes.index(name) + 1).sum(axis=(0, 1))
            z = int(np.argmax(areas))
            if areas[z] > 0 and areas[z] > best.get(name, (0, -1, -1))[0]:
                best[name] = (int(areas[z]), i, z)
    overlays = []
    loaded: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]] = {}
    for name in classes:
        if name not in best:
            continue
        area, i, z = best[name]
        if i not in loaded:
            try:
                loaded = {i: _load_case(records[i], classes)}  # keep one case in memory at a time
            except DataError as e:
                (problems if problems is not None else []).append(str(e))
                continue
        image, gt, pred, spacing_xy = loaded[i]
        class_id = classes.index(name) + 1
        gt_slice, pred_slice = gt[:, :, z] == class_id, pred[:, :, z] == class_id
        overlap = 2 * np.logical_and(gt_slice, pred_slice).sum() / max(1, gt_slice.sum() + pred_slice.sum())
        title = f"{name} — {records[i].case_id}, axial slice {z}"
        overlays.append(
            Overlay(name, records[i].case_id, records[i].dataset, z, area, float(overlap),
                    render_overlay(image[:, :, z], gt_slice, pred_slice, spacing_xy, title,
                                   records[i].modality or default_modality))
        )
    return overlays


def render_overlay(
    image_slice: np.ndarray,
    gt_slice: np.ndarray,
    pred_slice: np.ndarray,
    spacing_xy: tuple[float, float] = (1.0, 1.0),
    title: str = "",
    modality: str | None = None,
) -> bytes:
    """PNG bytes of one RAS axial slice ``[X, Y]`` with GT (green) and prediction (red) contours,
    in the grey window of ``modality`` (CT, MR, or None: not recorded)."""
    low, high = display_window(np.asarray(image_slice, dtype=np.float32), modality)
    crop = _crop_box(gt_slice | pred_slice)
    # radiological view: rows = Y (anterior up with origin="lower"), columns = X flipped
    # so that the patient's right (+X in RAS) is on the viewer's left.
    view = lambda a: np.asarray(a[crop])[::-1, :].T  # noqa: E731
    image, gt, pred = view(image_slice).astype(np.float32), view(gt_slice), view(pred_slice)
    fig, ax = plt.subplots(figsize=(4.2, 4.6))
    ax.imshow(image, cmap="gray", vmin=low, vmax=high, origin="lower",
              aspect=spacing_xy[1] / spacing_xy[0], interpolation="nearest")
    for mask, colour in ((gt, GT_COLOUR), (pred, PRED_COLOUR)):
        if mask.any():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linewidths=1.6, origin="lower")
    ax.legend(handles=[Line2D([], [], color=GT_COLOUR, lw=2, label="ground truth"),
                       Line2D([], [], color=PRED_COLOUR, lw=2, label="prediction")],
              loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=9, frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _crop_box(mask: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of ``mask`` plus a margin as wide as the box (at least 16 voxels)."""
    if not mask.any():
        return slice(None), slice(None)
    box = []
    for axis in range(2):
        present = np.flatnonzero(mask.any(axis=1 - axis))
        lo, hi = int(present[0]), int(present[-1]) + 1
        margin = max(16, hi - lo)
        box.append(slice(max(0, lo - margin), min(mask.shape[axis], hi + margin)))
    return box[0], box[1]


def _global_label(record: PredictionRecord, classes: list[str]) -> np.ndarray:
    label = _canonical(load_volume(record.label, integer=True))
    return to_global_ids(np.asarray(label.dataobj), classes, record.label_map, record.label)


def _load_case(record: PredictionRecord, classes: list[str]):
    image = _canonical(load_volume(record.image))  # a NIfTI file or a DICOM series folder
    pred_array = np.asarray(_canonical(load_volume(record.prediction, integer=True)).dataobj)
    gt = _global_label(record, classes)
    image_array = np.asarray(image.dataobj, dtype=np.float32)
    if not image_array.shape == gt.shape == pred_array.shape:
        raise DataError(
            f"case {record.case_id}: image {record.image} {image_array.shape}, label {record.label} "
            f"{gt.shape} and prediction {record.prediction} {pred_array.shape} differ in shape"
        )
    zooms = image.header.get_zooms()
    return image_array, gt, pred_array, (float(zooms[0]), float(zooms[1]))


def _canonical(volume: Volume) -> nib.Nifti1Image:
    """The volume reoriented to RAS voxel order, so axis 2 is axial (inferior → superior)."""
    return nib.as_closest_canonical(nib.Nifti1Image(volume.array, volume.affine))
