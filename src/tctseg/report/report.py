"""`build_report(run_dir)`: the page a researcher opens first.

A run directory (docs/DESIGN.md "Run directory") is either one method's run
(``config.yaml``, ``log.csv``, ``progress.png``, ``metrics/metrics.json``,
``predictions/index.json``) or a parent holding one such directory per method (e.g.
``runs/demo/tct``, ``runs/demo/tal``) and optionally ``results.json``::

    {"tct": {"per_class": {"liver": {"dsc": 0.93, "hd95": 4.1}, ...},
             "mean_dsc": 0.9, "mean_hd95": 5.2, "wall_time_s": 812.0}, ...}

It writes ``<run_dir>/report.html`` (one self-contained file: base64 PNGs, inline CSS) and
``<run_dir>/report.md`` with its PNGs in ``<run_dir>/report_files/``. The page holds: the
results.json summary, a side-by-side comparison of the methods' metrics, and per method its
metric table, training curves, one overlay per organ (see :mod:`tctseg.report.overlays`)
and its config. Whatever a run lacks is said in a line, not an error.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from pathlib import Path
from typing import Any


import tctseg
from tctseg.config import read_yaml
from tctseg.errors import ConfigError, DataError, TctsegError
from tctseg.layout import ExperimentLayout, RunLayout
from tctseg.outputs import output_errors, write_atomically
from tctseg.report.curves import training_curves_png
from tctseg.report.document import Block, Heading, Image, Paragraph, Preformatted, Table, render_html, render_markdown
from tctseg.report.overlays import class_overlays, load_index



def is_method_dir(path: Path) -> bool:
    """True where ``path`` looks like one method's run directory."""
    return path.is_dir() and any(sign.exists() for sign in RunLayout(path).signs)


def find_method_dirs(run_dir: Path) -> list[Path]:
    """``[run_dir]`` for a single-method run, else its method sub-directories (sorted)."""
    if is_method_dir(run_dir):
        return [run_dir]
    return sorted(p for p in run_dir.iterdir() if is_method_dir(p))


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and ``report.md`` (+ ``report_files/``) into ``run_dir``; return the HTML path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run directory not found")
    layout = ExperimentLayout(run_dir)
    results_path = layout.results_json
    method_dirs = _in_results_order(find_method_dirs(run_dir), _read_json(results_path))
    table_files = sorted(layout.tables.glob("*.md"))
    if not method_dirs and not results_path.exists() and not table_files:
        signs = ", ".join(str(sign.relative_to(run_dir)) for sign in RunLayout(run_dir).signs)
        raise DataError(
            f"{run_dir}: not a run directory (no {signs} in it or its sub-folders, no {results_path.name})"
        )
    blocks: list[Block] = [
        Paragraph(f"Generated {_dt.datetime.now():%Y-%m-%d %H:%M} by tctseg {tctseg.__version__} from {run_dir.resolve()}."),
        Paragraph("Tables give DSC in % and HD95 in mm. " + _convention(method_dirs)),
    ]
    if results_path.exists():
        blocks += _results_summary(results_path)
    if table_files:
        blocks.append(Heading(2, "Tables (tctseg compare)"))
        for path in table_files:
            blocks += _markdown_table_blocks(path)
    metrics = {d.name: _read_json(RunLayout(d).metrics_json) for d in method_dirs}
    with_metrics = {name: m for name, m in metrics.items() if m}
    if len(with_metrics) > 1:
        blocks += [Heading(2, "Comparison of methods"), _comparison_table(with_metrics)]
    for method_dir in method_dirs:
        blocks += _method_section(method_dir, metrics[method_dir.name], prefix=_slug(method_dir.name))
    title = f"tctseg report — {run_dir.resolve().name}"
    html_path = layout.report_html
    html = render_html(title, blocks)
    write_atomically(html_path, lambda tmp: tmp.write_text(html, encoding="utf-8"), "the report")
    with output_errors(layout.report_files, "the report's images"):
        for stale in layout.report_files.glob("*.png"):  # images of an earlier report
            stale.unlink()
        markdown = render_markdown(title, blocks, layout.report_files)
    write_atomically(layout.report_md, lambda tmp: tmp.write_text(markdown, encoding="utf-8"), "the report")
    return html_path


