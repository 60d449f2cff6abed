"""Where tctseg puts its files: every run-folder and predictions-folder file and folder name, once.

Like nnU-Net's ``utilities/file_path_utilities.py``: the trainer, PFL's pipeline, predict,
evaluate, run, compare and the report all ask this module for a path instead of spelling a
name, so a renamed file is renamed here and nowhere else. It only joins paths (no file is
read or written here; :mod:`tctseg.files.run_records` reads what a run folder records) and imports
nothing of tctseg.

One method's run folder (:class:`RunLayout`, ``tctseg train`` writes the training part)::

    <run>/
      config.yaml  checkpoint_last.pt  checkpoint_best.pt  log.csv  progress.png  tensorboard/
      pipeline.json                       a staged (PFL) run's record of its finished stages
      stage1/<class>/  stage2/  stage3/   PFL's stages; stage1/<class> and stage3 are run folders
      predictions/<dataset>/                a PredictionsLayout per test dataset
      predictions/index.json               one index over every dataset
      metrics/metrics.{json,csv,md}

A folder ``tctseg predict`` writes (:class:`PredictionsLayout`; a run's ``predictions/<dataset>/``
is one)::

    <predictions>/
      index.json                          the cases, and which files of the folder predict wrote
      <case_id>.nii.gz                    the label map
      <case_id>_probabilities.nii.gz  <case_id>_tasks.nii.gz          --probabilities, --task-masks
      <case_id>_preview.png  <case_id>_seg.dcm                        --preview, --output-format dicom-seg
      statistics.json  statistics.csv  qc.json                        --statistics, --qc

A ``tctseg run`` folder (:class:`ExperimentLayout`) holds one run folder per method, and
a ``tctseg compare`` folder (:class:`CompareLayout`) one experiment folder per run::

    <experiment>/
      ground_truth/<dataset>/<case_id>.nii.gz   test labels in global ids
      <method>/                                 a RunLayout
      results.json  report.html  report.md  report_files/
      result.json                               compare: this run's summary and key
    <compare>/
      <table>/                                  an ExperimentLayout (transfer: its test labels)
      <table>/<variant>/seed<k>/                an ExperimentLayout, one run
      tables/<name>.{md,csv}  results.json  report.html  report.md  report_files/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# one method's run folder
CONFIG_YAML = "config.yaml"
CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
LOG_CSV = "log.csv"
PROGRESS_PNG = "progress.png"
TENSORBOARD_DIR = "tensorboard"
PIPELINE_JSON = "pipeline.json"
STAGE1_DIR = "stage1"
STAGE2_DIR = "stage2"
STAGE3_DIR = "stage3"
PREDICTIONS_DIR = "predictions"
METRICS_DIR = "metrics"
METRICS_STEM = "metrics"  # metrics.json, metrics.csv, metrics.md

# a folder `tctseg predict` writes (a run's predictions/<dataset>/ among them)
PREDICTIONS_INDEX = "index.json"
LABEL_MAP_SUFFIX = ".nii.gz"  # <case_id>.nii.gz; a ground truth folder's files too
PROBABILITIES_SUFFIX = "_probabilities.nii.gz"
TASK_MASKS_SUFFIX = "_tasks.nii.gz"
PREVIEW_SUFFIX = "_preview.png"
DICOM_SEG_SUFFIX = "_seg.dcm"
STATISTICS_JSON = "statistics.json"
STATISTICS_CSV = "statistics.csv"
QC_JSON = "qc.json"

# an experiment (run / compare) folder
GROUND_TRUTH_DIR = "ground_truth"
RESULTS_JSON = "results.json"
RESULT_JSON = "result.json"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_FILES_DIR = "report_files"
TABLES_DIR = "tables"
ENSEMBLE_DIR = "ensemble"  # a compare variant's seeds predicting together


@dataclass(frozen=True)
class PredictionsLayout:
    """A folder ``tctseg predict`` writes (module docstring): the index, each case's files, and
    the files that gather every case."""

    root: Path

    # the names of the optional per-case reports (``<case_id><suffix>``) and of the files that
    # gather every case: predict refuses a folder holding such files that are not its own
    REPORT_SUFFIXES = (PREVIEW_SUFFIX, DICOM_SEG_SUFFIX)
    GATHERING_FILES = (STATISTICS_JSON, STATISTICS_CSV, QC_JSON)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def index(self) -> Path:
        """``index.json``: the case list, and the record of which files here predict wrote."""
        return self.root / PREDICTIONS_INDEX

    def label_map(self, case_id: str) -> Path:
        return self.root / f"{case_id}{LABEL_MAP_SUFFIX}"

    def probabilities(self, case_id: str) -> Path:
        return self.root / f"{case_id}{PROBABILITIES_SUFFIX}"

    def task_masks(self, case_id: str) -> Path:
        """A task-prompted method's per-class masks (σ_c > ½)."""
        return self.root / f"{case_id}{TASK_MASKS_SUFFIX}"

    def preview(self, case_id: str) -> Path:
        return self.root / f"{case_id}{PREVIEW_SUFFIX}"

    def dicom_seg(self, case_id: str) -> Path:
        return self.root / f"{case_id}{DICOM_SEG_SUFFIX}"

    @property
    def statistics_json(self) -> Path:
        return self.root / STATISTICS_JSON

    @property
    def statistics_csv(self) -> Path:
        return self.root / STATISTICS_CSV

    @property
    def qc_json(self) -> Path:
        return self.root / QC_JSON


