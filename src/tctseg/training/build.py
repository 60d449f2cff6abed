"""The trainer a config asks for: ``train``, ``run`` and ``compare`` call :func:`build_trainer`.

    trainer = build_trainer(config, "runs/x/tct", resume=True)   # a Trainer, or PFL's pipeline
    summary = trainer.fit()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tctseg.config import Config
from tctseg.methods import method_class
from tctseg.training.pfl_pipeline import PFLPipeline
from tctseg.training.trainer import Trainer


def build_trainer(config: Config, output_dir: str | Path, **kwargs: Any) -> Trainer | PFLPipeline:
    """A :class:`PFLPipeline` for a method that trains in stages (PFL), else a :class:`Trainer`;
    both take the same arguments and their ``fit()`` returns the same summary."""
    if method_class(config.method.name).trains_in_stages:
        return PFLPipeline(config, output_dir, **kwargs)
    return Trainer(config, output_dir, **kwargs)


__all__ = ["build_trainer"]
