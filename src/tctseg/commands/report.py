"""`tctseg report RUN_DIR`: one self-contained HTML page (and a markdown twin) for a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from tctseg.files.layout import REPORT_HTML, REPORT_MD

NAME = "report"
HELP = f"write RUN_DIR/{REPORT_HTML} and {REPORT_MD}: metrics, curves, overlays, config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="one method's run directory, or a folder of them (e.g. runs/demo)")


def run(args: argparse.Namespace) -> int:
    from tctseg.report import build_report

    print(build_report(args.run_dir))
    return 0