@dataclass(frozen=True)
class MetricsLayout:
    """A folder of evaluation tables: ``metrics.json`` (what the report reads), ``.csv``, ``.md``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def json(self) -> Path:
        return self.root / f"{METRICS_STEM}.json"

    @property
    def csv(self) -> Path:
        return self.root / f"{METRICS_STEM}.csv"

    @property
    def md(self) -> Path:
        return self.root / f"{METRICS_STEM}.md"


@dataclass(frozen=True)
class RunLayout:
    """One method's run folder (module docstring): training outputs, predictions, metrics."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ---- training (Trainer, rank 0)
    @property
    def config_yaml(self) -> Path:
        return self.root / CONFIG_YAML

    @property
    def checkpoint_last(self) -> Path:
        return self.root / CHECKPOINT_LAST

    @property
    def checkpoint_best(self) -> Path:
        return self.root / CHECKPOINT_BEST

    @property
    def log_csv(self) -> Path:
        return self.root / LOG_CSV

    @property
    def progress_png(self) -> Path:
        return self.root / PROGRESS_PNG

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def markers(self) -> tuple[Path, ...]:
        """Files whose presence means a training was started here (resume or refuse). A run's
        ``config.yaml`` is one: a folder holding one belongs to a run, whose ``--overwrite``
        would replace it."""
        return (self.checkpoint_last, self.log_csv, self.pipeline_json, self.config_yaml)

    @property
    def outputs(self) -> tuple[Path, ...]:
        """What ``--overwrite`` removes: a previous training's outputs, nothing else."""
        return (self.checkpoint_last, self.checkpoint_best, self.log_csv, self.progress_png, self.config_yaml,
                self.tensorboard)

    @property
    def written_by_training(self) -> tuple[Path, ...]:
        """Every path a training here writes or its ``--overwrite`` removes: the files of
        :attr:`outputs` and ``pipeline.json``, and the folders TensorBoard and PFL's stages
        write into (a stage's own config.yaml lies in one). The config given to ``train`` must
        be none of these, nor lie inside one of the folders."""
        return (*self.outputs, self.pipeline_json, *self.stage_folders)

    # ---- PFL's stages (tctseg.training.pfl_pipeline)
    @property
    def pipeline_json(self) -> Path:
        return self.root / PIPELINE_JSON

    @property
    def stage1(self) -> Path:
        return self.root / STAGE1_DIR

    def stage1_network(self, class_name: str) -> RunLayout:
        """The run folder of one single-organ network of stage 1."""
        return RunLayout(self.stage1 / class_name)

    @property
    def stage2(self) -> Path:
        return self.root / STAGE2_DIR

    @property
    def stage3(self) -> RunLayout:
        """The final network's run folder."""
        return RunLayout(self.root / STAGE3_DIR)

    @property
    def stage_folders(self) -> tuple[Path, ...]:
        return (self.stage1, self.stage2, self.stage3.root)

    # ---- prediction and evaluation
    @property
    def predictions(self) -> Path:
        return self.root / PREDICTIONS_DIR

    def predictions_for(self, dataset: str) -> Path:
        """The predictions of one test dataset: ``predictions/<dataset>/``, a :class:`PredictionsLayout`."""
        return self.predictions / dataset

    @property
    def predictions_index(self) -> Path:
        """``predictions/index.json``: one index over every dataset (the report's overlays)."""
        return PredictionsLayout(self.predictions).index

    @property
    def metrics(self) -> MetricsLayout:
        return MetricsLayout(self.root / METRICS_DIR)

    @property
    def metrics_json(self) -> Path:
        return self.metrics.json

    @property
    def signs(self) -> tuple[Path, ...]:
        """Paths any of which make a folder look like a method's run folder (the report's test)."""
        return (self.config_yaml, self.log_csv, self.metrics_json, self.predictions, self.checkpoint_last)

    @classmethod
    def of_predictions(cls, folder: str | Path) -> RunLayout | None:
        """The run folder whose ``predictions`` (or ``predictions/<dataset>``) ``folder`` is; None otherwise."""
        folder = Path(folder)
        if folder.name == PREDICTIONS_DIR:
            return cls(folder.parent)
        if folder.parent.name == PREDICTIONS_DIR:
            return cls(folder.parent.parent)
        return None


