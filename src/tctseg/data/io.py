"""Reading and writing volumes (NIfTI files and DICOM series) with the checks every input needs.

A :class:`Volume` holds the voxel array in the FILE's own voxel order ``[X, Y, Z]`` and the
4×4 affine that maps voxel indices to RAS+ world millimetres (nibabel's convention: +x to
the patient's Right, +y Anterior, +z Superior). DICOM/ITK geometry is LPS+, so its first two
world axes are negated on the way in.

Every problem a user can cause is a :class:`~tctseg.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np

from tctseg.data.dicom_geometry import check_series_geometry
from tctseg.errors import DataError, GeometryWarning, OutputError
from tctseg.files.outputs import write_atomically

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# 2^31 voxels (8 GiB as float32): far above any CT/MR scan (512×512×1000 is 2.6e8); a header
# claiming more is corrupt, and reading it would only exhaust memory
MAX_VOXELS = 2**31
# deflate cannot compress better than about 1032:1, so a .nii.gz of n bytes holds at most this many
GZIP_MAX_RATIO = 1100
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# |cos| of the angle between two voxel axes above which an affine counts as sheared (~0.06°)
SHEAR_TOLERANCE = 1e-3


@dataclass
class Volume:
    """One 3D volume: ``array`` [X, Y, Z] in file voxel order, ``affine`` 4×4 voxel → RAS mm."""

    array: np.ndarray
    affine: np.ndarray
    path: Path

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (length of each affine column)."""
        return affine_spacing(self.affine)


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis: the length of each of the affine's first three
    columns. What tctseg means by a scan's spacing everywhere (resampling, statistics,
    evaluation), rather than the header's pixdim, which may disagree with the sform."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0))  # type: ignore[return-value]


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def load_volume(path: str | Path, *, integer: bool = False) -> Volume:
    """Read a NIfTI file or a DICOM series folder and check it is a usable 3D volume.

    Images come back as float32; with ``integer=True`` (labels) the stored integer dtype is
    kept (float files must hold whole numbers). Raises DataError for unreadable or truncated
    files, 2D/4D data, empty dimensions, NaN/inf voxels, and a zero or singular geometry.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        array, affine = _read_dicom_series(path)
    elif is_nifti(path):
        array, affine = _read_nifti(path, integer)
    else:
        raise DataError(f"{path}: not a NIfTI file (.nii, .nii.gz) or a DICOM series folder")
    array = _as_3d(array, path)
    _check_affine(affine, path)
    if integer:
        array = _as_integer(array, path)
    else:
        array = np.asarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise DataError(f"{path}: {bad} voxels are NaN or infinite")
    return Volume(array=array, affine=affine, path=path)


def load_label(path: str | Path, reference: Volume | None = None) -> np.ndarray:
    """Read an integer label volume [X, Y, Z]; with ``reference`` check it matches that image's grid."""
    label = load_volume(path, integer=True)
    if reference is not None:
        check_same_grid(label.array.shape, label.affine, reference, Path(path))
    return label.array


def check_same_grid(shape: tuple[int, ...], affine: np.ndarray, reference: Volume, path: Path) -> None:
    """Raise DataError unless (shape, affine) equal the reference image's grid."""
    if tuple(shape) != reference.shape:
        raise DataError(
            f"{path}: label shape {list(shape)} differs from image shape "
            f"{list(reference.shape)} ({reference.path.name})"
        )
    # 1e-3 mm tolerance: headers written by different tools round the affine differently
    if not np.allclose(affine, reference.affine, atol=1e-3, rtol=1e-4):
        raise DataError(  # one line: the command line prints it as one message
            f"{path}: label geometry (affine) differs from the image's ({reference.path.name}): "
            f"label {np.round(affine, 3).tolist()}, image {np.round(reference.affine, 3).tolist()}"
        )


