"""`tctseg compare CONFIG --methods tct,tal --seeds 3`: the paper's tables for the config's data."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "compare"
HELP = "train every method under the same data, budget and seeds and write the paper's tables"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="experiment config (YAML)")
    parser.add_argument("--methods", default="tct,tal", help="comma-separated methods, or all (default: tct,tal)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per method, seeds train.seed + 0..K-1 (default: 1)")
    parser.add_argument("--tables", default="all",
                        help="comma-separated: main, paired, efficiency, lowdata, ablation, generalisation, transfer, or all")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. train.epochs=5 (repeatable)")
    parser.add_argument("--output", type=Path, help="compare folder (default: <output_dir>/compare)")
    parser.add_argument("--fractions", default="0.2,0.5,1.0",
                        help="training fractions of the lowdata and transfer tables (default: 0.2,0.5,1.0)")
    parser.add_argument("--transfer-dataset", metavar="NAME",
                        help="fully labeled dataset of the config for the transfer table (default: the first one found)")
    parser.add_argument("--infer-patch", default="192,192,64", metavar="X,Y,Z",
                        help="patch of the inference timing (default: the paper's 192,192,64)")
    parser.add_argument("--ablations", metavar="ROWS",
                        help="comma-separated rows of the ablation table to run, by name (e.g. "
                             "no_consistency,empty_as_one; default: every row)")
    parser.add_argument("--overwrite", action="store_true", help="train again instead of reusing finished runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _numbers(text: str, kind: type, option: str) -> list:
    from tctseg.errors import ConfigError

    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from tctseg.devices import resolve_device
    from tctseg.compare import TABLE_NAMES, run_compare
    from tctseg.config import load_config
    from tctseg.errors import ConfigError
    from tctseg.files.layout import CompareLayout
    from tctseg.methods import available_methods

    config = load_config(args.config, args.overrides)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods = list(available_methods()) if names == ["all"] else names
    unknown = [m for m in methods if m not in available_methods()]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown method {unknown[0] if unknown else '(none)'!r}; "
                          f"available: {', '.join(available_methods())}, all")
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    tables = list(TABLE_NAMES) if tables == ["all"] else tables
    output = args.output or Path(config.output_dir) / "compare"
    device = resolve_device(args.device)
    written = run_compare(
        config, methods, output,
        seeds=args.seeds,
        tables=tables,
        fractions=_numbers(args.fractions, float, "--fractions"),
        transfer_dataset=args.transfer_dataset,
        infer_patch=_numbers(args.infer_patch, int, "--infer-patch"),
        device=device,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        ablations=[a.strip() for a in args.ablations.split(",") if a.strip()] if args.ablations else None,
    )
    layout = CompareLayout(output)
    for name in written:
        print(f"{name + ':':<16}{layout.tables / (name + '.md')}")
    print(f"report:         {layout.report_html}")
    return 0
