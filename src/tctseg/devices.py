"""Which device a command runs on: one rule for train, run, compare and predict.

torch is imported inside the functions, so the CLI can import this without it.
"""

from __future__ import annotations

from typing import Any

from tctseg.errors import ConfigError


def resolve_device(requested: Any = None) -> str:
    """``cpu`` or ``cuda``: the type of ``requested`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
    ``torch.device``), or CUDA when present for None; asking for CUDA without one is a
    ConfigError."""
    import torch

    kind = torch.device(requested).type if requested is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return kind


def describe_device(device: str) -> str:
    """``cpu (N threads)`` or ``cuda (<GPU name>)``, for the one line the CLI prints."""
    import torch

    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"