def save_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    dtype: np.dtype | type | None = None,
    protect: Iterable[str | Path] = (),
    *,
    scale: float | None = None,
) -> Path:
    """Write ``array`` [X, Y, Z] (or [X, Y, Z, C]) with ``affine`` (sform and qform) as NIfTI, atomically.

    Written through :func:`tctseg.files.outputs.write_atomically` (a temporary name that never ends
    in ``.nii.gz``, renamed into place; whatever the write raises, even KeyboardInterrupt, the
    temporary file is removed). ``scale``: stored as the NIfTI ``scl_slope`` (uint8 probabilities use 1/255).
    A ``.nii.gz`` is gzipped at level 1 (nibabel's default) with no time stamp and the final
    file's name in its header, so the same array gives the same bytes in every run. Refuses (OutputError) to write over any path in ``protect``
    (the inputs); a failed write is an OutputError naming ``path``.
    """
    path = Path(path)
    target = path.resolve()
    for p in protect:
        if Path(p).resolve() == target:
            raise OutputError(f"{path}: refusing to write over an input file")
    data = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    image = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    if scale is not None:
        image.header.set_slope_inter(scale, 0.0)
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as raw:
            if path.name.endswith(".gz"):
                # the gzip header names the final file, not the temporary one: same array, same bytes
                with gzip.GzipFile(path.name, "wb", compresslevel=1, fileobj=raw, mtime=0) as stream:
                    image.to_stream(stream)
            else:
                image.to_stream(raw)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path}: cannot write the NIfTI file ({e.strerror or e})") from None
    return write_atomically(path, write, "the NIfTI file")


# --------------------------------------------------------------------------- readers


def _read_nifti(path: Path, integer: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        image = nib.load(str(path))
        _check_header(image, path)  # before any voxel is read: a corrupt header must not allocate
        if integer:
            array = np.asanyarray(image.dataobj)
        else:
            array = image.get_fdata(dtype=np.float32)
        affine = np.asarray(image.affine, dtype=np.float64)
        _check_affine(affine, path)  # a singular affine is refused, not warned about
        warn_about_geometry(image, affine, path)
    except (
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
        np.linalg.LinAlgError,
        OSError,
        EOFError,
        ValueError,
        OverflowError,
        zlib.error,
    ) as e:
        reason = " ".join(str(e).split())  # nibabel's messages span lines; the CLI prints one
        raise DataError(f"{path}: cannot read NIfTI file, it may be truncated or corrupt ({reason})") from None
    except MemoryError:
        raise DataError(f"{path}: too large to read into memory (shape {list(image.shape)})") from None
    return array, affine


def _check_header(image, path: Path) -> None:
    """Refuse non-scalar voxel types and a header whose shape the file cannot hold."""
    dtype = np.dtype(image.get_data_dtype())
    if dtype.fields is not None or dtype.kind in "cV":
        raise DataError(f"{path}: voxel type {dtype} (RGB or complex) is not supported; a scalar image is needed")
    shape = [int(s) for s in image.shape]
    if any(s < 0 for s in shape):
        raise DataError(f"{path}: header claims a negative dimension (shape {shape}); the header is corrupt")
    voxels = 1
    for s in shape:
        voxels *= s
    if voxels > MAX_VOXELS:
        raise DataError(
            f"{path}: header claims shape {shape} ({voxels:.3g} voxels), more than the {MAX_VOXELS:.3g} "
            "tctseg reads; the header is likely corrupt"
        )
    header = image.header
    if "sform_code" in header and int(header["sform_code"]) == 0:
        # without an sform the affine comes from pixdim, where nibabel silently turns 0 into 1 mm
        with nib.openers.ImageOpener(path) as stream:
            stored = type(header).from_fileobj(stream, check=False)  # nibabel's own check hides it
        pixdim = [float(d) for d in stored["pixdim"][1 : 1 + min(3, len(shape))]]
        if any(not np.isfinite(d) or d == 0 for d in pixdim):
            raise DataError(f"{path}: voxel spacing (pixdim) {pixdim} mm holds a zero or non-finite size")
    size = path.stat().st_size
    compressed = path.name.endswith(".gz")
    offset = 0 if compressed else int(image.header.get_data_offset())
    available = size * GZIP_MAX_RATIO if compressed else size - offset
    needed = voxels * dtype.itemsize
    if needed > available:
        raise DataError(
            f"{path}: header claims shape {shape} ({needed} bytes of voxels), but the file can hold at most "
            f"{available} bytes; it is truncated or its header is corrupt"
        )


def warn_about_geometry(image, affine: np.ndarray, path: Path) -> None:
    """Warn (GeometryWarning, once per file) when the qform and sform disagree, or the affine is sheared."""
    header = image.header
    if "qform_code" in header and "sform_code" in header:
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
        # 1e-3 mm, as check_same_grid: tools round the two forms differently
        if qcode and scode and not np.allclose(qform, sform, atol=1e-3, rtol=1e-4):
            offset = float(np.abs(qform[:3, 3] - sform[:3, 3]).max())
            warnings.warn(GeometryWarning(
                f"{path}: the header's qform and sform disagree (origins {offset:.3g} mm apart, or other axes); "
                "tctseg uses the sform, as nibabel does"
            ), stacklevel=2)
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)  # non-singular: checked before
    cosines = np.abs(columns.T @ columns - np.eye(3))
    if cosines.max() > SHEAR_TOLERANCE:
        degrees = float(np.degrees(np.arcsin(min(1.0, cosines.max()))))
        warnings.warn(GeometryWarning(
            f"{path}: the affine is sheared (voxel axes {degrees:.2g}° off perpendicular); tctseg resamples along "
            "the voxel axes and writes predictions with this same affine, so they still overlay the scan"
        ), stacklevel=2)


