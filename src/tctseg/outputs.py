"""Output folders and files: prove a folder is writable before any work that could be lost is
started, and write every file atomically with one handling of a full disk."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tctseg.errors import OutputError


def ensure_writable(folder: Path, what: str, name: str | None = None) -> None:
    """Create ``folder`` and write (then delete) a probe file in it.

    An unwritable or full location raises :class:`OutputError` ``"<name>: cannot write <what>
    (<reason>)"`` (``name`` defaults to the folder) before the caller starts its work.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{name or folder}: cannot write {what} ({e.strerror or e})") from None


def check_not_an_output(given: Path, outputs: Iterable[Path], hint: str) -> None:
    """Refuse (:class:`OutputError`) an input file ``given`` that is one of ``outputs`` (by
    resolved path, or the same file under another name: a link), or lies inside one of them
    that is a folder, so that writing the outputs can never replace the input.

    The message is ``"<given>: is <output>, which this run writes; <hint>"`` (or ``lies
    inside <folder>``)."""
    resolved = given.resolve()
    for output in outputs:
        target = output.resolve()
        same = resolved == target
        if not same and given.exists() and output.is_file():
            with contextlib.suppress(OSError):
                same = os.path.samefile(given, output)
        if same:
            raise OutputError(f"{given}: is {output}, which this run writes; {hint}")
        if target in resolved.parents:
            raise OutputError(f"{given}: lies inside {output}, which this run writes; {hint}")


def write_atomically(path: Path, write: Callable[[Path], None], what: str = "the file") -> Path:
    """Call ``write(temp_path)`` for a temporary file next to ``path``, then rename it to ``path``.

    The temporary name (``.<name>.tmp-<pid><last suffix>``) keeps the file's last suffix (so
    ``np.save`` adds none) and never ends in ``.nii.gz``, so a killed run leaves nothing that
    looks like a case. A failed write (a full disk, an unwritable folder) removes the temporary file, leaves an
    earlier ``path`` as it was, and raises :class:`OutputError` ``"<path>: cannot write
    <what> (<reason>)"``: the one handling every file a run writes, like its checkpoints.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{''.join(path.suffixes[-1:])}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write {what} ({e.strerror or e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def output_errors(path: Path, what: str) -> Iterator[None]:
    """An OSError inside becomes ``OutputError("<path>: cannot write <what> (<reason>)")``."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"{path}: cannot write {what} ({e.strerror or e})") from None
