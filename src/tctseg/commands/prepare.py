"""`tctseg prepare CONFIG`: bring every configured dataset into the prepared cache."""

from __future__ import annotations

import argparse

from tctseg.config import load_config
from tctseg.preprocessing.cache import cache_root, prepare

NAME = "prepare"
HELP = "preprocess the configured datasets into the prepared cache (RAS, normalised, resampled)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment config (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. preprocessing.spacing=[1.5,1.5,3]")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: preprocessing.workers)")
    parser.add_argument("--datasets", default=None, help="comma-separated dataset names (default: all)")
    parser.add_argument("--roles", default="train,validation,test", help="comma-separated roles to prepare")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets else None
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    cases = prepare(config, roles=roles, datasets=names, workers=args.workers, progress=not args.quiet)
    print(f"{len(cases)} cases prepared in {cache_root(config)}")
    return 0
