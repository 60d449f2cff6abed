"""What ``tctseg predict`` is asked to write besides the label maps (typed, importable without torch).

The command line builds :class:`ReportOptions` from its flags; the inference library
(:mod:`tctseg.inference.reports`) writes what it says. Kept outside ``tctseg.inference`` so that
the CLI can show these defaults without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from tctseg.errors import ConfigError

# ``--output-format``: nifti (label maps only) or dicom-seg (also a DICOM SEG per DICOM series)
OUTPUT_FORMATS = ("nifti", "dicom-seg")
# chosen before the CHAOS validation (README, "How far to trust each organ"): an auxiliary
# head and the main head that overlap by less than DSC 0.8 disagree on a fifth of the organ
DEFAULT_QC_THRESHOLD = 0.8
# ``--qc`` with an ensemble flags an organ whose members' mean pairwise DSC (the ensemble
# agreement) is below this. Fixed in code, chosen before any validation of the signal (issue
# 27): members that overlap by less than DSC 0.8 disagree on a fifth of the organ, the same
# line as the two-head flag; it is not tuned on the CHAOS subjects the signal is judged on.
ENSEMBLE_QC_THRESHOLD = 0.8


@dataclass
class ReportOptions:
    """Which per-case reports to write: the ``predict`` flags ``--statistics``, ``--preview``,
    ``--qc`` (with ``--qc-threshold``) and ``--output-format``."""

    statistics: bool = False
    preview: bool = False
    qc: bool = False
    qc_threshold: float = DEFAULT_QC_THRESHOLD
    output_format: str = "nifti"

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"--output-format: {self.output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        if not 0.0 <= self.qc_threshold <= 1.0:
            raise ConfigError(f"--qc-threshold: must be in [0, 1], got {self.qc_threshold}")

    @property
    def asked(self) -> bool:
        """True when anything beyond the label maps is asked for."""
        return self.statistics or self.preview or self.qc or self.output_format != "nifti"
