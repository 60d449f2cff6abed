"""KiTS19 (Heller et al., kidney tumour segmentation challenge 2019).

Layout of the neheller/kits19 repository after ``get_imaging.py``: ``<path>/case_XXXXX/
imaging.nii.gz`` + ``segmentation.nii.gz`` (``<path>`` may also be the repository root holding
``data/``). Labels (kits19 README): 0 background, 1 kidney, 2 tumour. The volumes are stored
in KiTS19's own axis order (voxel axes I, P, L: slices first); every decision here uses the
file's affine, never an assumed orientation. Cases without ``segmentation.nii.gz`` (the
challenge's test cases) are read as unlabelled. CT.

Kidney + tumour -> kidney, split into left and right by connected components: the two largest
components are the two kidneys, and the one whose centroid lies further towards world +x is
the RIGHT kidney — nibabel's RAS+ convention, where +x points to the patient's right
(nibabel "Coordinate systems and affines"; DICOM's LPS+ has +x to the patient's left).
Smaller fragments join the kidney on their side of the midpoint between the two. A case with
a single kidney component (nephrectomy) is sided by its centroid against the body's centre
(voxels above -500 HU), or the centre of the volume where no body is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from tctseg.config import DatasetConfig
from tctseg.data.conversion.common import (
    LabelMapping,
    SourceCase,
    apply_lut,
    build_mapping,
    dataset_root,
    select_cases,
)
from tctseg.data.io import Volume
from tctseg.errors import DataError

KITS19_LABELS = {0: "background", 1: "kidney", 2: "tumor"}
MODALITY = "CT"
KIDNEY_IDS = (1, 2)
BODY_HU = -500.0


@dataclass
class KitsCase(SourceCase):
    """A KiTS19 case; ``left_id``/``right_id`` are the global ids the kidney splits into (0: not wanted)."""

    left_id: int = 0
    right_id: int = 0

    def label_map_record(self) -> dict:
        return {**super().label_map_record(), "kidney_split": {"left": self.left_id, "right": self.right_id}}

    def map_label(self, label: np.ndarray, image: Volume) -> np.ndarray:
        assert self.label is not None
        out = apply_lut(label, self.mapping, self.label)
        if self.left_id or self.right_id:
            kidney = (label == KIDNEY_IDS[0]) | (label == KIDNEY_IDS[1])
            right = right_side_mask(kidney, image.affine, image.array)
            out[kidney & right] = self.right_id
            out[kidney & ~right] = self.left_id
        return out


def world_x(voxel: np.ndarray, affine: np.ndarray) -> float:
    """RAS world x (mm; larger = further to the patient's right) of a voxel coordinate."""
    return float(affine[0, :3] @ np.asarray(voxel, dtype=np.float64) + affine[0, 3])


def right_side_mask(kidney: np.ndarray, affine: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """Bool [X, Y, Z]: the kidney voxels that belong to the patient's RIGHT kidney.

    Works on the kidney's bounding box only (KiTS19 volumes reach 512³).
    """
    result = np.zeros(kidney.shape, dtype=bool)
    if not kidney.any():
        return result
    box = []
    for ax in range(3):
        hit = np.flatnonzero(kidney.any(axis=tuple(a for a in range(3) if a != ax)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    box = tuple(box)
    offset = np.array([s.start for s in box], dtype=np.float64)
    crop = kidney[box]
    components, count = ndimage.label(crop, structure=np.ones((3, 3, 3), dtype=bool), output=np.int32)
    sizes, centroids = _component_centroids(components, count)
    order = np.argsort(sizes)[::-1]
    xs = np.array([world_x(c + offset, affine) for c in centroids])
    if count >= 2:
        # midpoint between the two largest components separates the sides
        split_x = 0.5 * (xs[order[0]] + xs[order[1]])
    else:
        split_x = _body_centre_x(kidney.shape, affine, image)
    is_right = np.concatenate([[False], xs > split_x])
    result[box] = is_right[components]
    return result


def _component_centroids(components: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Sizes [count] and voxel centroids [count, 3] of labelled components 1..count."""
    sizes = np.bincount(components.ravel(), minlength=count + 1).astype(np.float64)
    sums = np.zeros((count + 1, 3))
    for ax in range(3):
        # one slice at a time keeps memory at one slice of weights (volumes reach 512³)
        for i in range(components.shape[ax]):
            sums[:, ax] += i * np.bincount(np.take(components, i, axis=ax).ravel(), minlength=count + 1)
    return sizes[1:], sums[1:] / sizes[1:, None]


def _body_centre_x(shape: tuple[int, ...], affine: np.ndarray, image: np.ndarray | None) -> float:
    if image is not None and image.shape == tuple(shape):
        body = image > BODY_HU
        if body.any():
            centre = [
                float(np.average(np.arange(n), weights=body.sum(axis=tuple(a for a in range(3) if a != ax))))
                for ax, n in enumerate(shape)
            ]
            return world_x(np.array(centre), affine)
    return world_x((np.asarray(shape, dtype=np.float64) - 1) / 2, affine)


def _case_folders(root: Path) -> list[Path]:
    base = root / "data" if (root / "data").is_dir() and not any(root.glob("case_*")) else root
    folders = sorted(p for p in base.glob("case_*") if p.is_dir())
    if not folders:
        raise DataError(f"{root}: no KiTS19 case_XXXXX folders found")
    return folders


def label_table(dataset: DatasetConfig) -> tuple[dict[int, str], str]:
    """The dataset's own label ids → names, and where they come from (for error messages)."""
    return KITS19_LABELS, "the KiTS19 label list (0, 1, 2)"


def find_cases(dataset: DatasetConfig, classes: list[str]) -> list[SourceCase]:
    root = dataset_root(dataset)
    split = "kidney" not in classes and ("left_kidney" in classes or "right_kidney" in classes)
    labels, source = label_table(dataset)
    mapping = build_mapping(labels, dataset, classes, source=source)
    wanted = set(dataset.classes or classes)
    left_id = classes.index("left_kidney") + 1 if split and "left_kidney" in classes and "left_kidney" in wanted else 0
    right_id = classes.index("right_kidney") + 1 if split and "right_kidney" in classes and "right_kidney" in wanted else 0
    if split and not dataset.label_map:
        annotated = tuple(c for c in classes if classes.index(c) + 1 in (left_id, right_id))
        mapping = LabelMapping(lut={0: 0, 1: 0, 2: 0}, annotated=annotated, source=mapping.source)
    else:
        left_id = right_id = 0
    cases: list[SourceCase] = []
    for folder in _case_folders(root):
        label = folder / "segmentation.nii.gz"
        cases.append(
            KitsCase(
                dataset.name, folder.name, folder / "imaging.nii.gz", label if label.exists() else None,
                dataset.modality or MODALITY, mapping.annotated if label.exists() else (), mapping,
                left_id=left_id, right_id=right_id,
            )
        )
    selected = select_cases(cases, dataset)
    without_image = [c for c in selected if not Path(c.image).is_file()]
    if without_image:  # e.g. the repository cloned without running its get_imaging.py
        raise DataError(
            f"{root}: {len(without_image)} of {len(selected)} KiTS19 case folders hold no imaging.nii.gz "
            f"(first: {without_image[0].case_id}); the images are downloaded apart from the labels, by the kits19 "
            "repository's get_imaging.py (or leave those cases out with exclude_cases)"
        )
    return selected