# --------------------------------------------------------------------------- sections


def _method_section(method_dir: Path, metrics: dict[str, Any] | None, prefix: str) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Method: {method_dir.name}")]
    run = RunLayout(method_dir)
    config = _read_yaml(run.config_yaml)
    classes = (metrics or {}).get("classes") or (config or {}).get("classes") or []

    blocks.append(Heading(3, "Metrics"))
    if metrics:
        blocks.append(_metric_table(metrics.get("per_class", {}), metrics, classes))
        per_dataset = metrics.get("per_dataset") or {}
        if len(per_dataset) > 1:
            for name, m in per_dataset.items():
                blocks += [Paragraph(f"Dataset {name}:"), _metric_table(m.get("per_class", {}), m, classes)]
        n_cases = len({(c.get("dataset"), c.get("case_id")) for c in metrics.get("cases", [])})
        blocks.append(Paragraph(f"{n_cases} test case(s); means per class over the cases annotating it."))
    else:
        blocks.append(Paragraph(f"No {_in_run(run.metrics_json, run)} (run `tctseg evaluate`)."))

    blocks.append(Heading(3, "Training curves"))
    from tctseg.training.pfl_pipeline import final_run_folder

    training = RunLayout(final_run_folder(method_dir))  # PFL: its final network's curves
    progress_png, log_csv = training.progress_png, training.log_csv
    curves = None
    if progress_png.exists():
        curves = progress_png.read_bytes()
    elif log_csv.exists():
        try:
            curves = training_curves_png(log_csv)
        except (OSError, ValueError) as e:
            blocks.append(Paragraph(f"Cannot draw {log_csv}: {e}"))
    if curves:
        blocks.append(Image(f"{prefix}_curves.png", curves, f"{method_dir.name}: training curves"))
    elif not log_csv.exists():
        blocks.append(Paragraph(f"No {progress_png.name} or {log_csv.name}."))

    blocks.append(Heading(3, "Prediction vs ground truth"))
    blocks += _overlay_blocks(method_dir, classes, prefix)

    blocks.append(Heading(3, "Configuration"))
    config_path = run.config_yaml
    blocks.append(Preformatted(config_path.read_text(encoding="utf-8")) if config_path.exists() else Paragraph(f"No {config_path.name}."))
    return blocks


def _overlay_blocks(method_dir: Path, classes: list[str], prefix: str) -> list[Block]:
    run = RunLayout(method_dir)
    index_path = run.predictions_index
    if not index_path.exists():
        return [Paragraph(f"No {_in_run(index_path, run)}: no overlays.")]
    if not classes:
        return [Paragraph(f"No class list ({run.metrics_json.name} or {run.config_yaml.name}): no overlays.")]
    problems: list[str] = []
    try:
        overlays = class_overlays(load_index(index_path), list(classes), problems)
    except TctsegError as e:
        return [Paragraph(f"Overlays skipped: {e}")]
    blocks: list[Block] = [Paragraph(f"Case skipped: {p}") for p in problems] + [
        Paragraph("Per organ, the test slice with the largest ground-truth area. Green: ground truth; "
                  "red: prediction; radiological view (patient's right on the left).")
    ]
    for o in overlays:
        where = f"{o.dataset}/{o.case_id}" if o.dataset else o.case_id
        caption = f"{o.class_name}: {where}, axial slice {o.slice_index}, DSC on slice {100 * o.dsc_on_slice:.1f}%"
        blocks.append(Image(f"{prefix}_overlay_{_slug(o.class_name)}.png", o.png, caption))
    missing = [c for c in classes if c not in {o.class_name for o in overlays}]
    if missing:
        blocks.append(Paragraph(f"No test ground truth contains: {', '.join(missing)}."))
    return blocks


def _metric_table(per_class: dict[str, Any], means: dict[str, Any], classes: list[str]) -> Table:
    rows = []
    for name in list(classes) or list(per_class):
        v = per_class.get(name)
        rows.append([name, _pct(v, "dsc"), _mm(v, "hd95"), str(v.get("cases", "")) if v else "0"])
    rows.append(["mean", _pct(means, "mean_dsc"), _mm(means, "mean_hd95"), ""])
    return Table(["class", "DSC (%)", "HD95 (mm)", "cases"], rows)


