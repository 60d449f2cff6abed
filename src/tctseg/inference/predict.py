"""Predict label maps for scans, written in each scan's ORIGINAL geometry.

For each case: read the scan (NIfTI file or DICOM series folder) → normalise and resample
exactly as the checkpoint's training did (its stored ``config.preprocessing``) →
sliding-window class probabilities (main head only) → probabilities back to the original
grid (linear, per class) → argmax → optional largest component per class → a uint8 NIfTI
with the input's exact shape and affine, so 3D Slicer or ITK-SNAP overlays it directly.

Probabilities rather than labels are resampled back (then argmax) because interpolated
probabilities give smooth organ borders at the finer original resolution, where a nearest-
neighbour label map would show the coarser prepared grid's staircase.

Task-prompted methods (``method.task_prompted``: DoDNet, CLIP-Driven, Hermes) give one
sigmoid per class instead of a softmax. Their N task probabilities σ_c are blended and
resampled the same way; the label map is background where every σ_c ≤ ½, else the most
probable task (an argmax, for users), and with ``save_task_masks`` each task's own mask
σ_c > ½ is written too (``<case>_tasks.nii.gz``, uint8 ``[X, Y, Z, N]``, masks may overlap):
what the authors score, and what ``tctseg run``/``compare`` evaluate for these methods.

Every file is written to a temporary name in the output folder and renamed into place, so
a killed run never leaves a file that looks complete; a rerun skips finished cases.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union

import nibabel as nib
import numpy as np

from tctseg.errors import ConfigError, DataError, OutputError, TctsegError
from tctseg.inference.postprocess import keep_largest_component
from tctseg.inference.reports import CaseReports
from tctseg.layout import predictions_index
from tctseg.locking import hold_folder_lock, releases_folder_locks
from tctseg.outputs import ensure_writable
from tctseg.predict_options import ReportOptions
from tctseg.inference.sliding_window import sliding_window_probabilities

if TYPE_CHECKING:
    import torch

    from tctseg.config import Config
    from tctseg.data.io import Volume
    from tctseg.preprocessing import PreparedGeometry

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NNUNET_CHANNEL_SUFFIX = "_0000"
PROBABILITIES_SUFFIX = "_probabilities.nii.gz"
TASK_MASKS_SUFFIX = "_tasks.nii.gz"
TASK_THRESHOLD = 0.5  # a task's voxel is in its mask when σ_c > ½ (the authors' threshold)

# modality of each dataset format when the config does not say (nnunet reads dataset.json)
FORMAT_MODALITY = {
    "kits19": "CT",
    "msd": "CT",
    "btcv": "CT",
    "word": "CT",
    "amos": "CT",
    "chaos_nifti": "MR",
    "chaos_dicom": "MR",
}


@dataclass
class PredictionInput:
    """One case to predict: ``image`` is a NIfTI file or a DICOM series folder.

    ``label`` and ``dataset`` are optional and only passed through to ``index.json`` (for
    evaluation and the report).
    """

    case_id: str
    image: Path
    label: Path | None = None
    dataset: str | None = None


@dataclass
class PredictionResult:
    """What happened to one case. ``status``: ``written`` | ``skipped`` (output existed) | ``failed``."""

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

    @property
    def ok(self) -> bool:
        return self.status != "failed"


InputLike = Union[str, Path, PredictionInput, tuple]


# --------------------------------------------------------------------------- finding cases


def case_id_of(path: Path) -> str:
    """Case id of a NIfTI file (suffix and nnU-Net ``_0000`` channel stripped) or a series folder (its name)."""
    name = path.name
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


def find_cases(path: str | Path) -> list[PredictionInput]:
    """Expand INPUT into cases: a NIfTI file; a folder of NIfTI files; a DICOM series folder;
    or a folder of DICOM series folders (NIfTI files and series folders may sit side by side).

    Raises DataError naming ``path`` when it holds none of these.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input not found")
    if path.is_file():
        if not path.name.endswith(NIFTI_SUFFIXES):
            raise DataError(f"{path}: not a NIfTI file (.nii, .nii.gz); for DICOM give the series folder")
        return [PredictionInput(case_id_of(path), path)]
    if is_dicom_series_folder(path):
        return [PredictionInput(path.name, path)]
    cases = [PredictionInput(case_id_of(p), p) for p in sorted(path.iterdir()) if is_nifti_file(p)]
    cases += [
        PredictionInput(p.name, p)
        for p in sorted(path.iterdir())
        if p.is_dir() and not p.name.startswith(".") and is_dicom_series_folder(p)
    ]
    if not cases:
        raise DataError(f"{path}: holds no NIfTI files (.nii, .nii.gz) and no DICOM series folders")
    return cases


