"""The project's own error types.

Every error a user can cause (bad file, bad config, bad checkpoint) is raised as a
:class:`TctsegError` subclass whose message names the file or key and what is wrong.
The command line prints the message without a traceback (``--debug`` shows it).
"""

from __future__ import annotations


class TctsegError(Exception):
    """Base class of every error tctseg raises on purpose."""


class ConfigError(TctsegError):
    """A configuration file or ``--set`` override is wrong (unknown key, wrong type, bad value)."""


class DataError(TctsegError):
    """An input image or label cannot be used: unreadable, wrong shape, NaN, geometry mismatch."""


class LabelError(DataError):
    """A label volume holds values its dataset's label mapping does not define."""


class CheckpointError(TctsegError):
    """A checkpoint is missing, corrupt, or does not match what is requested."""


class OutputError(TctsegError):
    """An output location cannot be written, or would overwrite something it must not."""


class TrainingError(TctsegError):
    """Training cannot go on (e.g. repeated non-finite losses, out of memory)."""


class TctsegWarning(UserWarning):
    """Something in an input tctseg uses but the user should know (the command line prints one line)."""


class GeometryWarning(TctsegWarning):
    """An input's geometry is ambiguous or unusual (qform and sform disagree, a sheared affine)."""
