"""Finding the cases to predict, and their ids (like nnU-Net's input discovery in
``predict_from_raw_data.py``).

INPUT is a NIfTI file, a folder of NIfTI files, a DICOM series folder, or a folder of DICOM
series folders. A NIfTI case's id is its file name without ``.nii`` / ``.nii.gz`` and
without an nnU-Net ``_0000`` channel suffix; a series folder's id is its name (of the folder
it stands for: ``.`` inside ``series_7/`` is ``series_7``, never ``""`` or ``..``). Evaluation
matches predictions to ground truths by the same id (:func:`case_id_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

from tctseg.data.io import NIFTI_SUFFIXES
from tctseg.errors import DataError

NNUNET_CHANNEL_SUFFIX = "_0000"


@dataclass
class PredictionInput:
    """One case to predict: ``image`` is a NIfTI file or a DICOM series folder.

    ``label`` and ``dataset`` are optional and only passed through to ``index.json`` (for
    evaluation and the report). ``tasks``: the global class ids the case's dataset annotates,
    known for a test set (``run``/``compare``); a task-prompted method is then asked those
    tasks only (Hermes' task tokens, as its authors evaluate); None (a new scan): every task.
    """

    case_id: str
    image: Path
    label: Path | None = None
    dataset: str | None = None
    tasks: tuple[int, ...] | None = None


InputLike = Union[str, Path, PredictionInput, tuple]


def case_id_of(path: Path) -> str:
    """Case id of a NIfTI file (suffix and nnU-Net ``_0000`` channel stripped) or a series folder (its name)."""
    name = path.name
    if name in ("", ".", ".."):  # `.`, `series/sub/..`: the folder they stand for
        name = path.resolve().name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return stem[: -len(NNUNET_CHANNEL_SUFFIX)] if stem.endswith(NNUNET_CHANNEL_SUFFIX) else stem
    return name


def is_nifti_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            header = f.read(132)
    except OSError:
        return False
    return header[128:132] == b"DICM"  # the DICOM Part 10 preamble marker


def is_dicom_series_folder(folder: Path) -> bool:
    """True if ``folder`` directly holds DICOM files (``.dcm``, the ``DICM`` marker, or a series GDCM finds)."""
    if not folder.is_dir():
        return False
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files or any(p.name.endswith(NIFTI_SUFFIXES) for p in files):
        return False
    if any(_looks_like_dicom(p) for p in files[:5]):
        return True
    import SimpleITK as sitk

    try:  # DICOM files without the Part 10 preamble
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return False


def _special_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words."""
    import stat

    mode = path.stat().st_mode
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file or folder"


def find_cases(path: str | Path) -> list[PredictionInput]:
    """Expand INPUT into cases: a NIfTI file; a folder of NIfTI files; a DICOM series folder;
    or a folder of DICOM series folders (NIfTI files and series folders may sit side by side).

    Raises DataError naming ``path`` when it holds none of these, or is none of these (a FIFO,
    a device such as ``/dev/null``, a name too long to exist).
    """
    path = Path(path)
    try:
        if not path.exists():
            raise DataError(f"{path}: input not found")
        kind = None if path.is_file() or path.is_dir() else _special_kind(path)
    except OSError as e:  # ENAMETOOLONG, a loop of links, ...
        raise DataError(f"{path}: cannot read the input ({e.strerror or e})") from None
    if kind:
        raise DataError(f"{path}: is {kind}, not a NIfTI file, a folder of scans or a DICOM series folder")
    if path.is_file():
        if not path.name.endswith(NIFTI_SUFFIXES):
            raise DataError(f"{path}: not a NIfTI file (.nii, .nii.gz); for DICOM give the series folder")
        return [PredictionInput(case_id_of(path), path)]
    if is_dicom_series_folder(path):
        case_id = case_id_of(path)
        if not case_id:
            raise DataError(f"{path}: a DICOM series folder needs a name (its case id and output file name)")
        return [PredictionInput(case_id, path)]
    cases = [PredictionInput(case_id_of(p), p) for p in sorted(path.iterdir()) if is_nifti_file(p)]
    cases += [
        PredictionInput(p.name, p)
        for p in sorted(path.iterdir())
        if p.is_dir() and not p.name.startswith(".") and is_dicom_series_folder(p)
    ]
    if not cases:
        raise DataError(f"{path}: holds no NIfTI files (.nii, .nii.gz) and no DICOM series folders")
    return cases


def as_inputs(inputs: Iterable[InputLike]) -> list[PredictionInput]:
    """Paths (each expanded by :func:`find_cases`), :class:`PredictionInput`, or
    ``(case_id, image[, label[, dataset]])`` tuples → the cases, in order."""
    cases: list[PredictionInput] = []
    for item in inputs:
        if isinstance(item, PredictionInput):
            cases.append(item)
        elif isinstance(item, tuple):
            case_id, image, *rest = item
            label = rest[0] if len(rest) > 0 else None
            dataset = rest[1] if len(rest) > 1 else None
            cases.append(PredictionInput(str(case_id), Path(image), Path(label) if label else None, dataset))
        else:
            cases.extend(find_cases(item))
    return cases
