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
what the authors score, and what ``tctseg run``/``compare`` evaluate for these methods. A
case that says which classes its dataset annotates (:attr:`PredictionInput.tasks`: a test
set of ``run``/``compare``) is predicted with those tasks only (``task_logits_for``: Hermes
uses only their task tokens, as its authors evaluate); a scan given to ``tctseg predict``
says nothing, so every task takes part.

Every file is written to a temporary name in the output folder and renamed into place, so
a killed run never leaves a file that looks complete; a rerun skips finished cases. The files
that gather every case (``statistics.json``, ``qc.json``) are rewritten after each case, so a
killed ``--statistics`` run keeps the statistics of its finished cases; a case whose label map
is there but whose statistics, preview or DICOM SEG are not gets only those made, from the
label map written (``"completed"``). The
folder's ``index.json`` lists each case before its files are written and is the record of
what tctseg wrote there: only files it lists are skipped or written over, and a folder
holding other NIfTI files (ground truths, say) is refused.

Several models predict as an ensemble (:mod:`tctseg.inference.ensemble`): each runs its own
sliding window, their probabilities are averaged before the label map, one progress bar
counts every member's windows, and each case's ``models`` in ``index.json`` say which
checkpoints (path, sha256) made it. One model is exactly the single-model prediction.

This module is the loop and the models; finding the cases is :mod:`tctseg.inference.inputs`,
going back to the original grid and writing is :mod:`tctseg.inference.export`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from tctseg.data.conversion import dataset_modality
from tctseg.data.io import save_nifti
from tctseg.errors import ConfigError, DataError, OutputError, TctsegError
from tctseg.files.layout import PredictionsLayout
from tctseg.files.locking import hold_folder_lock, releases_folder_locks
from tctseg.files.outputs import ensure_writable, write_atomically
from tctseg.inference.backends import check_backend, network_for
from tctseg.inference.ensemble import (
    RESULT_INFERENCE_SETTINGS,
    EnsembleMember,
    ModelLike,
    check_members_agree,
    load_members,
    member_profile,
)
from tctseg.inference.export import (
    PredictionResult,
    check_output_dir,
    check_own_outputs,
    labels_in_original_space,
    write_index,
)
from tctseg.inference.inputs import InputLike, PredictionInput, as_inputs
from tctseg.inference.postprocess import keep_largest_component
from tctseg.inference.reports import CaseReports
from tctseg.inference.sliding_window import sliding_window_probabilities, window_count
from tctseg.predict_options import ReportOptions
from tctseg.settings import MODALITIES

if TYPE_CHECKING:
    from tctseg.config import Config
    from tctseg.data.io import Volume
    from tctseg.preprocessing import PreparedGeometry


# --------------------------------------------------------------------------- settings


def training_modality(config: Config) -> str:
    """The modality (CT or MR) the model was trained on, from the config's training datasets
    (each as its converter tells it: :func:`tctseg.data.conversion.dataset_modality`).

    Raises ConfigError when it cannot be told or the datasets mix modalities (pass
    ``modality`` explicitly then).
    """
    found: dict[str, str] = {}
    training = config.datasets_with_role("train") or list(config.datasets)
    for dataset in training:
        modality = dataset_modality(dataset)
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


def prepare_image(volume: Volume, modality: str, config: Config) -> tuple[np.ndarray, PreparedGeometry]:
    """A scan → the network's input space: :func:`tctseg.preprocessing.scan.prepare_scan`, the
    function the prepared cache uses for training, with the model's preprocessing settings.
    Returns ``(image [X', Y', Z'] float32, geometry)``."""
    from tctseg.preprocessing.scan import prepare_scan, prepared_settings

    return prepare_scan(volume.array, volume.affine, modality, prepared_settings(config.preprocessing), volume.path)


@dataclass
class _Run:
    """What every case of one predict call shares: the models, their settings, where outputs go.
    ``config`` is the first member's (the classes and preprocessing every member shares)."""

    members: list[EnsembleMember]
    config: Config
    output_dir: Path
    modality: str
    overlap: float
    sw_batch_size: int
    tta_flip: bool
    largest_component: bool
    task_prompted: bool
    save_probabilities: bool
    save_task_masks: bool
    device: str
    progress: bool
    protect: list[Path]
    reports: CaseReports | None
    backend: str = "torch"
    # (member index, entry point) → what the sliding window calls, built on first use
    networks: dict = dataclasses.field(default_factory=dict)

    def network(self, index: int, entry: str):
        """Member ``index``'s ``entry`` (predict_logits, predict_with_aux, task_logits) under
        :attr:`backend`: None for torch (the method's own call), else an exported network."""
        if self.backend == "torch":
            return None
        if (index, entry) not in self.networks:
            member = self.members[index]
            self.networks[index, entry] = network_for(
                member.method, entry, self.backend, member.config.train.patch_size, checkpoint_sha256=member.sha256
            )
        return self.networks[index, entry]


