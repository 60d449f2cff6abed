"""`tctseg predict MODEL [MODEL ...] INPUT OUTPUT`: label maps in each scan's original geometry
(several checkpoints: an ensemble, their probabilities averaged)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tctseg.files.layout import (
    CHECKPOINT_BEST,
    DICOM_SEG_SUFFIX,
    LABEL_MAP_SUFFIX,
    PREDICTIONS_INDEX,
    PREVIEW_SUFFIX,
    PROBABILITIES_SUFFIX,
    QC_JSON,
    STATISTICS_JSON,
    TASK_MASKS_SUFFIX,
    PredictionsLayout,
)
from tctseg.predict_options import DEFAULT_QC_THRESHOLD, ENSEMBLE_QC_THRESHOLD, OUTPUT_FORMATS
from tctseg.settings import INFERENCE_BACKENDS, MODALITIES

NAME = "predict"
HELP = "segment scans (NIfTI files or DICOM series) with a trained checkpoint, or an ensemble of several"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", type=Path, nargs="+",
        help=f"checkpoint file (e.g. runs/x/{CHECKPOINT_BEST}); several (e.g. runs/seed*/{CHECKPOINT_BEST}) predict "
        "as an ensemble: their probabilities (softmax, or the task sigmoids of dodnet/clip/hermes) are averaged "
        "before the label map; they must agree on classes, preprocessing and method",
    )
    parser.add_argument(
        "input",
        type=Path,
        help="a NIfTI file, a folder of NIfTI files, a DICOM series folder, or a folder of DICOM series folders",
    )
    parser.add_argument("output", type=Path, help=f"output folder for <case>{LABEL_MAP_SUFFIX} label maps and {PREDICTIONS_INDEX}")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap in [0, 1) (default: config inference.overlap)")
    parser.add_argument(
        "--backend", choices=INFERENCE_BACKENDS, default="torch",
        help="what runs the network: torch (eager, default), or on the CPU onnxruntime / openvino (pip install "
        "'.[fast-cpu]'; the network is exported once per checkpoint, cached in $TCTSEG_EXPORT_CACHE or "
        "~/.cache/tctseg/exported)",
    )
    parser.add_argument("--sw-batch", type=int, help="windows per network call (default: config inference.sw_batch_size)")
    parser.add_argument("--tta", action="store_true", default=None, help="flip test-time augmentation (8× slower)")
    parser.add_argument("--lcc", action="store_true", default=None, help="keep the largest connected component per class")
    parser.add_argument("--probabilities", action="store_true", help=f"also write <case>{PROBABILITIES_SUFFIX}")
    parser.add_argument(
        "--task-masks",
        action="store_true",
        help=f"task-prompted methods (dodnet, clip, hermes): also write <case>{TASK_MASKS_SUFFIX}, each class's own "
        "sigmoid > 0.5 mask ([X, Y, Z, N], may overlap; the label map is their argmax)",
    )
    parser.add_argument(
        "--statistics", action="store_true",
        help=f"also write {STATISTICS_JSON} and .csv: per case and organ voxels, volume (ml), intensity mean/sd, "
        "centroid (RAS mm) and bounding box, in the scan's original space",
    )
    parser.add_argument(
        "--preview", action="store_true",
        help=f"also write <case>{PREVIEW_SUFFIX}: axial, coronal and sagittal planes through the organs with a legend",
    )
    parser.add_argument(
        "--qc", action="store_true",
        help=f"also write {QC_JSON}: per organ the agreement (DSC) of the main head with its auxiliary head (TCT; "
        "runs the auxiliary heads), the mean confidence inside the organ and, with several checkpoints, the "
        f"ensemble agreement (members' mean pairwise DSC, flagged below {ENSEMBLE_QC_THRESHOLD}, fixed); prints a "
        "summary with flags",
    )
    parser.add_argument(
        "--qc-threshold", type=float, default=DEFAULT_QC_THRESHOLD,
        help=f"--qc flags an organ whose two-head agreement is below this DSC (default {DEFAULT_QC_THRESHOLD})",
    )
    parser.add_argument(
        "--output-format", choices=OUTPUT_FORMATS, default="nifti",
        help=f"dicom-seg (DICOM series inputs only): also write <case>{DICOM_SEG_SUFFIX}, a DICOM Segmentation referencing "
        "the source series (the NIfTI label map is written as always)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--modality", choices=MODALITIES, help="the scans' modality (default: the training data's)")
    parser.add_argument("--overwrite", action="store_true", help="predict again cases whose output exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tctseg.devices import describe_device, resolve_device
    from tctseg.errors import ConfigError
    from tctseg.inference.backends import check_backend
    from tctseg.inference.predict import predict_cases
    from tctseg.predict_options import ReportOptions

    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap: must be in [0, 1), got {args.overlap}")
    if args.sw_batch is not None and args.sw_batch < 1:
        raise ConfigError(f"--sw-batch: must be >= 1, got {args.sw_batch}")
    reports = ReportOptions(
        statistics=args.statistics, preview=args.preview, qc=args.qc,
        qc_threshold=args.qc_threshold, output_format=args.output_format,
    )
    device = resolve_device(args.device)
    check_backend(args.backend, device)
    backend = "" if args.backend == "torch" else f", network run by {args.backend}"
    print(f"predict: on {describe_device(device)}{backend}", flush=True)
    warn_about_unread_files(args.input, args.output)
    results = predict_cases(
        args.model,
        [args.input],
        args.output,
        save_probabilities=args.probabilities,
        save_task_masks=args.task_masks,
        largest_component=args.lcc,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch,
        tta_flip=args.tta,
        modality=args.modality,
        overwrite=args.overwrite,
        device=device,
        progress=not args.no_progress,
        reports=reports,
        backend=args.backend,
    )
    counts = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "completed", "failed")}
    completed = f", {counts['completed']} completed (reports added to a finished label map)" if counts["completed"] else ""
    print(
        f"predict: {counts['written']} written, {counts['skipped']} skipped (output existed){completed}, "
        f"{counts['failed']} failed → {args.output}"
    )
    for r in results:  # each failure's reason was printed once as it happened; here its case id only
        if not r.ok:
            print(f"  failed: {r.case_id}")
    if args.qc:
        print_qc_summary(Path(args.output), [r.case_id for r in results if r.ok], args.qc_threshold)
    return 1 if counts["failed"] else 0


def print_qc_summary(output: Path, case_ids: list[str], threshold: float) -> None:
    """The number of flagged organs (two-head agreement below ``threshold``, or with an ensemble
    its agreement below qc.json's ``ensemble_threshold``), then one line per case from ``qc.json``."""
    from tctseg.inference.quality import qc_summary

    qc_json = PredictionsLayout(output).qc_json
    document = json.loads(qc_json.read_text(encoding="utf-8"))
    cases = document["cases"]
    flagged = [f"{c}/{organ}" for c in case_ids for organ, q in cases.get(c, {}).items() if q["flagged"]]
    rules = f"two-head agreement < {threshold}"
    if document.get("ensemble_threshold") is not None:
        rules += f" or ensemble agreement < {document['ensemble_threshold']} over {document['members']} members"
    print(f"qc: {len(flagged)} organ(s) flagged ({rules}) → {qc_json}")
    for case_id in case_ids:
        if case_id in cases:
            print(qc_summary(case_id, cases[case_id]))


def warn_about_unread_files(input_path: Path, output: Path) -> None:
    """One warning line for each scan in INPUT that is not predicted (``.mha``, ``.nrrd``, ...:
    tctseg reads NIfTI and DICOM; issue 31, item 15), and one for each group of other files."""
    import warnings

    from tctseg.errors import TctsegWarning
    from tctseg.inference.unread import unread_entries

    for what, why in unread_entries(input_path, exclude=output):
        warnings.warn(f"{what}: skipped: {why}", TctsegWarning, stacklevel=2)
