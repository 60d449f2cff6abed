"""`tctseg phantom OUT_DIR`: write the synthetic abdominal CT phantom in the real datasets' layouts."""

from __future__ import annotations

import argparse

from tctseg.data.phantom import SIZES, write_phantom

NAME = "phantom"
HELP = (
    "write synthetic abdominal CT laid out like KiTS19, MSD Liver/Pancreas/Spleen "
    "(partially labeled training sets) and BTCV (fully labeled test set)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into (must be empty unless --overwrite)")
    parser.add_argument("--size", choices=list(SIZES), default="demo", help="how many cases (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace the phantom folders already in OUT_DIR")


def run(args: argparse.Namespace) -> int:
    counts = write_phantom(args.out_dir, size=args.size, seed=args.seed, overwrite=args.overwrite)
    for dataset, count in counts.items():
        print(f"{dataset}: {count} cases")
    print(f"phantom written to {args.out_dir}")
    return 0
