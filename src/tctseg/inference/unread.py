"""What a folder given to ``tctseg predict`` holds that is not predicted, so that nothing is
skipped without a word (issue 31, item 15).

:func:`tctseg.inference.inputs.find_cases` reads a folder's NIfTI files (``.nii``,
``.nii.gz``) and its DICOM series sub-folders; tctseg reads no other image format. A scan in
another format beside them (``.mha``, ``.nrrd``, ...) used to be left out in silence::

    for what, why in unread_entries(Path("scans")):
        warnings.warn(f"{what}: skipped: {why}", TctsegWarning)

Each scan in another format is named on a line of its own, with what to do; DICOM files lying
beside NIfTI files (not in a series folder of their own) and files that are no images are each
named together on one line (a BIDS folder has a ``.json`` beside every scan); a sub-folder that
is not a DICOM series is named too (predict does not look inside it). Hidden entries (``.name``)
are passed over, as :func:`find_cases` passes them over.
"""

from __future__ import annotations

from pathlib import Path

from tctseg.data.io import NIFTI_SUFFIXES

# image formats SimpleITK/ITK or other tools read and tctseg does not: suffix → name
OTHER_IMAGE_FORMATS = {
    ".mha": "MetaImage", ".mhd": "MetaImage header", ".raw": "MetaImage or raw data", ".nrrd": "NRRD",
    ".nhdr": "NRRD header", ".hdr": "Analyze header", ".img": "Analyze image", ".img.gz": "Analyze image",
    ".mnc": "MINC", ".mnc2": "MINC", ".mgh": "FreeSurfer MGH", ".mgz": "FreeSurfer MGH", ".gipl": "GIPL",
    ".gipl.gz": "GIPL", ".vtk": "VTK", ".nia": "NIfTI-1 .nia", ".nii.bz2": "bzip2-compressed NIfTI",
    ".nii.xz": "xz-compressed NIfTI", ".nii.zst": "zstd-compressed NIfTI", ".tif": "TIFF", ".tiff": "TIFF",
    ".npy": "NumPy array", ".npz": "NumPy archive", ".h5": "HDF5", ".hdf5": "HDF5", ".zarr": "Zarr",
}
READ = "predict reads NIfTI files (.nii, .nii.gz) and DICOM series folders"
SHOWN = 3  # names shown of a group of files named on one line


def image_format(path: Path) -> str | None:
    """The name of ``path``'s image format when tctseg does not read it (by its suffix), else None."""
    name = path.name.lower()
    for suffix in sorted(OTHER_IMAGE_FORMATS, key=len, reverse=True):  # .img.gz before .img
        if name.endswith(suffix):
            return f"{OTHER_IMAGE_FORMATS[suffix]} format ({suffix})"
    return None


def unread_entries(folder: Path, exclude: Path | None = None) -> list[tuple[str, str]]:
    """``(what, why it is skipped)`` for what a folder INPUT holds besides the cases
    :func:`~tctseg.inference.inputs.find_cases` makes of it; empty for a file, a DICOM series
    folder, or a folder holding nothing else. ``what`` is a path, or for a group of files the
    folder and their names (``scans/{a.dcm, b.dcm, c.dcm and 97 more}``). ``exclude``: a
    folder not to name (the output folder, when it lies inside INPUT)."""
    try:
        return _unread(Path(folder), exclude)
    except OSError:
        return []  # an unreadable folder: find_cases says what is wrong with it


def _unread(folder: Path, exclude: Path | None) -> list[tuple[str, str]]:
    from tctseg.inference.inputs import is_dicom_series_folder, is_nifti_file

    if not folder.is_dir() or is_dicom_series_folder(folder):
        return []
    excluded = exclude.resolve() if exclude is not None else None
    entries: list[tuple[str, str]] = []
    dicom_files: list[Path] = []
    other_files: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or is_nifti_file(path):
            continue
        if path.is_dir():
            if path.resolve() == excluded or is_dicom_series_folder(path):
                continue
            entries.append((str(path), "a folder that is not a DICOM series; predict does not look inside "
                                       "sub-folders (give this folder as INPUT to predict its scans)"))
        elif not path.is_file():
            continue  # a FIFO, a socket: nothing a user keeps scans in
        elif path.name.lower().endswith(NIFTI_SUFFIXES):  # NIfTI, but the suffix in capitals
            entries.append((str(path), f"a NIfTI file whose suffix is not .nii or .nii.gz in lower case: {READ}; "
                                       "rename it"))
        elif image_format(path):
            entries.append((str(path), f"a scan in {image_format(path)}: {READ}; convert it to .nii.gz first "
                                       "(SimpleITK reads it: sitk.WriteImage(sitk.ReadImage(path), 'case.nii.gz'))"))
        elif _is_dicom_file(path):
            dicom_files.append(path)
        else:
            other_files.append(path)
    if dicom_files:
        entries.append((_group(dicom_files), "DICOM files beside NIfTI files: predict reads a DICOM series "
                                             "from a folder of its own (move each series into one)"))
    if other_files:
        entries.append((_group(other_files), f"not scans: {READ}"))
    return entries


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"  # the DICOM Part 10 preamble marker
    except OSError:
        return False


def _group(paths: list[Path]) -> str:
    """A group of files of one folder in a message: ``scans/a.json`` or ``scans/{a.dcm, b.dcm, c.dcm and 97 more}``."""
    if len(paths) == 1:
        return str(paths[0])
    shown = ", ".join(p.name for p in paths[:SHOWN])
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return f"{paths[0].parent}/{{{shown}{more}}}"
