"""What a file really is, told from its first bytes (for messages like "not a checkpoint: a NIfTI image").

Only the formats a user of tctseg is likely to hand over by mistake are named; anything else
is "a binary file of unknown type" or "a text file".
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record
GZIP_MAGIC = b"\x1f\x8b"
# pickle protocols 2-5 open with PROTO (0x80) and the protocol number (torch's legacy format)
PICKLE_PREFIXES = tuple(bytes([0x80, protocol]) for protocol in (2, 3, 4, 5))
HEAD_BYTES = 544  # enough for a NIfTI-2 header's magic and a DICOM preamble


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGICS


def is_pickle(head: bytes) -> bool:
    return head[:2] in PICKLE_PREFIXES


def describe_file(path: str | Path) -> str:
    """A short phrase saying what ``path`` holds: "a gzip-compressed NIfTI image", "a DICOM file", ..."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        return f"an unreadable file ({e.strerror or e})"
    if not head:
        return "an empty file"
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as f:
                inner = f.read(HEAD_BYTES)
        except (OSError, EOFError, zlib.error):
            return "a gzip-compressed file (damaged)"
        kind = _describe_head(inner)
        return f"a gzip-compressed {kind[2:] if kind.startswith('a ') else kind[3:]}"
    return _describe_head(head)


def _describe_head(head: bytes) -> str:
    if _is_nifti(head):
        return "a NIfTI image"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "a DICOM file"
    if is_zip(head):
        return "a zip archive"
    if is_pickle(head):
        return "a pickle file"
    for magic, kind in (
        (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
        (b"\x93NUMPY", "a NumPy array file (.npy)"),
        (b"\x89PNG", "a PNG image"),
        (b"%PDF", "a PDF document"),
        (b"\x7fELF", "an executable"),
    ):
        if head.startswith(magic):
            return kind
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file of unknown type"
    return "a text file"


def _is_nifti(head: bytes) -> bool:
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return True
    if len(head) >= 8 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return struct.unpack("<i", head[:4])[0] == 540 or struct.unpack(">i", head[:4])[0] == 540
    return False