# --------------------------------------------------------------------------- predicting


@releases_folder_locks
def predict_cases(
    model: ModelLike | list[ModelLike],
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
    backend: str = "torch",
) -> list[PredictionResult]:
    """Predict every case of ``inputs`` into ``output_dir`` and write ``output_dir/index.json``.

    ``model``: a checkpoint path, or ``(method, config)``; a list of those predicts as an
    ensemble (:mod:`~tctseg.inference.ensemble`: their probabilities averaged; members that
    disagree on classes, preprocessing, method or the config's inference settings left None
    here raise CheckpointError before any work). ``inputs``: paths (each expanded
    by :func:`~tctseg.inference.inputs.find_cases`), :class:`PredictionInput`, or
    ``(case_id, image[, label[, dataset]])`` tuples. Settings left None come from the
    config's ``inference`` section (the first member's); ``modality`` defaults to the training
    datasets' (:func:`training_modality`). Writes
    ``<case_id>.nii.gz`` (uint8 labels, global ids) and, with ``save_probabilities``,
    ``<case_id>_probabilities.nii.gz`` (uint8 ``[X, Y, Z, N+1]``, scl_slope 1/255; for a
    task-prompted method ``[X, Y, Z, N]``, the task probabilities σ_c). With
    ``save_task_masks`` (task-prompted methods only, else ConfigError) also
    ``<case_id>_tasks.nii.gz``: uint8 ``[X, Y, Z, N]``, channel c−1 = class c's own mask
    σ_c > ½ (largest component per task with ``largest_component``).

    A case that cannot be read or predicted is reported (``status="failed"``, ``error`` names
    the file) and the others still run. A case whose outputs exist is skipped unless
    ``overwrite`` (``status="skipped"``); one whose label map exists but whose reports do not
    all exist gets the missing ones made from it (``"completed"``; with a missing ``--qc``
    entry it is predicted again). Raises OutputError before any work if the output folder is an input's, or
    holds NIfTI files (or other files named like predict's outputs) that its ``index.json``
    does not list: only files tctseg wrote there are skipped or written over.

    ``reports``: statistics, preview, QC and DICOM SEG outputs per case
    (:mod:`tctseg.inference.reports`); the auxiliary heads run only for its ``qc``.

    ``backend``: what runs the network over the windows (:mod:`tctseg.inference.backends`):
    ``torch`` (eager), or ``onnxruntime`` / ``openvino`` (CPU, optional extra ``fast-cpu``; the
    network exported once per checkpoint); recorded per case in ``index.json``.
    """
    from tqdm import tqdm

    check_backend(backend, device)
    members = load_members(model if isinstance(model, list) else [model], device)
    if len(members) > 1:  # before the output folder is touched
        unset = [k for k, v in zip(RESULT_INFERENCE_SETTINGS, (overlap, tta_flip, largest_component)) if v is None]
        check_members_agree(
            [m.label for m in members],
            [{**member_profile(m, unset), "modality": modality or training_modality(m.config)} for m in members],
        )
    method, config = members[0].method, members[0].config
    inputs = list(inputs)
    cases = as_inputs(inputs)
    output_dir = Path(output_dir)
    input_folders = [Path(i) for i in inputs if isinstance(i, (str, Path)) and Path(i).is_dir()]
    check_output_dir(output_dir, cases, input_folders)
    ensure_writable(output_dir, "the output folder")  # a full disk shows here, before any case runs
    hold_folder_lock(output_dir, "predictions")  # one predict per output folder, until this returns
    # only what this folder's index.json lists may be skipped as finished or written over
    check_own_outputs(output_dir)
    settings = config.inference
    task_prompted = members[0].task_prompted  # see Method.task_prompted
    if save_task_masks and not task_prompted:
        raise ConfigError(
            f"--task-masks: method {config.method.name!r} predicts one softmax over the classes; per-task "
            "masks exist only for task-prompted methods (dodnet, clip, hermes)"
        )
    modality = modality or training_modality(config)
    if modality not in MODALITIES:
        raise ConfigError(f"modality: {modality!r} is not {' or '.join(MODALITIES)}")
    lcc = settings.largest_component if largest_component is None else largest_component
    case_reports = None
    if reports is not None and reports.asked:
        case_reports = CaseReports(
            reports, output_dir, config.classes, modality, method, config.method.name, write_atomically,
            largest_component=lcc, task_probabilities=task_prompted, members=len(members),
        )
        case_reports.check_cases(cases)
    run = _Run(
        members, config, output_dir, modality,
        overlap=settings.overlap if overlap is None else overlap,
        sw_batch_size=settings.sw_batch_size if sw_batch_size is None else sw_batch_size,
        tta_flip=settings.tta_flip if tta_flip is None else tta_flip,
        largest_component=lcc, task_prompted=task_prompted,
        save_probabilities=save_probabilities, save_task_masks=save_task_masks,
        device=device, progress=progress, protect=[Path(c.image) for c in cases], reports=case_reports,
        backend=backend,
    )
    seen: dict[str, Path] = {}
    results: list[PredictionResult] = []
    bar = tqdm(cases, desc="predict", unit="case", disable=not progress)
    for case in bar:
        bar.set_postfix_str(case.case_id)
        start = time.perf_counter()
        result = PredictionResult(case.case_id, Path(case.image), "failed", label=case.label, dataset=case.dataset,
                                  modality=modality)
        try:
            if case.case_id in seen:
                raise DataError(f"{case.image}: case id {case.case_id!r} is also the id of {seen[case.case_id]}")
            seen[case.case_id] = Path(case.image)
            prediction, probabilities, task_masks = _output_paths(run, case.case_id)
            if not overwrite and _finished(run, case.case_id):
                result.status = "skipped"
            elif not overwrite and _complete_reports(run, case):
                result.status = "completed"  # its label map was there; only the missing reports were made
            else:
                # listed in index.json before its first file is written, so a run killed in
                # between leaves no output that this folder's index does not claim
                result.models = [m.record() for m in run.members]
                result.backend = run.backend
                write_index(run.output_dir, [*results, dataclasses.replace(
                    result, status="written", prediction=prediction, probabilities=probabilities, task_masks=task_masks)])
                _predict_case(run, case)
                result.status = "written"
            if run.reports is not None and result.status != "skipped":
                run.reports.finish()  # statistics and qc of every case so far: a killed run keeps them
            result.prediction, result.probabilities, result.task_masks = prediction, probabilities, task_masks
        except OutputError:
            _finish(run, results)  # what is done stays findable
            raise  # a refused or unwritable output stops the run: every case would fail the same way
        except (TctsegError, OSError) as e:
            result.error = str(e)
            bar.write(f"predict: {case.case_id} failed: {e}")
        result.seconds = time.perf_counter() - start
        results.append(result)
    _finish(run, results)
    return results


