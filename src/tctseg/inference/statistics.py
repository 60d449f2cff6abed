"""Per-organ statistics of a predicted label map, in the scan's ORIGINAL space.

For each organ class c of a case (``tctseg predict --statistics``; TotalSegmentator's
``--statistics`` is the model): the voxel count, the volume in ml (voxels × the voxel volume
``|det(affine[:3, :3])|`` mm³ / 1000), the mean and standard deviation of the scan's
intensities inside the organ (Hounsfield units for CT; the stored values for MR), the
centroid in RAS millimetres (the affine applied to the mean voxel index) and the bounding box
in voxel indices (inclusive, file order) and in RAS millimetres (the extent of its voxel
centres). An organ that is not predicted has 0 voxels and ``null`` for the rest.

Written beside the label maps as ``statistics.json``
(``{case_id: {organ: {voxels, volume_ml, ...}}}``) and ``statistics.csv`` (one row per
case and organ).
"""

from __future__ import annotations

import csv
import io
import itertools
from typing import Any, Sequence

import numpy as np

CSV_COLUMNS = (
    "case_id", "organ", "voxels", "volume_ml", "intensity_mean", "intensity_sd",
    "centroid_r_mm", "centroid_a_mm", "centroid_s_mm",
    "bbox_i_min", "bbox_i_max", "bbox_j_min", "bbox_j_max", "bbox_k_min", "bbox_k_max",
)


def organ_statistics(
    labels: np.ndarray, image: np.ndarray, affine: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``labels`` ``[X, Y, Z]`` (ids 1..N = ``class_names``), ``image`` ``[X, Y, Z]`` on the same
    grid, ``affine`` 4×4 voxel → RAS mm → ``{organ: statistics}`` (see the module docstring)."""
    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} differ in shape")
    affine = np.asarray(affine, dtype=np.float64)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    out: dict[str, dict[str, Any]] = {}
    for class_id, name in enumerate(class_names, start=1):
        mask = labels == class_id
        voxels = int(np.count_nonzero(mask))
        entry: dict[str, Any] = {
            "voxels": voxels,
            "volume_ml": round(voxels * voxel_ml, 3),
            "intensity_mean": None,
            "intensity_sd": None,
            "centroid_ras_mm": None,
            "bbox_voxels": None,
            "bbox_ras_mm": None,
        }
        if voxels:
            values = image[mask].astype(np.float64)
            index = np.argwhere(mask)  # [V, 3]
            low, high = index.min(axis=0), index.max(axis=0)
            corners = np.array(list(itertools.product(*zip(low, high))), dtype=np.float64)  # the box's 8 corners
            corners_mm = corners @ affine[:3, :3].T + affine[:3, 3]
            entry.update(
                intensity_mean=round(float(values.mean()), 3),
                intensity_sd=round(float(values.std()), 3),
                centroid_ras_mm=[round(float(v), 2) for v in affine[:3, :3] @ index.mean(axis=0) + affine[:3, 3]],
                bbox_voxels=[[int(a), int(b)] for a, b in zip(low, high)],
                bbox_ras_mm=[[round(float(a), 2), round(float(b), 2)] for a, b in zip(corners_mm.min(0), corners_mm.max(0))],
            )
        out[name] = entry
    return out


def statistics_csv(statistics: dict[str, dict[str, dict[str, Any]]]) -> str:
    """``{case_id: {organ: statistics}}`` → CSV text with :data:`CSV_COLUMNS` (empty cells for null)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for case_id in sorted(statistics):
        for organ, s in statistics[case_id].items():
            centroid = s["centroid_ras_mm"] or [None] * 3
            bbox = [v for pair in (s["bbox_voxels"] or [[None, None]] * 3) for v in pair]
            row = [case_id, organ, s["voxels"], s["volume_ml"], s["intensity_mean"], s["intensity_sd"], *centroid, *bbox]
            writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()
