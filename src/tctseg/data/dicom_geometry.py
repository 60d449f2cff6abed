"""Per-slice geometry of a DICOM series, checked before its volume is trusted.

ITK/GDCM build a volume from a series without a word when its slices do not form one
regular grid: a missing slice is averaged into the spacing, a slice without
ImagePositionPatient gets 1 mm and origin 0, two slices at one position are stacked. A label
map predicted on such a volume lies at the wrong place on the scan. So every slice's
ImagePositionPatient (IPP) and ImageOrientationPatient (IOP) are read here (pydicom, headers
only) and the series is refused, naming the series folder and the slice, unless:

- every slice has both tags, and the same orientation (within :data:`ORIENTATION_TOLERANCE`);
- the positions lie on one line along the slice normal (in-plane offset at most
  :data:`POSITION_TOLERANCE_MM`), no two at the same place;
- consecutive slices are evenly spaced: each gap within max(:data:`POSITION_TOLERANCE_MM`,
  :data:`SPACING_TOLERANCE` × the median gap) of the median gap.

A gap is refused rather than resampled (dcm2niix and nnU-Net's readers would also have to
guess what the missing slice held); the message says which slices are too far apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tctseg.errors import DataError

ORIENTATION_TOLERANCE = 1e-3  # direction cosines: about 0.06°
POSITION_TOLERANCE_MM = 0.01  # positions are stored rounded to ~1e-3 mm or finer
SPACING_TOLERANCE = 0.01  # 1 % of the slice spacing


def check_series_geometry(folder: Path, files: Sequence[str | Path]) -> None:
    """Refuse (DataError) a series whose slices do not form one regular 3D grid (see module doc).

    ``files``: the series' slice files (any order).
    """
    if len(files) < 2:
        return
    positions, orientations, names = [], [], []
    for file in files:
        header = _read_header(folder, Path(file))
        name = Path(file).name
        position = _vector(header, "ImagePositionPatient", 3, folder, name)
        orientation = _vector(header, "ImageOrientationPatient", 6, folder, name)
        positions.append(position)
        orientations.append(orientation)
        names.append(name)
    first = orientations[0]
    for name, orientation in zip(names[1:], orientations[1:]):
        if np.abs(orientation - first).max() > ORIENTATION_TOLERANCE:
            raise DataError(
                f"{folder}: slice {name} has orientation {_show(orientation)}, slice {names[0]} {_show(first)}: "
                "a series must have one orientation"
            )
    row, column = first[:3], first[3:]
    normal = np.cross(row, column)
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 0.5:
        raise DataError(f"{folder}: slice {names[0]} has an invalid ImageOrientationPatient {_show(first)}")
    normal /= np.linalg.norm(normal)
    points = np.asarray(positions)
    along = points @ normal
    order = np.argsort(along, kind="stable")
    # in-plane offset of each slice from the first one's line along the normal
    offsets = (points - points[order[0]]) - np.outer(along - along[order[0]], normal)
    shifted = int(np.argmax(np.linalg.norm(offsets, axis=1)))
    if np.linalg.norm(offsets[shifted]) > POSITION_TOLERANCE_MM:
        raise DataError(
            f"{folder}: slice {names[shifted]} is shifted {np.linalg.norm(offsets[shifted]):.3g} mm within its plane "
            f"from slice {names[order[0]]} (ImagePositionPatient {_show(points[shifted])}): the slices do not form one stack"
        )
    gaps = np.diff(along[order])
    for i, gap in enumerate(gaps):
        if gap < POSITION_TOLERANCE_MM:
            a, b = names[order[i]], names[order[i + 1]]
            raise DataError(f"{folder}: slices {a} and {b} are at the same position ({along[order[i]]:.3f} mm along the normal)")
    median = float(np.median(gaps))
    tolerance = max(POSITION_TOLERANCE_MM, SPACING_TOLERANCE * median)
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > tolerance:
        a, b = names[order[worst]], names[order[worst + 1]]
        missing = gaps[worst] / median - 1
        hint = f"about {round(missing)} slice(s) missing between them" if missing > 0.5 else "the spacing is not uniform"
        raise DataError(
            f"{folder}: slices {a} and {b} are {gaps[worst]:.3f} mm apart, the series' other slices {median:.3f} mm "
            f"({hint}; tolerance {tolerance:.3g} mm)"
        )


def _read_header(folder: Path, file: Path):
    import pydicom

    try:
        return pydicom.dcmread(str(file), stop_before_pixels=True, force=True)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for one damaged file
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"{folder}: slice {file.name} cannot be read ({reason})") from None


def _vector(header, tag: str, size: int, folder: Path, name: str) -> np.ndarray:
    try:
        value = header.get(tag)
        vector = None if value is None else np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        vector = None
    if vector is None or vector.shape != (size,) or not np.isfinite(vector).all():
        raise DataError(f"{folder}: slice {name} has no valid {tag}; its place in the volume is unknown")
    return vector


def _show(vector: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in vector) + "]"
