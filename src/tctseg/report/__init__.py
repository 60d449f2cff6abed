"""The HTML + markdown report of a run (see :mod:`tctseg.report.report`)."""

from __future__ import annotations

from tctseg.report.overlays import PredictionRecord, class_overlays, load_index, render_overlay
from tctseg.report.report import build_report

__all__ = ["PredictionRecord", "build_report", "class_overlays", "load_index", "render_overlay"]
