"""The `tctseg` command line: a thin layer over the library.

Each sub-command lives in its own module under :mod:`tctseg.commands` and defines
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

Exit status: 0 done; 1 some cases failed (``predict``, ``evaluate``: the others were done);
2 bad input or usage — errors of the project's own types, a path named too long to exist and
an output the file system refuses (read-only, full) are printed as one line
``tctseg <cmd>: error: ...``; 3 an internal error (a bug in tctseg: its traceback, then one
line saying so); 130 interrupted. ``--debug`` lets every error through with its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
import traceback
import warnings
from pathlib import Path

import tctseg
from tctseg import commands
from tctseg.errors import OutputError, TctsegError, TctsegWarning

EXIT_OK, EXIT_FAILED_CASES, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# OSErrors that say something about the user's paths or file system, not about tctseg: one line
# naming the file (exit 2) where a command's own handling did not already turn them into one
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENAMETOOLONG", "EROFS", "ENOSPC", "EDQUOT", "EACCES", "EPERM") if hasattr(errno, name)
)


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
            check_path_arguments(args)
            return int(args._run(args) or 0)
    except TctsegError as e:
        if args.debug:
            raise
        print(f"tctseg {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"tctseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the user's file system, or a bug (its own status)
        if args.debug:
            raise
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS and e.filename is not None:
            print(f"tctseg {args.command}: error: {e.filename}: {e.strerror}", file=sys.stderr)
            return EXIT_USAGE
        return _internal_error(args, e)


def _internal_error(args: argparse.Namespace, e: BaseException) -> int:
    """A bug in tctseg (not the user's input): the traceback, one line saying so, exit 3."""
    traceback.print_exception(e, file=sys.stderr)
    print(
        f"tctseg {args.command}: internal error: {type(e).__name__}: {e} (a bug in tctseg {tctseg.__version__}; "
        "please report it with the traceback above)".replace("\n", " "),
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def check_path_arguments(args: argparse.Namespace) -> None:
    """Refuse (one line, exit 2) a path argument with a name too long to exist on any common
    file system (over 255 bytes; ENAMETOOLONG), before a command reads or creates anything."""
    from tctseg.files.outputs import name_too_long

    for key, value in vars(args).items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (Path, os.PathLike)) and not key.startswith("_"):
                why = name_too_long(item)
                if why:
                    raise OutputError(f"{item}: {why}")


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
