"""`tctseg evaluate PRED_DIR GT_DIR`: DSC and HD95 per class per case, as CSV, JSON and markdown."""

from __future__ import annotations

import argparse
from pathlib import Path

from tctseg.errors import ConfigError, DataError, OutputError
from tctseg.files.layout import MetricsLayout, RunLayout
from tctseg.files.outputs import ensure_writable

NAME = "evaluate"
HELP = "score predicted label maps against ground truths (DSC, HD95 in mm)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred_dir", type=Path, help="folder of predicted NIfTI label maps (global ids)")
    parser.add_argument("gt_dir", type=Path, help="folder of ground-truth NIfTI label maps (the dataset's ids)")
    parser.add_argument("--classes", help="global class names in id order, e.g. liver,spleen,left_kidney")
    parser.add_argument(
        "--label-map",
        help="ground-truth id → class, e.g. '1:spleen,2:right_kidney' (default with --config: the dataset's "
        "own ids as its converter maps them, e.g. from its dataset.json; without: the ground truth holds global ids)",
    )
    parser.add_argument("--annotated", help="classes the ground truth annotates (default: every class the map reaches)")
    parser.add_argument("--config", type=Path, help="take classes, label map and annotated classes from this config")
    parser.add_argument("--dataset", help="dataset name in --config (also the dataset name in the tables)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder for metrics.{csv,json,md} (default: RUN/metrics when PRED_DIR is "
        "RUN/predictions or RUN/predictions/<dataset>, else PRED_DIR/metrics)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tctseg.evaluation.evaluate import evaluate_folders, result_markdown, write_csv, write_json, write_markdown

    classes, label_map, annotated = _classes_and_map(args)
    out_dir = args.out or default_output_dir(args.pred_dir)
    _check_output_dir(out_dir, args.gt_dir)
    ensure_writable(out_dir, "the metrics folder", name=f"--out {out_dir}")  # before the (long) evaluation, not after it
    result = evaluate_folders(
        args.pred_dir,
        args.gt_dir,
        classes,
        label_map=label_map,
        annotated=annotated,
        dataset_name=args.dataset or args.gt_dir.resolve().name,
        progress=not args.no_progress,
    )
    metrics = MetricsLayout(out_dir)
    write_csv(result, metrics.csv)  # each atomically; a failed write is an OutputError naming the file
    write_json(result, metrics.json)
    write_markdown(result, metrics.md)
    print(result_markdown(result), end="")
    print(f"metrics written to {metrics.csv.with_suffix('')}.{{csv,json,md}}")
    return 0


def default_output_dir(pred_dir: Path) -> Path:
    """RUN/metrics for RUN/predictions[/<dataset>] (the run-directory layout), else PRED_DIR/metrics."""
    run = RunLayout.of_predictions(pred_dir)
    return run.metrics.root if run is not None else RunLayout(pred_dir).metrics.root


def parse_label_map(text: str) -> dict[int, str]:
    """``'1:spleen, 2:right_kidney'`` → ``{1: 'spleen', 2: 'right_kidney'}``."""
    out: dict[int, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, name = item.partition(":")
        if not sep or not key.strip().lstrip("-").isdigit() or not name.strip():
            raise ConfigError(f"--label-map: {item!r} is not ID:CLASS (e.g. 1:spleen)")
        if int(key) in out:  # the last would silently win
            raise ConfigError(
                f"--label-map: id {int(key)} is given twice ({int(key)}:{out[int(key)]} and {item}); give each id once"
            )
        out[int(key)] = name.strip()
    if not out:
        raise ConfigError("--label-map: empty")
    return out


def _split_names(text: str, option: str) -> list[str]:
    """``'liver, spleen'`` → ``['liver', 'spleen']``; a name given twice is a ConfigError naming ``option``
    (``--classes liver,liver`` scored id 1 twice and id 2 never)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{option}: {name!r} is given twice in {text!r}; give each class once")
    return names


def _classes_and_map(args: argparse.Namespace) -> tuple[list[str], dict[int, str] | None, list[str] | None]:
    label_map = parse_label_map(args.label_map) if args.label_map else None
    annotated = _split_names(args.annotated, "--annotated") if args.annotated else None
    if args.config is None:
        if not args.classes:
            raise ConfigError("give --classes (e.g. --classes liver,spleen) or --config CONFIG --dataset NAME")
        return _split_names(args.classes, "--classes"), label_map, annotated
    from tctseg.config import load_config

    config = load_config(args.config)
    classes = _split_names(args.classes, "--classes") if args.classes else list(config.classes)
    if not args.dataset:
        names = ", ".join(d.name for d in config.datasets)
        raise ConfigError(f"{args.config}: --dataset is needed with --config (one of: {names})")
    found = [d for d in config.datasets if d.name == args.dataset]
    if not found:
        names = ", ".join(d.name for d in config.datasets)
        raise ConfigError(f"{args.config}: no dataset named {args.dataset!r} (known: {names})")
    dataset = found[0]
    if label_map is None:  # the ground truth holds the dataset's own ids: map them as its converter does
        from tctseg.data.conversion import label_mapping

        try:
            mapping = label_mapping(dataset, classes)
        except DataError as e:
            raise DataError(f"{e}; it says which label id is which organ, or give --label-map") from None
        label_map = {i: (classes[g - 1] if g else "background") for i, g in mapping.lut.items() if i != 0}
        if annotated is None:
            annotated = list(mapping.annotated)
    elif annotated is None and dataset.classes:
        annotated = list(dataset.classes)
    return classes, label_map, annotated


def _check_output_dir(out_dir: Path, gt_dir: Path) -> None:
    out, gt = out_dir.resolve(), gt_dir.resolve()
    if out == gt or gt in out.parents:
        raise OutputError(f"--out {out_dir}: lies inside the ground-truth folder {gt_dir}; choose another folder")
