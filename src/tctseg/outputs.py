"""Output folders: prove one is writable before any work that could be lost is started."""

from __future__ import annotations

import os
from pathlib import Path

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