def dicom_series_files(folder: Path) -> list[str]:
    """The slice files of the one DICOM series in ``folder``, in ITK's order: file k is voxel
    slice k of :func:`load_volume`'s array (its third axis)."""
    import SimpleITK as sitk

    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as e:
        raise DataError(f"{folder}: cannot scan for DICOM series ({e})") from None
    if not series:
        raise DataError(f"{folder}: no DICOM series found in this folder")
    if len(series) > 1:
        raise DataError(f"{folder}: holds {len(series)} DICOM series; put each series in its own folder")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))


def read_dicom_series_itk(folder: Path):
    """The SimpleITK image of the one DICOM series in ``folder`` plus its slice file names (in ITK order).

    The slices' positions and orientations are checked first (:mod:`tctseg.data.dicom_geometry`).
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    files = dicom_series_files(folder)
    # before ITK reads it: ITK would average a gap or invent 1 mm, with only a multi-line warning
    check_series_geometry(folder, files)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise DataError(f"{folder}: cannot read DICOM series ({str(e).strip().splitlines()[-1]})") from None
    return image, list(files)


def itk_to_ras_affine(image) -> np.ndarray:
    """4×4 voxel (i, j, k) → RAS mm affine of a SimpleITK image (ITK geometry is LPS)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)[None, :]
    lps[:3, 3] = image.GetOrigin()
    return _LPS_TO_RAS @ lps


def _read_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    image, _ = read_dicom_series_itk(folder)  # its slice geometry checked
    if image.GetDimension() != 3:
        raise DataError(f"{folder}: DICOM series is {image.GetDimension()}D, expected 3D")
    # ITK arrays are [k, j, i]; transposed to [i, j, k] to match the affine's column order
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    return array, itk_to_ras_affine(image)


# --------------------------------------------------------------------------- checks


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.size == 0:  # nibabel reads a zero dimension as a shorter shape: test emptiness first
        raise DataError(f"{path}: empty volume (shape {list(array.shape)})")
    while array.ndim > 3 and array.shape[-1] == 1:  # (X, Y, Z, 1) is a 3D volume
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got {array.ndim}D data of shape {list(array.shape)}")
    if 0 in array.shape:
        raise DataError(f"{path}: empty volume (shape {list(array.shape)})")
    return array


def _check_affine(affine: np.ndarray, path: Path) -> None:
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(f"{path}: geometry (affine) holds non-finite values")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if (spacing <= 0).any() or abs(np.linalg.det(affine[:3, :3])) < 1e-9 * float(np.prod(np.maximum(spacing, 1e-12))):
        raise DataError(f"{path}: geometry is singular (voxel spacing {np.round(spacing, 4).tolist()} mm)")


def _as_integer(array: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.bool_):
        return array.astype(np.uint8)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: label volume holds NaN or infinite voxels")
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        raise DataError(f"{path}: label volume holds non-integer values (e.g. {array[rounded != array].flat[0]})")
    low, high = float(rounded.min()), float(rounded.max())
    dtype = np.result_type(np.min_scalar_type(int(low)), np.min_scalar_type(int(high)))
    return rounded.astype(dtype)