@dataclass(frozen=True)
class ExperimentLayout:
    """A ``tctseg run`` folder (module docstring): ground truths, one run folder per method, the report."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def method(self, name: str) -> RunLayout:
        return RunLayout(self.root / name)

    def ground_truth(self, dataset: str) -> Path:
        """The test labels of one dataset, in global ids: ``ground_truth/<dataset>/``."""
        return self.root / GROUND_TRUTH_DIR / dataset

    def ground_truth_of(self, dataset: str, case_id: str) -> Path:
        """One test case's labels: ``ground_truth/<dataset>/<case_id>.nii.gz``."""
        return self.ground_truth(dataset) / f"{case_id}{LABEL_MAP_SUFFIX}"

    @property
    def results_json(self) -> Path:
        return self.root / RESULTS_JSON

    @property
    def result_json(self) -> Path:
        """A compare run's summary and key (:mod:`tctseg.compare.runs`)."""
        return self.root / RESULT_JSON

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def report_files(self) -> Path:
        """The report's PNGs (``report.md`` links them)."""
        return self.root / REPORT_FILES_DIR

    @property
    def tables(self) -> Path:
        """``tables/<name>.{md,csv}``, written by ``tctseg compare``."""
        return self.root / TABLES_DIR


@dataclass(frozen=True)
class CompareLayout(ExperimentLayout):
    """A ``tctseg compare`` folder: an experiment folder per run, and the tables."""

    def table(self, name: str) -> ExperimentLayout:
        """A table's folder: its runs, and test labels of its own (the transfer table's)."""
        return ExperimentLayout(self.root / name)

    def run(self, table: str, variant: str, seed: int) -> ExperimentLayout:
        """One run of a table: ``<table>/<variant>/seed<k>/``."""
        return ExperimentLayout(self.table(table).root / variant / f"seed{seed}")

    def ensemble(self, table: str, variant: str) -> ExperimentLayout:
        """The ensemble of a variant's seeds (:mod:`tctseg.compare.ensembles`): ``<table>/<variant>/ensemble/``."""
        return ExperimentLayout(self.table(table).root / variant / ENSEMBLE_DIR)