def _comparison_table(metrics: dict[str, dict[str, Any]]) -> Table:
    classes: list[str] = []
    for m in metrics.values():
        classes += [c for c in m.get("classes") or m.get("per_class", {}) if c not in classes]
    header = ["class"] + [f"{name} {col}" for name in metrics for col in ("DSC (%)", "HD95 (mm)")]
    rows = []
    for name in classes:
        row = [name]
        for m in metrics.values():
            v = m.get("per_class", {}).get(name)
            row += [_pct(v, "dsc"), _mm(v, "hd95")]
        rows.append(row)
    rows.append(["mean"] + [x for m in metrics.values() for x in (_pct(m, "mean_dsc"), _mm(m, "mean_hd95"))])
    return Table(header, rows)


def _results_summary(path: Path) -> list[Block]:
    results = _read_json(path)
    if not isinstance(results, dict) or not results:
        return [Heading(2, "Summary"), Paragraph(f"{path.name} is empty or unreadable.")]
    classes: list[str] = []
    for r in results.values():
        if isinstance(r, dict):
            classes += [c for c in r.get("per_class", {}) if c not in classes]
    header = ["method"] + [f"{c} DSC (%)" for c in classes] + ["mean DSC (%)", "mean HD95 (mm)", "wall time"]
    rows = []
    for method, r in results.items():
        r = r if isinstance(r, dict) else {}
        per_class = r.get("per_class", {})
        rows.append(
            [method] + [_pct(per_class.get(c), "dsc") for c in classes]
            + [_pct(r, "mean_dsc"), _mm(r, "mean_hd95"), _duration(r.get("wall_time_s"))]
        )
    blocks: list[Block] = [Heading(2, f"Summary ({path.name})"), Table(header, rows)]
    per_task = [m for m, r in results.items() if isinstance(r, dict) and r.get("scoring") == "per_task"]
    if per_task:
        blocks.append(Paragraph(
            f"{', '.join(per_task)}: task-prompted, scored as their authors do: each class on its own "
            "mask σ > ½ (overlaps allowed); the other methods on their label maps."
        ))
    return blocks


def _markdown_table_blocks(path: Path) -> list[Block]:
    """A compare table file (``# title``, paragraphs, one pipe table) as report blocks."""
    blocks: list[Block] = []
    rows: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):  # not the |---| separator
                rows.append(cells)
        elif line.startswith("# "):
            blocks.append(Heading(3, line[2:]))
        elif line:
            blocks.append(Paragraph(line))
    if rows:
        blocks.append(Table(rows[0], rows[1:]))
    return blocks


# --------------------------------------------------------------------------- helpers


def _in_results_order(method_dirs: list[Path], results: Any) -> list[Path]:
    """Methods in results.json's order (the order the demo ran them), the others after, by name."""
    order = list(results) if isinstance(results, dict) else []
    return sorted(method_dirs, key=lambda d: (order.index(d.name) if d.name in order else len(order), d.name))


def _convention(method_dirs: list[Path]) -> str:
    for d in method_dirs:
        m = _read_json(RunLayout(d).metrics_json)
        if m and m.get("convention"):
            return m["convention"]
    return ""


def _in_run(path: Path, run: RunLayout) -> str:
    """``path`` as the run folder names it, e.g. ``metrics/metrics.json``."""
    return path.relative_to(run.root).as_posix()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ConfigError):
        return None
    return data if isinstance(data, dict) else None


def _number(values: dict[str, Any] | None, key: str) -> float | None:
    value = (values or {}).get(key)
    if isinstance(value, (int, float)) and not math.isnan(value):
        return float(value)
    return None


def _pct(values: dict[str, Any] | None, key: str) -> str:
    x = _number(values, key)
    return "–" if x is None else f"{100 * x:.2f}"


def _mm(values: dict[str, Any] | None, key: str) -> str:
    x = _number(values, key)
    return "–" if x is None else f"{x:.2f}"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "x"