def _output_paths(run: _Run, case_id: str) -> tuple[Path, Path | None, Path | None]:
    """``(labels, probabilities or None, task masks or None)``: the files one case writes."""
    folder = PredictionsLayout(run.output_dir)
    return (
        folder.label_map(case_id),
        folder.probabilities(case_id) if run.save_probabilities else None,
        folder.task_masks(case_id) if run.save_task_masks else None,
    )


def _finished(run: _Run, case_id: str) -> bool:
    """Every output the run asks of this case exists (a rerun skips it)."""
    return all(p is None or p.is_file() for p in _output_paths(run, case_id)) and (
        run.reports is None or run.reports.finished(case_id)
    )


def _complete_reports(run: _Run, case: PredictionInput) -> bool:
    """A case whose label map (and the other NIfTI outputs asked for) this folder already holds
    but whose reports are partly missing (a run killed before it wrote them, or a rerun that
    asks for more): make the missing reports from the scan and the label map written, without
    predicting again. False (predict the case) when a missing report needs the probabilities
    (``--qc``) or the label map is not there."""
    from tctseg.data.io import load_volume

    if run.reports is None or not all(p is None or p.is_file() for p in _output_paths(run, case.case_id)):
        return False
    if not run.reports.can_complete(case.case_id):
        return False
    volume = load_volume(case.image)
    labels = load_volume(_output_paths(run, case.case_id)[0], integer=True)
    run.reports.complete(case.case_id, Path(case.image), volume, labels.array)
    return True