def _as_inputs(inputs: Iterable[InputLike]) -> list[PredictionInput]:
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


# --------------------------------------------------------------------------- settings


def training_modality(config: Config) -> str:
    """The modality (CT or MR) the model was trained on, from the config's training datasets.

    Raises ConfigError when it cannot be told or the datasets mix modalities (pass
    ``modality`` explicitly then).
    """
    found: dict[str, str] = {}
    training = config.datasets_with_role("train") or list(config.datasets)
    for dataset in training:
        modality = dataset.modality or FORMAT_MODALITY.get(dataset.format) or _nnunet_modality(dataset.path)
        if modality is None:
            raise ConfigError(
                f"datasets.{dataset.name}.modality: cannot tell the model's modality; pass --modality CT or MR"
            )
        found[dataset.name] = modality
    modalities = sorted(set(found.values()))
    if len(modalities) != 1:
        detail = ", ".join(f"{k}: {v}" for k, v in found.items()) or "no training datasets"
        raise ConfigError(f"datasets: cannot tell the model's modality ({detail}); pass --modality CT or MR")
    return modalities[0]


def _nnunet_modality(dataset_path: str) -> str | None:
    try:
        info = json.loads((Path(dataset_path) / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    channels = info.get("channel_names") or info.get("modality") or {}
    first = str(next(iter(channels.values()), "")).upper() if isinstance(channels, dict) else ""
    return "CT" if first == "CT" else "MR" if first in ("MR", "MRI", "T1", "T2") else None


def prepare_image(volume: Volume, modality: str, config: Config) -> tuple[np.ndarray, PreparedGeometry]:
    """A scan → the network's input space, as the prepared cache does it for training.

    Intensities are normalised on the original voxels (CT clip/scale or MR percentiles),
    then the volume is reoriented to RAS and resampled (linear) to ``preprocessing.spacing``.
    Returns ``(image [X', Y', Z'] float32, geometry)``.
    """
    from tctseg.preprocessing import normalise, to_prepared

    p = config.preprocessing
    normalised = normalise(volume.array, modality, p.ct_clip, p.mr_percentiles)
    image, geometry = to_prepared(normalised, volume.affine, tuple(p.spacing), mode="linear", source=volume.path)
    return np.asarray(image, dtype=np.float32), geometry


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
    peak memory is a few original-size volumes, not C of them. With ``want_probabilities``
    also returns uint8 probabilities ``[X, Y, Z, C]`` (round(255·p)).

    ``task_probabilities``: the C = N channels are task probabilities σ_c (no background);
    label c+1 goes where σ_c is the largest AND above ½, background elsewhere (the argmax
    of ``[1 − max σ, σ_1, …, σ_N]``). ``want_task_masks`` then also returns each task's own
    mask σ_c > ½ as uint8 ``[X, Y, Z, N]`` (overlaps kept).

    Returns ``(labels, probabilities or None, task masks or None)``.
    """
    from tctseg.preprocessing import to_original

    if want_task_masks and not task_probabilities:
        raise ValueError("task masks need task probabilities")
    shape = tuple(geometry.original_shape)
    channels = probabilities.shape[0]
    labels = np.zeros(shape, dtype=np.uint8)
    # a task must beat ½ to be foreground; a softmax class must beat the classes before it
    best = np.full(shape, TASK_THRESHOLD if task_probabilities else -np.inf, dtype=np.float32)
    offset = 1 if task_probabilities else 0  # task c is label c + 1
    scaled = np.zeros(shape + (channels,), dtype=np.uint8) if want_probabilities else None
    masks = np.zeros(shape + (channels,), dtype=np.uint8) if want_task_masks else None
    for c in range(channels):
        channel = to_original(np.ascontiguousarray(probabilities[c], dtype=np.float32), geometry, mode="linear")
        better = channel > best  # strict: ties keep the lower class id, like argmax
        labels[better] = c + offset
        np.maximum(best, channel, out=best)
        if scaled is not None:
            scaled[..., c] = np.clip(np.rint(channel * 255.0), 0, 255).astype(np.uint8)
        if masks is not None:
            masks[..., c] = channel > TASK_THRESHOLD
    return labels, scaled, masks


# --------------------------------------------------------------------------- writing


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temp_path)`` for a temporary file next to ``path``, then rename it to ``path``.

    The temporary name (``.<name>.partial-<pid>``) never ends in ``.nii.gz``; whatever
    ``write`` raises (even KeyboardInterrupt) it is removed, so ``path`` exists only complete.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_nifti_atomically(
    array: np.ndarray, affine: np.ndarray, path: Path, *, scale: float | None = None, protect: Iterable[Path] = ()
) -> Path:
    """Write ``array`` as gzipped NIfTI with ``affine`` (sform and qform), atomically.

    ``scale``: stored as the NIfTI ``scl_slope`` (uint8 probabilities use 1/255). Refuses
    (OutputError) to write over any path in ``protect``.
    """
    path = Path(path)
    target = path.resolve()
    if any(Path(p).resolve() == target for p in protect):
        raise OutputError(f"{path}: refusing to write over an input file")
    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    if scale is not None:
        image.header.set_slope_inter(scale, 0.0)

    def write(tmp: Path) -> None:
        # compresslevel 1, nibabel's own default: label maps compress well even so
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as stream:
            image.to_stream(stream)

    try:
        return write_atomically(path, write)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None


def write_index(output_dir: Path, results: Sequence[PredictionResult]) -> Path:
    """``<output_dir>/index.json``: ``[{case_id, image, prediction[, probabilities, task_masks, label, dataset]}]``.

    Entries of earlier runs whose prediction file still exists are kept (this run's win).
    """
    path = predictions_index(output_dir)
    entries: dict[str, dict[str, Any]] = {}
    try:
        for entry in json.loads(path.read_text(encoding="utf-8")):
            if isinstance(entry, dict) and Path(str(entry.get("prediction", ""))).is_file():
                entries[str(entry["case_id"])] = entry
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no index yet, or an unreadable one: rebuilt from this run
    for r in results:
        if not r.ok or r.prediction is None:
            continue
        entry: dict[str, Any] = {"case_id": r.case_id, "image": str(r.image.resolve()), "prediction": str(r.prediction.resolve())}
        if r.probabilities is not None:
            entry["probabilities"] = str(r.probabilities.resolve())
        if r.task_masks is not None:
            entry["task_masks"] = str(r.task_masks.resolve())
        if r.label is not None:
            entry["label"] = str(Path(r.label).resolve())
        if r.dataset is not None:
            entry["dataset"] = r.dataset
        entries[r.case_id] = entry
    text = json.dumps(sorted(entries.values(), key=lambda e: e["case_id"]), indent=2) + "\n"
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


# --------------------------------------------------------------------------- predicting


@releases_folder_locks
def predict_cases(
    model: str | Path | tuple[torch.nn.Module, Config],
    inputs: Iterable[InputLike],
    output_dir: str | Path,
    *,
    save_probabilities: bool = False,
    save_task_masks: bool = False,
    largest_component: bool | None = None,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    tta_flip: bool | None = None,
    modality: str | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
    reports: ReportOptions | None = None,
) -> list[PredictionResult]:
    """Predict every case of ``inputs`` into ``output_dir`` and write ``output_dir/index.json``.

    ``model``: a checkpoint path, or ``(method, config)``. ``inputs``: paths (each expanded
    by :func:`find_cases`), :class:`PredictionInput`, or ``(case_id, image[, label[, dataset]])``
    tuples. Settings left None come from the config's ``inference`` section; ``modality``
    defaults to the training datasets' (:func:`training_modality`). Writes
    ``<case_id>.nii.gz`` (uint8 labels, global ids) and, with ``save_probabilities``,
    ``<case_id>_probabilities.nii.gz`` (uint8 ``[X, Y, Z, N+1]``, scl_slope 1/255; for a
    task-prompted method ``[X, Y, Z, N]``, the task probabilities σ_c). With
    ``save_task_masks`` (task-prompted methods only, else ConfigError) also
    ``<case_id>_tasks.nii.gz``: uint8 ``[X, Y, Z, N]``, channel c−1 = class c's own mask
    σ_c > ½ (largest component per task with ``largest_component``).

    A case that cannot be read or predicted is reported (``status="failed"``, ``error`` names
    the file) and the others still run. A case whose outputs exist is skipped unless
    ``overwrite``. Raises OutputError before any work if the output folder is an input's.

    ``reports``: statistics, preview, QC and DICOM SEG outputs per case
    (:mod:`tctseg.inference.reports`); the auxiliary heads run only for its ``qc``.
    """
    from tqdm import tqdm

    from tctseg.data.io import load_volume

    method, config = _load_model(model, device)
    inputs = list(inputs)
    cases = _as_inputs(inputs)
    output_dir = Path(output_dir)
    input_folders = [Path(i) for i in inputs if isinstance(i, (str, Path)) and Path(i).is_dir()]
    check_output_dir(output_dir, cases, input_folders)
    ensure_writable(output_dir, "the output folder")  # a full disk shows here, before any case runs
    hold_folder_lock(output_dir, "predictions")  # one predict per output folder, until this returns
    settings = config.inference
    task_prompted = bool(getattr(method, "task_prompted", False))  # see Method.task_prompted
    if save_task_masks and not task_prompted:
        raise ConfigError(
            f"--task-masks: method {config.method.name!r} predicts one softmax over the classes; per-task "
            "masks exist only for task-prompted methods (dodnet, clip, hermes)"
        )
    modality = modality or training_modality(config)
    if modality not in ("CT", "MR"):
        raise ConfigError(f"modality: {modality!r} is not CT or MR")
    lcc = settings.largest_component if largest_component is None else largest_component
    case_reports = None
    if reports is not None and reports.asked:
        case_reports = CaseReports(
            reports, output_dir, config.classes, modality, method, config.method.name, write_atomically,
            largest_component=lcc, task_probabilities=task_prompted,
        )
        case_reports.check_cases(cases)
    run_aux = case_reports is not None and case_reports.wants_aux
    protect = [Path(c.image) for c in cases]
    seen: dict[str, Path] = {}
    results: list[PredictionResult] = []
    bar = tqdm(cases, desc="predict", unit="case", disable=not progress)
    for case in bar:
        bar.set_postfix_str(case.case_id)
        start = time.perf_counter()
        result = PredictionResult(case.case_id, Path(case.image), "failed", label=case.label, dataset=case.dataset)
        prediction = output_dir / f"{case.case_id}.nii.gz"
        probabilities = output_dir / f"{case.case_id}{PROBABILITIES_SUFFIX}" if save_probabilities else None
        task_masks = output_dir / f"{case.case_id}{TASK_MASKS_SUFFIX}" if save_task_masks else None
        try:
            if case.case_id in seen:
                raise DataError(f"{case.image}: case id {case.case_id!r} is also the id of {seen[case.case_id]}")
            seen[case.case_id] = Path(case.image)
            if (
                not overwrite
                and all(p is None or p.is_file() for p in (prediction, probabilities, task_masks))
                and (case_reports is None or case_reports.finished(case.case_id))
            ):
                result.status = "skipped"
            else:
                volume = load_volume(case.image)
                image, geometry = prepare_image(volume, modality, config)
                probs = sliding_window_probabilities(
                    method,
                    image,
                    config.train.patch_size,
                    overlap=settings.overlap if overlap is None else overlap,
                    sw_batch_size=settings.sw_batch_size if sw_batch_size is None else sw_batch_size,
                    tta_flip=settings.tta_flip if tta_flip is None else tta_flip,
                    device=device,
                    channels_last=config.network.channels_last,
                    task_probabilities=task_prompted,
                    aux_heads=run_aux,
                    progress=progress,  # a bar across the windows: a whole-body CT has ~100 of them
                ).numpy()
                aux_probs = None
                if run_aux:  # [2N+1, ...]: the main head's N+1 channels, then the N ATHs' gʲ
                    probs, aux_probs = probs[: config.num_classes + 1], probs[config.num_classes + 1 :]
                labels, scaled, masks = labels_in_original_space(
                    probs, geometry,
                    want_probabilities=save_probabilities or (case_reports is not None and case_reports.wants_probabilities),
                    task_probabilities=task_prompted, want_task_masks=save_task_masks,
                )
                del probs
                if lcc:
                    labels = keep_largest_component(labels, list(range(1, config.num_classes + 1)))
                    if masks is not None:
                        for c in range(masks.shape[-1]):
                            masks[..., c] = keep_largest_component(masks[..., c], [1])
                # the input's own affine: the label map lies voxel for voxel on the scan
                save_nifti_atomically(labels, volume.affine, prediction, protect=protect)
                if scaled is not None and probabilities is not None:
                    save_nifti_atomically(scaled, volume.affine, probabilities, scale=1.0 / 255.0, protect=protect)
                if masks is not None and task_masks is not None:
                    save_nifti_atomically(masks, volume.affine, task_masks, protect=protect)
                if case_reports is not None:
                    case_reports.add(case.case_id, Path(case.image), volume, labels, scaled, aux_probs, geometry)
                result.status = "written"
            result.prediction = prediction
            result.probabilities = probabilities
            result.task_masks = task_masks
        except OutputError:
            write_index(output_dir, results)  # what is done stays findable
            if case_reports is not None:
                case_reports.finish()
            raise  # a refused or unwritable output stops the run: every case would fail the same way
        except (TctsegError, OSError) as e:
            result.error = str(e)
            bar.write(f"predict: {case.case_id} failed: {e}")
        result.seconds = time.perf_counter() - start
        results.append(result)
    write_index(output_dir, results)
    if case_reports is not None:
        case_reports.finish()
    return results


def _load_model(model: str | Path | tuple[torch.nn.Module, Config], device: str) -> tuple[torch.nn.Module, Config]:
    if isinstance(model, tuple):
        return model
    from tctseg.checkpoint import load_method_from_checkpoint

    return load_method_from_checkpoint(model, device=device)
