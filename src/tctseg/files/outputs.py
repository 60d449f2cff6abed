"""Output folders and files: prove a folder is writable before any work that could be lost is
started, refuse a name too long to exist and an input a run would overwrite, and write files
atomically with one handling of a full disk (:func:`write_atomically`: every label map,
metrics file, index, result, report and log; checkpoints share its temporary names)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
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


NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS, Windows' NTFS in UTF-16 units)
PATH_MAX = 4096  # bytes in a whole path (Linux)


def name_too_long(path: str | os.PathLike) -> str | None:
    """Why ``path`` can never be created or read on this system (a name over :data:`NAME_MAX`
    bytes, or the whole path over :data:`PATH_MAX`: ENAMETOOLONG), else None."""
    raw = os.fsencode(path)
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if longest > NAME_MAX:
        return f"a file or folder name in it is {longest} bytes long, over the {NAME_MAX} the file system allows"
    if len(raw) > PATH_MAX:
        return f"the path is {len(raw)} bytes long, over the {PATH_MAX} the system allows"
    return None


def check_name_length(path: str | os.PathLike, what: str = "path") -> None:
    """Refuse (:class:`OutputError`, one line naming ``path``) a path whose name is too long to
    exist (:func:`name_too_long`), before anything is read or written."""
    why = name_too_long(path)
    if why:
        raise OutputError(f"{path}: cannot use it as the {what}: {why}")


def discard(path: Path) -> None:
    """Remove ``path`` (a temporary file) if it is there, best effort: on a read-only file system,
    or where the name could never be created, a failed removal must not hide the error the
    caller is about to report."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def temporary_path(path: Path, keep_suffix: bool = True) -> Path:
    """The temporary name :func:`write_atomically` writes ``path`` under, in the same folder.

    ``.<name>.tmp-<pid><last suffix>``; where that would be longer than :data:`NAME_MAX` bytes
    (a final name of ~240 bytes, which is legal), ``.tmp-<16 hex of sha256(name)>-<pid><last
    suffix>`` instead: short, and the same for the same name (what a file's bytes depend on,
    like a gzip header, must name the final file, never this one). The last suffix is kept
    only when short (``np.save`` adds none then), and not at all without ``keep_suffix`` (a
    checkpoint's temporary file must not end in ``.pt``); the name never ends in ``.nii.gz``.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-1:]) if keep_suffix else ""
    name = f".{path.name}.tmp-{os.getpid()}{suffix}"
    if len(os.fsencode(name)) > NAME_MAX:
        digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
        name = f".tmp-{digest}-{os.getpid()}{suffix if len(os.fsencode(suffix)) <= 16 else ''}"
    return path.with_name(name)


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

    The temporary name (:func:`temporary_path`: ``.<name>.tmp-<pid><last suffix>``, or a short
    hash of the name where that would be too long) keeps the file's last suffix (so ``np.save``
    adds none) and never ends in ``.nii.gz``, so a killed run leaves nothing that looks like a
    case. A failed write (a full disk, an unwritable or read-only folder, a name too long)
    removes the temporary file where it can (best effort: :func:`discard`), leaves an earlier
    ``path`` as it was, and raises :class:`OutputError` ``"<path>: cannot write <what>
    (<reason>)"``: the one handling every file a run writes, like its checkpoints.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        discard(tmp)
        raise OutputError(f"{path}: cannot write {what} ({_reason(e)})") from None
    except BaseException:
        discard(tmp)
        raise
    return path


def _reason(e: OSError) -> str:
    if e.errno == errno.ENAMETOOLONG:
        return f"{e.strerror}: names may have at most {NAME_MAX} bytes"
    return e.strerror or str(e)


@contextlib.contextmanager
def output_errors(path: Path, what: str) -> Iterator[None]:
    """An OSError inside becomes ``OutputError("<path>: cannot write <what> (<reason>)")``."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"{path}: cannot write {what} ({e.strerror or e})") from None
