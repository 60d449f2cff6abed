"""Forward and inverse geometry: original voxel grid <-> prepared grid (RAS voxel order, target spacing).

Forward (:func:`to_prepared`): reorient to RAS voxel order with nibabel (an exact permutation
and flip, no interpolation), then resample to the target spacing. Inverse
(:func:`to_original`): resample back to the RAS shape, then undo the reorientation, giving
EXACTLY the original shape and voxel order, so saving with the original affine overlays the
input.

One convention both ways: the resampled grid covers the same extent as the RAS grid (voxel
edges aligned, ``align_corners=False``), with ``n_out = max(1, round(n_in · s_in / s_out))``
voxels per axis; the actual spacing ``s_in · n_in / n_out`` is within half a voxel of the
target per axis and is what the prepared affine records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from tctseg.data.io import MAX_VOXELS
from tctseg.errors import DataError

RAS_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)


@dataclass
class PreparedGeometry:
    """Everything needed to go back from the prepared grid to the original one.

    ``original_*``: the file's grid; ``ras_*``: after reorientation (same voxels, permuted);
    ``prepared_*``: after resampling. ``orientation``: the original axis codes, e.g. ('L','P','S').
    """

    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    orientation: tuple[str, str, str]
    ras_affine: np.ndarray
    ras_shape: tuple[int, int, int]
    prepared_affine: np.ndarray
    prepared_shape: tuple[int, int, int]

    @property
    def original_spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.original_affine[:3, :3], axis=0))

    @property
    def prepared_spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.prepared_affine[:3, :3], axis=0))

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in d.items()}


def plan_geometry(
    affine: np.ndarray, shape: tuple[int, ...], spacing: tuple[float, float, float], source: str | Path | None = None
) -> PreparedGeometry:
    """The prepared grid of a volume with this (affine, shape) at the target ``spacing`` (mm).

    Raises DataError (naming ``source``, the volume's file) when that grid would hold more
    than :data:`~tctseg.data.io.MAX_VOXELS` voxels, before anything is allocated.
    """
    affine = np.asarray(affine, dtype=np.float64)
    ornt = nib.io_orientation(affine)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    ras_shape = tuple(int(shape[int(i)]) for i in np.argsort(ornt[:, 0]))
    ras_spacing = np.linalg.norm(ras_affine[:3, :3], axis=0)
    check_resampled_size(ras_shape, ras_spacing, spacing, source)
    out_shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(ras_shape, ras_spacing, spacing))
    factor = np.array(ras_shape, dtype=np.float64) / np.array(out_shape, dtype=np.float64)
    # output voxel o sits at input coordinate (o + 0.5)·factor − 0.5 (edge-aligned grids)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factor)
    scale[:3, 3] = 0.5 * factor - 0.5
    return PreparedGeometry(
        original_affine=affine,
        original_shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        orientation=tuple(nib.aff2axcodes(affine)),  # type: ignore[arg-type]
        ras_affine=ras_affine,
        ras_shape=ras_shape,  # type: ignore[arg-type]
        prepared_affine=ras_affine @ scale,
        prepared_shape=out_shape,  # type: ignore[arg-type]
    )


def check_resampled_size(
    shape: tuple[int, ...], spacing: np.ndarray | tuple[float, ...], target: tuple[float, ...], source: str | Path | None
) -> None:
    """Refuse (DataError) a resampling of ``shape`` at ``spacing`` mm to ``target`` mm that would need
    more than MAX_VOXELS voxels: a header in metres, or a target spacing of 1e-6 mm."""
    sizes = [float(n) * float(s) / float(t) for n, s, t in zip(shape, spacing, target)]
    voxels = float(np.prod([max(1.0, round(v)) for v in sizes]))
    if voxels <= MAX_VOXELS:
        return
    where = f"{source}: " if source is not None else ""
    raise DataError(
        f"{where}resampling its {list(shape)} voxels of {[round(float(s), 6) for s in spacing]} mm to "
        f"{[float(t) for t in target]} mm (preprocessing.spacing) would need shape "
        f"{[int(round(v)) for v in sizes]} ({voxels:.3g} voxels, {voxels * 4 / 1e9:.3g} GB as float32), more than "
        f"the {MAX_VOXELS:.3g} voxels tctseg handles; is the header's spacing in mm?"
    )


def to_prepared(
    array: np.ndarray,
    affine: np.ndarray,
    spacing: tuple[float, float, float],
    mode: str = "linear",
    source: str | Path | None = None,
) -> tuple[np.ndarray, PreparedGeometry]:
    """Original [X, Y, Z] (file order) -> prepared [X', Y', Z'] (RAS order, ``spacing``).

    ``mode``: ``linear`` for images (float32 out), ``nearest`` for label maps (dtype kept).
    ``source`` (the file) names the volume in the DataError of a grid too large to allocate.
    """
    geometry = plan_geometry(affine, array.shape, spacing, source)
    ras = reorient_to_ras(array, affine)
    return resample(ras, geometry.prepared_shape, mode), geometry


def to_original(array: np.ndarray, geometry: PreparedGeometry, mode: str = "nearest") -> np.ndarray:
    """Prepared-space array -> the original grid, exact shape and voxel order.

    ``array``: a label map [X', Y', Z'] (``mode="nearest"``) or probabilities/logits
    [C, X', Y', Z'] (``mode="linear"``; returns [C, *original_shape]).
    """
    return from_ras_grid(resample(array, geometry.ras_shape, mode), geometry)


def from_ras_grid(ras: np.ndarray, geometry: PreparedGeometry) -> np.ndarray:
    """An array on the scan's own grid in RAS voxel order ([X, Y, Z] or [C, X, Y, Z], what
    :func:`to_original` resamples to) -> the scan's voxel order: a permutation and flips, exact.
    A caller that combines several resampled maps (an argmax over classes) can combine them
    in RAS order and reorient the result once, instead of copying each map."""
    channels = ras.ndim == 4
    ornt = nib.io_orientation(geometry.original_affine)
    back = nib.orientations.ornt_transform(RAS_ORNT, ornt)
    if channels:  # nibabel reorients the first three axes; put channels last meanwhile
        out = nib.orientations.apply_orientation(np.moveaxis(ras, 0, -1), back)
        out = np.moveaxis(out, -1, 0)
    else:
        out = nib.orientations.apply_orientation(ras, back)
    out = np.ascontiguousarray(out)
    assert out.shape[-3:] == tuple(geometry.original_shape)
    return out


def reorient_to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """File voxel order -> RAS voxel order (exact: a permutation and flips)."""
    return np.ascontiguousarray(nib.orientations.apply_orientation(array, nib.io_orientation(affine)))


def resample(array: np.ndarray, shape: tuple[int, ...], mode: str) -> np.ndarray:
    """Resize [X, Y, Z] or [C, X, Y, Z] to spatial ``shape`` (edge-aligned grids).

    ``linear``: trilinear, float32 out; ``nearest``: centre-aligned nearest (``nearest-exact``),
    dtype kept.
    """
    if mode not in ("linear", "nearest"):
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    spatial = tuple(array.shape[-3:])
    if spatial == tuple(shape):
        return array.astype(np.float32) if mode == "linear" else array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) if mode == "linear" else np.ascontiguousarray(array).astype(np.float32))
    tensor = tensor.reshape((1, -1) + spatial)
    with torch.no_grad():
        if mode == "linear":
            out = F.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=False)
        else:
            out = F.interpolate(tensor, size=tuple(shape), mode="nearest-exact")
    out_np = out.reshape(array.shape[:-3] + tuple(shape)).numpy()
    return out_np if mode == "linear" else out_np.astype(array.dtype)