def _predict_case(run: _Run, case: PredictionInput) -> None:
    """Read one scan, predict it, and write its outputs (and its reports) in the scan's own grid."""
    from tctseg.data.io import load_volume

    config, reports = run.config, run.reports
    run_aux = reports is not None and reports.wants_aux
    volume = load_volume(case.image)
    image, geometry = prepare_image(volume, run.modality, config)
    affine = volume.affine
    if reports is None:  # only the reports read the scan's intensities again: free them (a CT: 0.6 GB)
        del volume
    probs, member_labels = _ensemble_probabilities(run, image, geometry, run_aux, case.tasks)
    del image
    aux_probs = None
    if run_aux:  # [2N+1, ...]: the main head's N+1 channels, then the N ATHs' gʲ
        probs, aux_probs = probs[: config.num_classes + 1], probs[config.num_classes + 1 :]
    labels, scaled, masks = labels_in_original_space(
        probs, geometry,
        want_probabilities=run.save_probabilities or (reports is not None and reports.wants_probabilities),
        task_probabilities=run.task_prompted, want_task_masks=run.save_task_masks,
    )
    del probs
    if run.largest_component:
        labels = keep_largest_component(labels, _class_ids(run))
        if masks is not None:
            for c in range(masks.shape[-1]):
                masks[..., c] = keep_largest_component(masks[..., c], [1])
    prediction, probabilities, task_masks = _output_paths(run, case.case_id)
    # the input's own affine: the label map lies voxel for voxel on the scan
    save_nifti(labels, affine, prediction, protect=run.protect)
    if scaled is not None and probabilities is not None:
        save_nifti(scaled, affine, probabilities, protect=run.protect, scale=1.0 / 255.0)
    if masks is not None and task_masks is not None:
        save_nifti(masks, affine, task_masks, protect=run.protect)
    if reports is not None:
        reports.add(case.case_id, Path(case.image), volume, labels, scaled, aux_probs, geometry, member_labels)


def _class_ids(run: _Run) -> list[int]:
    return list(range(1, run.config.num_classes + 1))


def _ensemble_probabilities(
    run: _Run, image: np.ndarray, geometry: PreparedGeometry, aux_heads: bool, tasks: tuple[int, ...] | None = None
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """The members' mean probabilities of one prepared image ``[X', Y', Z']``: float32
    ``[C, X', Y', Z']`` as :func:`sliding_window_probabilities` gives them (C = N+1, N task
    sigmoids, or 2N+1 with ``aux_heads``), one member's exactly as it gives them. ``tasks``:
    the classes the image's dataset annotates, asked of task-prompted members only.

    One bar counts every member's windows (a whole-body CT has ~100 per member). With
    ``reports.wants_member_labels`` (``--qc``, two or more members) also each member's own
    label map ``[X, Y, Z]`` uint8 in the scan's grid, made as a one-member prediction makes
    its own (argmax in original space, then ``--lcc``); else None.
    """
    from tqdm import tqdm

    want_labels = run.reports is not None and run.reports.wants_member_labels
    member_labels: list[np.ndarray] | None = [] if want_labels else None
    windows = sum(window_count(image.shape, m.config.train.patch_size, run.overlap) for m in run.members)
    total = None
    with tqdm(total=windows, desc="windows", unit="window", leave=False, disable=not run.progress) as bar:
        for index, member in enumerate(run.members):
            member_tasks = tasks if run.task_prompted else None
            entry = "predict_with_aux" if aux_heads else "task_logits" if run.task_prompted else "predict_logits"
            # a per-dataset task call (Hermes' task tokens) is the method's own, whatever the backend
            network = run.network(index, entry) if member_tasks is None else None
            probs = sliding_window_probabilities(
                member.method,
                image,
                member.config.train.patch_size,
                overlap=run.overlap,
                sw_batch_size=run.sw_batch_size,
                tta_flip=run.tta_flip,
                device=run.device,
                channels_last=member.config.network.channels_last,
                task_probabilities=run.task_prompted,
                aux_heads=aux_heads,
                on_windows=bar.update,
                tasks=member_tasks,
                network=network,
            ).numpy()
            if member_labels is not None:
                labels = labels_in_original_space(
                    probs[: run.config.num_classes + 1], geometry, task_probabilities=run.task_prompted
                )[0]
                member_labels.append(keep_largest_component(labels, _class_ids(run)) if run.largest_component else labels)
            if total is None:
                total = probs  # one member: its probabilities exactly
            else:
                total += probs
    assert total is not None
    if len(run.members) > 1:
        total /= len(run.members)
    return total, member_labels


def _finish(run: _Run, results: list[PredictionResult]) -> None:
    """The index of every finished case, and the reports that gather every case."""
    write_index(run.output_dir, results)
    if run.reports is not None:
        run.reports.finish()
