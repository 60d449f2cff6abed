"""`tctseg run CONFIG --methods tct,tal`: train, predict the test sets, evaluate and report."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "run"
HELP = "train each method, predict the config's test sets, evaluate them and write the report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="experiment config (YAML)")
    parser.add_argument("--methods", default="tct,tal", help="comma-separated methods (default: tct,tal)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. train.epochs=5 (repeatable)")
    parser.add_argument("--output", type=Path, help="run folder (default: the config's output_dir)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue interrupted trainings in the run folder")
    again.add_argument("--overwrite", action="store_true", help="retrain methods whose folders hold a previous run")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from tctseg.devices import resolve_device
    from tctseg.commands.train import check_config_is_kept
    from tctseg.config import load_config
    from tctseg.errors import ConfigError
    from tctseg.experiment import run_experiment
    from tctseg.files.layout import ExperimentLayout
    from tctseg.methods import available_methods

    config = load_config(args.config, args.overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in available_methods()]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown method {unknown[0] if unknown else '(none)'!r}; "
                          f"available: {', '.join(available_methods())}")
    run_dir = args.output or Path(config.output_dir)
    check_config_is_kept(args.config, [ExperimentLayout(run_dir).method(m).root for m in methods])
    if args.resume:
        from tctseg.training.trainer import check_resume

        # a changed optimizer or weight decay, or fewer epochs than a method has done: refused up front
        for m in methods:
            check_resume(config.with_method(m), ExperimentLayout(run_dir).method(m).root)
    device = resolve_device(args.device)
    results = run_experiment(config, methods, run_dir, resume=args.resume, overwrite=args.overwrite,
                             device=device, progress=not args.no_progress)
    print_summary(results, config.classes)
    layout = ExperimentLayout(run_dir)
    print(f"results: {layout.results_json}\nreport:  {layout.report_html}")
    return 0


def print_summary(results: dict, classes: list[str]) -> None:
    """One line per method: DSC per class, mean DSC and HD95, wall time."""
    header = f"{'method':<8}" + "".join(f"{c[:12]:>13}" for c in classes) + f"{'mean DSC':>10}{'HD95 mm':>9}{'time':>8}"
    print(header)
    for method, r in results.items():
        cells = "".join(
            f"{100 * r['per_class'][c]['dsc']:>13.1f}" if c in r["per_class"] else f"{'-':>13}" for c in classes
        )
        print(f"{method:<8}{cells}{100 * r['mean_dsc']:>10.1f}{r['mean_hd95']:>9.1f}{r['wall_time_s']:>7.0f}s")
