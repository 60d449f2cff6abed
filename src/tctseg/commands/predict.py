"""`tctseg predict MODEL INPUT OUTPUT`: label maps in each scan's original geometry."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "predict"
HELP = "segment scans (NIfTI files or DICOM series) with a trained checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="checkpoint file (e.g. runs/x/checkpoint_best.pt)")
    parser.add_argument(
        "input",
        type=Path,
        help="a NIfTI file, a folder of NIfTI files, a DICOM series folder, or a folder of DICOM series folders",
    )
    parser.add_argument("output", type=Path, help="output folder for <case>.nii.gz label maps and index.json")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap in [0, 1) (default: config inference.overlap)")
    parser.add_argument("--sw-batch", type=int, help="windows per network call (default: config inference.sw_batch_size)")
    parser.add_argument("--tta", action="store_true", default=None, help="flip test-time augmentation (8× slower)")
    parser.add_argument("--lcc", action="store_true", default=None, help="keep the largest connected component per class")
    parser.add_argument("--probabilities", action="store_true", help="also write <case>_probabilities.nii.gz")
    parser.add_argument(
        "--task-masks",
        action="store_true",
        help="task-prompted methods (dodnet, clip, hermes): also write <case>_tasks.nii.gz, each class's own "
        "sigmoid > 0.5 mask ([X, Y, Z, N], may overlap; the label map is their argmax)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--modality", choices=("CT", "MR"), help="the scans' modality (default: the training data's)")
    parser.add_argument("--overwrite", action="store_true", help="predict again cases whose output exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_device(requested: str | None) -> str:
    """``cuda`` when asked or (unless ``cpu`` is asked) when a CUDA device is present; else ``cpu``."""
    import torch

    from tctseg.errors import ConfigError

    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: str) -> str:
    """``cpu (N threads)`` or ``cuda (<GPU name>)``, for the one line the CLI prints."""
    import torch

    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def run(args: argparse.Namespace) -> int:
    from tctseg.errors import ConfigError
    from tctseg.inference.predict import predict_cases

    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap: must be in [0, 1), got {args.overlap}")
    if args.sw_batch is not None and args.sw_batch < 1:
        raise ConfigError(f"--sw-batch: must be >= 1, got {args.sw_batch}")
    device = resolve_device(args.device)
    print(f"predict: on {describe_device(device)}", flush=True)
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
    )
    counts = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed")}
    print(
        f"predict: {counts['written']} written, {counts['skipped']} skipped (output existed), "
        f"{counts['failed']} failed → {args.output}"
    )
    for r in results:
        if not r.ok:
            print(f"  failed: {r.image}: {r.error}")
    return 1 if counts["failed"] else 0
