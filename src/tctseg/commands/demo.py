"""`tctseg demo`: the whole job on the synthetic phantom, on a laptop CPU, in minutes.

Generates the phantom in the public datasets' raw layouts (unless it is already there),
then runs exactly what a user with real data runs: ``tctseg run configs/phantom.yaml``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

NAME = "demo"
HELP = "generate the phantom, train TCT and TAL on it, predict, evaluate and write the report"

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "phantom.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default: configs/phantom.yaml")
    parser.add_argument("--phantom", type=Path, default=Path("data/phantom"), help="where the phantom's raw datasets go")
    parser.add_argument("--size", default="demo", help="phantom size: tiny, demo, small, paper-scaled")
    parser.add_argument("--methods", default="tct,tal", help="comma-separated methods (default: tct,tal)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import os

    from tctseg.commands.run import print_summary
    from tctseg.config import load_config
    from tctseg.data.phantom import write_phantom
    from tctseg.experiment import run_experiment
    from tctseg.files.layout import ExperimentLayout

    start = time.perf_counter()
    if not (args.phantom / "README.md").exists():
        print(f"writing the {args.size} phantom to {args.phantom} ...")
        write_phantom(args.phantom, size=args.size, seed=0)
    else:
        print(f"using the phantom in {args.phantom}")
    os.environ["TCTSEG_PHANTOM"] = str(args.phantom)  # configs/phantom.yaml reads its paths from here
    config = load_config(args.config, args.overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results = run_experiment(config, methods, args.out, overwrite=True, device="cpu", progress=not args.no_progress)
    total = time.perf_counter() - start
    layout = ExperimentLayout(args.out)
    summary = json.loads(layout.results_json.read_text(encoding="utf-8"))
    print_summary(summary, config.classes)
    print(f"demo finished in {total / 60:.1f} min")
    print(f"results: {layout.results_json}")
    print(f"report:  {layout.report_html.resolve()}")
    return 0 if results else 1
