"""The `tctseg` command line: a thin layer over the library.

Each sub-command lives in its own module under :mod:`tctseg.commands` and defines
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Errors of the
project's own types are printed as one clear message (exit status 2); ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

import tctseg
from tctseg import commands
from tctseg.errors import TctsegError, TctsegWarning


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"tctseg.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tctseg",
        description="Task Consistency Training: one versatile 3D organ segmentation model "
        "from several partially labeled datasets.",
    )
    parser.add_argument("--version", action="version", version=f"tctseg {tctseg.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command, warnings.showwarning)
            return int(args._run(args) or 0)
    except TctsegError as e:
        if args.debug:
            raise
        print(f"tctseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tctseg {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line_warning(command: str, show):
    """``warnings.showwarning`` printing tctseg's own warnings as ``tctseg <cmd>: warning: ...``."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, TctsegWarning):
            print(f"tctseg {command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


if __name__ == "__main__":
    raise SystemExit(main())
