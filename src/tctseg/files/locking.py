"""One process per output folder: an exclusive lock on ``<folder>/.tctseg-lock``.

``train`` locks its run folder, ``prepare`` its cache folder, ``predict`` its output folder;
a second process on the same folder refuses at once with one line naming the holder's pid,
instead of mixing its logs, checkpoints or cases with the first one's. The kernel releases
the lock when the holder exits, however it exits, so a SIGKILLed run never leaves a stale
lock (a leftover lock FILE is harmless: the next process simply locks it).

The lock is a POSIX record lock (``fcntl.lockf``), not ``flock``: a ``flock`` would be
inherited by forked children (DataLoader and prepare workers) and outlive a killed parent
until they notice; a POSIX lock belongs to the one process that took it.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from tctseg.errors import OutputError

LOCK_NAME = ".tctseg-lock"
_Function = TypeVar("_Function", bound=Callable[..., Any])
# locks taken with hold_folder_lock inside a call of a @releases_folder_locks function
_HELD: contextvars.ContextVar[list | None] = contextvars.ContextVar("tctseg_held_folder_locks", default=None)


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block.

    ``what`` names the work in messages ("training run", "prepared cache"). Raises
    :class:`OutputError` ``"<folder>: in use by another tctseg process (pid N: ...)"`` when
    another process holds it, or when the folder cannot be created. With ``wait``, says so on
    stderr and waits for the holder instead (for work that is one step of a bigger one, e.g.
    the cache a training prepares). Yields the lock file.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot create the folder for the {what} ({e.strerror or e})") from None
    path = folder / LOCK_NAME
    fd = _acquire(path, folder, what, wait)
    try:
        yield path
    finally:
        _release(path, fd)


def releases_folder_locks(function: _Function) -> _Function:
    """Decorator: every lock :func:`hold_folder_lock` takes during a call is released when it
    returns or raises (for a long function that locks part-way, without re-indenting it)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        held: list[tuple[Path, int]] = []
        token = _HELD.set(held)
        try:
            return function(*args, **kwargs)
        finally:
            _HELD.reset(token)
            for path, fd in reversed(held):
                _release(path, fd)

    return wrapper  # type: ignore[return-value]


def hold_folder_lock(folder: str | Path, what: str) -> Path:
    """Take the lock of :func:`folder_lock` on an existing ``folder`` until the enclosing
    :func:`releases_folder_locks` call ends. Returns the lock file."""
    held = _HELD.get()
    if held is None:
        raise RuntimeError("hold_folder_lock must be called inside a @releases_folder_locks function")
    folder = Path(folder)
    path = folder / LOCK_NAME
    held.append((path, _acquire(path, folder, what)))
    return path


def _release(path: Path, fd: int) -> None:
    # unlink while still holding the lock, so no one can lock a name that is about to vanish
    with contextlib.suppress(OSError):
        path.unlink()
    os.close(fd)


def _acquire(path: Path, folder: Path, what: str, wait: bool = False) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"{folder}: cannot lock the folder for the {what} ({e.strerror or e})") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            busy = e.errno in (errno.EACCES, errno.EAGAIN)
            holder = _read_holder(fd) if busy else ""
            if not (busy and wait):
                os.close(fd)
                if busy:
                    raise OutputError(
                        f"{folder}: in use by another tctseg process ({holder}); wait for it to finish or choose "
                        "another folder"
                    ) from None
                raise OutputError(f"{folder}: cannot lock the folder for the {what} ({e.strerror or e})") from None
            print(f"{folder}: in use by another tctseg process ({holder}); waiting for it", file=sys.stderr, flush=True)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
            except OSError as e:
                os.close(fd)
                raise OutputError(f"{folder}: cannot lock the folder for the {what} ({e.strerror or e})") from None
        # the holder before us may have unlinked the file between our open and our lock: retry on the new one
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _write_holder(fd, what)
            return fd
        os.close(fd)


def _write_holder(fd: int, what: str) -> None:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    program = "tctseg" if program in ("__main__.py", "tctseg") else program  # `python -m tctseg` or the script
    command = " ".join([program, *sys.argv[1:3]]).strip()
    text = f"pid {os.getpid()}: {what}" + (f", {command}" if command else "")
    with contextlib.suppress(OSError):  # the record is for messages only; the lock holds without it
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8", "replace"), 0)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return " ".join(text.split()) or "pid unknown: it has only just started"
