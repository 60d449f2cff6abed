"""What ``tctseg predict`` writes about each case beside its label map, when asked.

- ``--statistics``: ``statistics.json`` / ``.csv`` (:mod:`~tctseg.inference.statistics`)
- ``--preview``: ``<case>_preview.png`` (:mod:`~tctseg.inference.preview`)
- ``--qc``: ``qc.json`` (:mod:`~tctseg.inference.quality`); the auxiliary heads run only then,
  and with an ensemble each member's own label map is made for the ensemble agreement
- ``--output-format dicom-seg``: ``<case>_seg.dcm`` for DICOM series inputs
  (:mod:`~tctseg.inference.dicom_seg`), beside the NIfTI label map that ``evaluate`` reads

:class:`CaseReports` is what :func:`~tctseg.inference.predict.predict_cases` calls once per
predicted case; the files that gather all cases (``statistics.*``, ``qc.json``) keep the
entries of earlier runs (a rerun that skips finished cases still lists them) and are written
atomically after each case (a killed run keeps its finished cases' entries). A case counts as
finished only when every asked-for output exists; one whose label map exists but whose
statistics, preview or DICOM SEG do not gets only those (:meth:`CaseReports.complete`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tctseg.errors import ConfigError
from tctseg.files.layout import PredictionsLayout
from tctseg.inference.dicom_seg import segmentation_dataset
from tctseg.inference.preview import render_preview
from tctseg.inference.quality import (
    aux_masks_in_original_space,
    ensemble_agreement,
    has_auxiliary_heads,
    organ_quality,
)
from tctseg.inference.statistics import organ_statistics, statistics_csv
from tctseg.predict_options import ENSEMBLE_QC_THRESHOLD, ReportOptions


class CaseReports:
    """Writes the asked-for reports of each case into ``output_dir``.

    ``class_names``: the config's classes (label ids 1..N); ``algorithm``: the method's name
    (the SEG's algorithm); ``write_atomically(path, write)``: the export module's atomic writer;
    ``method``: the (first) model; ``members``: how many models predict (an ensemble's, for QC).
    """

    def __init__(
        self,
        options: ReportOptions,
        output_dir: Path,
        class_names: Sequence[str],
        modality: str,
        method: Any,
        algorithm: str,
        write_atomically: Callable[[Path, Callable[[Path], None]], Path],
        *,
        largest_component: bool = False,
        task_probabilities: bool = False,
        members: int = 1,
    ) -> None:
        self.options = options
        self.folder = PredictionsLayout(output_dir)  # the names of the files written
        self.class_names = list(class_names)
        self.modality = modality
        self.algorithm = algorithm
        self.largest_component = largest_component
        self.task_probabilities = task_probabilities
        self.members = members
        self._write = write_atomically
        # the ATHs run only for --qc, and only where the network has them (TCT)
        self.wants_aux = options.qc and has_auxiliary_heads(method) and not task_probabilities
        self.wants_probabilities = options.qc
        # the ensemble agreement compares the members' own label maps
        self.wants_member_labels = options.qc and members > 1
        self.statistics: dict[str, Any] = self._earlier(self.folder.statistics_json) if options.statistics else {}
        qc_file = self._earlier(self.folder.qc_json) if options.qc else {}
        # earlier cases count only when scored the same way (thresholds, with or without an ensemble)
        same = (qc_file.get("threshold"), qc_file.get("ensemble_threshold")) == (options.qc_threshold, self._ensemble_threshold)
        self.quality: dict[str, Any] = qc_file.get("cases", {}) if same else {}

    @property
    def _ensemble_threshold(self) -> float | None:
        return ENSEMBLE_QC_THRESHOLD if self.wants_member_labels else None

    def check_cases(self, cases: Sequence[Any]) -> None:
        """Refuse (ConfigError) ``dicom-seg`` for any case that is not a DICOM series folder."""
        if self.options.output_format == "dicom-seg":
            for case in cases:
                if not Path(case.image).is_dir():
                    raise ConfigError(
                        f"--output-format dicom-seg: {case.image} is not a DICOM series folder; a DICOM SEG must "
                        "reference the series it segments (use the default nifti for NIfTI inputs)"
                    )

    def paths(self, case_id: str) -> list[Path]:
        """The per-case files asked for."""
        out = []
        if self.options.preview:
            out.append(self.folder.preview(case_id))
        if self.options.output_format == "dicom-seg":
            out.append(self.folder.dicom_seg(case_id))
        return out

    def finished(self, case_id: str) -> bool:
        """True when every asked-for report of ``case_id`` exists (then the case may be skipped)."""
        if self.options.statistics and case_id not in self.statistics:
            return False
        if self.options.qc and case_id not in self.quality:
            return False
        return all(p.is_file() for p in self.paths(case_id))

    def can_complete(self, case_id: str) -> bool:
        """True when every report of ``case_id`` missing now can be made from its label map alone
        (statistics, preview, DICOM SEG; :meth:`complete`), not from the probabilities (``qc``)."""
        return not (self.options.qc and case_id not in self.quality)

    def complete(self, case_id: str, image_path: Path, volume: Any, labels: np.ndarray) -> None:
        """Make the missing label-map reports of a case whose label map was written earlier
        (a killed run, or a rerun asking for more); those already there are left as they are."""
        if self.options.statistics and case_id not in self.statistics:
            self.statistics[case_id] = organ_statistics(labels, volume.array, volume.affine, self.class_names)
        preview = self.folder.preview(case_id)
        if self.options.preview and not preview.is_file():
            png = render_preview(volume.array, labels, volume.affine, self.class_names, self.modality, title=case_id)
            self._write(preview, lambda tmp: tmp.write_bytes(png))
        seg_path = self.folder.dicom_seg(case_id)
        if self.options.output_format == "dicom-seg" and not seg_path.is_file():
            seg = segmentation_dataset(Path(image_path), labels, self.class_names, self.algorithm)
            self._write(seg_path, lambda tmp: seg.save_as(tmp))

    def add(
        self,
        case_id: str,
        image_path: Path,
        volume: Any,
        labels: np.ndarray,
        class_probabilities: np.ndarray | None,
        aux_probabilities: np.ndarray | None,
        geometry: Any,
        member_labels: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Reports of one predicted case. ``volume``: the scan (``array`` ``[X, Y, Z]``, ``affine``);
        ``labels`` ``[X, Y, Z]`` its final label map; ``class_probabilities`` uint8 ``[X, Y, Z, C]``
        (needed for ``qc``); ``aux_probabilities`` prepared-space ``[N, X', Y', Z']`` or None;
        ``member_labels``: each ensemble member's own label map ``[X, Y, Z]`` (needed for ``qc``
        with two or more members, :attr:`wants_member_labels`)."""
        if self.options.statistics:
            self.statistics[case_id] = organ_statistics(labels, volume.array, volume.affine, self.class_names)
        if self.options.qc:
            if class_probabilities is None:
                raise ValueError("qc needs the class probabilities in original space")
            aux_masks = None
            if aux_probabilities is not None:
                aux_masks = aux_masks_in_original_space(aux_probabilities, geometry, self.largest_component)
            ensemble = None
            if self.wants_member_labels:
                if member_labels is None or len(member_labels) != self.members:
                    raise ValueError(f"qc of an ensemble needs its {self.members} members' label maps")
                ensemble = ensemble_agreement(member_labels, len(self.class_names))
            self.quality[case_id] = organ_quality(
                labels, class_probabilities, self.class_names, aux_masks, self.options.qc_threshold,
                task_probabilities=self.task_probabilities, ensemble=ensemble,
            )
        if self.options.preview:
            png = render_preview(volume.array, labels, volume.affine, self.class_names, self.modality, title=case_id)
            self._write(self.folder.preview(case_id), lambda tmp: tmp.write_bytes(png))
        if self.options.output_format == "dicom-seg":
            seg = segmentation_dataset(Path(image_path), labels, self.class_names, self.algorithm)
            self._write(self.folder.dicom_seg(case_id), lambda tmp: seg.save_as(tmp))

    def finish(self) -> None:
        """Write the files that gather every case (statistics, qc) atomically."""
        if self.options.statistics:
            by_case = {case_id: self.statistics[case_id] for case_id in sorted(self.statistics)}  # organs in class order
            self._write_text(self.folder.statistics_json, json.dumps(by_case, indent=2) + "\n")
            self._write_text(self.folder.statistics_csv, statistics_csv(self.statistics))
        if self.options.qc:
            self._write_text(self.folder.qc_json, json.dumps(self._qc_document(), indent=2) + "\n")

    def _qc_document(self) -> dict[str, Any]:
        """``qc.json``: the thresholds, what each signal is, and the cases (a single model's as
        before ensembles existed; an ensemble's adds its threshold, size and agreement)."""
        threshold = {"threshold": self.options.qc_threshold}
        cases = {"cases": {case_id: self.quality[case_id] for case_id in sorted(self.quality)}}
        if not self.wants_member_labels:
            return {
                **threshold,
                "signals": {
                    "agreement": "DSC between the main head's organ mask and its auxiliary head's mask "
                    "(original space; null without auxiliary heads)",
                    "confidence": "mean probability of the predicted class over the organ's predicted voxels",
                },
                "flagged": "agreement < threshold",
                **cases,
            }
        return {
            **threshold,
            "ensemble_threshold": self._ensemble_threshold,
            "members": self.members,
            "signals": {
                "agreement": "DSC between the ensemble's main-head organ mask and the mask of its auxiliary heads' "
                "mean probability (original space; null without auxiliary heads)",
                "confidence": "mean ensemble probability (the members' mean) of the predicted class over the "
                "organ's predicted voxels",
                "ensemble_agreement": "mean over the pairs of members of the DSC between their own label maps' "
                "organ masks (original space)",
            },
            "flagged": "agreement < threshold or ensemble_agreement < ensemble_threshold (flagged_by names which)",
            **cases,
        }

    def _write_text(self, path: Path, text: str) -> None:
        self._write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _earlier(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: rebuilt from this run
        return data if isinstance(data, dict) else {}
