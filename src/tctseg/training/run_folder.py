"""A run folder opened for training, in one place for the Trainer and PFL's pipeline.

    run = open_run_folder(output_dir, resume=False, overwrite=False, device="cpu")
    cases = load_cases(config, "train", given)   # the caller's cases, else the prepared cache's
    run.write_config(config)                     # config.yaml (rank 0)

Opening refuses a folder that holds another run (unless ``--resume`` / ``--overwrite``) or
cannot be written, joins the process group under ``torchrun``, removes a previous run's
outputs for ``--overwrite`` (rank 0; a staged run's stage folders and ``pipeline.json`` too),
and lets the other ranks wait until that is done. The names come from
:class:`tctseg.files.layout.RunLayout`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tctseg.devices import resolve_device
from tctseg.errors import OutputError
from tctseg.files.layout import RunLayout
from tctseg.files.outputs import ensure_writable, write_atomically
from tctseg.training import distributed as dist_utils

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tctseg.config import Config
    from tctseg.preprocessing.cache import PreparedCase


def check_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder holding another run (unless resume/overwrite) or one that cannot be written."""
    if resume and overwrite:
        raise OutputError(f"{output_dir}: choose --resume or --overwrite, not both")
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"{output_dir}: exists and is not a folder")
    markers = [m.name for m in RunLayout(output_dir).markers if m.exists()]
    if markers and not (resume or overwrite):
        raise OutputError(
            f"{output_dir}: holds another run ({', '.join(markers)}); "
            "pass --resume to continue it or --overwrite to start again"
        )


def remove_run_outputs(output_dir: Path) -> None:
    """Delete the training outputs of a previous run (for ``--overwrite``)."""
    for path in RunLayout(output_dir).outputs:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def load_cases(config: Config, role: str, given: Sequence[Any] | None = None) -> list[PreparedCase]:
    """``given`` (a caller's cases) as a list; else the prepared cases of every dataset with
    ``role`` (none when no dataset has it)."""
    if given is not None:
        return list(given)
    from tctseg.preprocessing.cache import load_prepared

    if not config.datasets_with_role(role):
        return []
    return load_prepared(config, role)


@dataclass(frozen=True)
class RunFolder:
    """A run folder opened by :func:`open_run_folder`: its names, this process's place in the
    process group, and the device type (``cpu`` / ``cuda``) it trains on."""

    layout: RunLayout
    context: dist_utils.DistributedContext
    device_type: str

    def write_config(self, config: Config) -> None:
        """``config.yaml`` (rank 0), atomically: a rename replaces a link there, never writes through it."""
        if self.context.is_main:
            text = yaml.safe_dump(config.to_dict(), sort_keys=False)
            write_atomically(self.layout.config_yaml, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the run's config")


def open_run_folder(
    output_dir: str | Path, *, resume: bool, overwrite: bool, device: Any, staged: bool = False
) -> RunFolder:
    """Open ``output_dir`` for a training (module docstring). ``device``: ``cpu``, ``cuda``, a
    ``torch.device`` or None (CUDA if present); ``staged``: a run in stages (PFL), whose
    ``--overwrite`` also removes the stage folders and ``pipeline.json``."""
    layout = RunLayout(output_dir)
    device_type = resolve_device(device)
    check_output_dir(layout.root, resume, overwrite)
    context = dist_utils.init_distributed(device_type)
    if context.is_main:
        ensure_writable(layout.root, "the output folder")
        if overwrite:
            remove_run_outputs(layout.root)
            if staged:
                for folder in layout.stage_folders:
                    shutil.rmtree(folder, ignore_errors=True)
                layout.pipeline_json.unlink(missing_ok=True)
    dist_utils.barrier(context)
    return RunFolder(layout, context, device_type)
