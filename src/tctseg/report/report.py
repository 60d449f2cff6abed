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
and its config. Whatever a run lacks is said in a line, not an error. A file that is there but
cannot be used (``metrics.json`` holding ``[1]``, a ``config.yaml`` that is not UTF-8, a
``per_class`` that is not an object) is left out: the page says so where it would have been,
and :func:`build_report` warns once per file (:class:`~tctseg.errors.TctsegWarning`, one line
``<file>: <what is wrong>; left out of the report``, or ``...; no overlays`` for a prediction
index and ``...; its class list is not used`` for a config whose ``classes`` cannot be read;
the command line prints it).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


import tctseg
from tctseg.config import config_from_dict, read_yaml
from tctseg.errors import ConfigError, DataError, TctsegError, TctsegWarning
from tctseg.files.layout import ExperimentLayout, RunLayout
from tctseg.files.outputs import ensure_writable, output_errors, write_atomically
from tctseg.files.run_records import final_run_folder
from tctseg.inference.predict import training_modality
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
    problems: list[str] = []  # files there but unusable: said on the page and warned, once each
    results = _read_json(results_path, _results_problem, problems)
    method_dirs = _in_results_order(find_method_dirs(run_dir), results)
    table_files = sorted(layout.tables.glob("*.md"))
    if not method_dirs and not results_path.exists() and not table_files:
        signs = ", ".join(str(sign.relative_to(run_dir)) for sign in RunLayout(run_dir).signs)
        raise DataError(
            f"{run_dir}: not a run directory (no {signs} in it or its sub-folders, no {results_path.name})"
        )
    # a read-only or full run folder is one line before anything is read or drawn
    ensure_writable(run_dir, "the report", name=str(layout.report_html))
    blocks: list[Block] = [
        Paragraph(f"Generated {_dt.datetime.now():%Y-%m-%d %H:%M} by tctseg {tctseg.__version__} from {run_dir.resolve()}."),
    ]
    if results_path.exists():
        blocks += _results_summary(results_path, results, problems)
    if table_files:
        blocks.append(Heading(2, "Tables (tctseg compare)"))
        for path in table_files:
            blocks += _markdown_table_blocks(path, problems)
    metrics = {d.name: _read_json(RunLayout(d).metrics_json, _metrics_problem, problems) for d in method_dirs}
    blocks.insert(1, Paragraph("Tables give DSC in % and HD95 in mm. " + _convention(metrics.values())))
    with_metrics = {name: m for name, m in metrics.items() if m}
    if len(with_metrics) > 1:
        blocks += [Heading(2, "Comparison of methods"), _comparison_table(with_metrics)]
    for method_dir in method_dirs:
        blocks += _method_section(method_dir, metrics[method_dir.name], prefix=_slug(method_dir.name),
                                  problems=problems)
    title = f"tctseg report — {run_dir.resolve().name}"
    html_path = layout.report_html
    html = render_html(title, blocks)
    write_atomically(html_path, lambda tmp: tmp.write_text(html, encoding="utf-8"), "the report")
    with output_errors(layout.report_files, "the report's images"):
        for stale in layout.report_files.glob("*.png"):  # images of an earlier report
            stale.unlink()
        markdown = render_markdown(title, blocks, layout.report_files)
    write_atomically(layout.report_md, lambda tmp: tmp.write_text(markdown, encoding="utf-8"), "the report")
    for problem in dict.fromkeys(problems):
        warnings.warn(problem, TctsegWarning, stacklevel=2)
    return html_path


# --------------------------------------------------------------------------- sections


def _method_section(method_dir: Path, metrics: dict[str, Any] | None, prefix: str, problems: list[str]) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Method: {method_dir.name}")]
    run = RunLayout(method_dir)
    config_text = _read_text(run.config_yaml, problems)
    config_classes = _config_classes(run.config_yaml, config_text, problems)
    classes = (metrics or {}).get("classes") or config_classes or []

    blocks.append(Heading(3, "Metrics"))
    unusable = _problem_with(run.metrics_json, problems)
    if unusable:
        blocks.append(Paragraph(f"{unusable}."))
    elif metrics:
        blocks.append(_metric_table(metrics.get("per_class") or {}, metrics, classes))
        per_dataset = metrics.get("per_dataset") or {}
        if len(per_dataset) > 1:
            for name, m in per_dataset.items():
                blocks += [Paragraph(f"Dataset {name}:"), _metric_table(m.get("per_class") or {}, m, classes)]
        n_cases = len({(str(c.get("dataset")), str(c.get("case_id"))) for c in metrics.get("cases") or []})
        blocks.append(Paragraph(f"{n_cases} test case(s); means per class over the cases annotating it."))
    else:
        blocks.append(Paragraph(f"No {_in_run(run.metrics_json, run)} (run `tctseg evaluate`)."))

    blocks.append(Heading(3, "Training curves"))
    training = RunLayout(final_run_folder(method_dir))  # PFL: its final network's curves
    progress_png, log_csv = training.progress_png, training.log_csv
    curves = None
    if progress_png.exists():
        try:
            curves = progress_png.read_bytes()
        except OSError as e:
            problems.append(f"{progress_png}: cannot read it ({e.strerror or e}){LEFT_OUT}")
            blocks.append(Paragraph(f"{problems[-1]}."))
    elif log_csv.exists():
        try:
            curves = training_curves_png(log_csv)
        except UnicodeDecodeError as e:
            problems.append(f"{log_csv}: {_not_utf8(e)}{LEFT_OUT}")
            blocks.append(Paragraph(f"{problems[-1]}."))
        except (OSError, ValueError, csv.Error) as e:
            problems.append(f"{log_csv}: cannot draw it ({_first_line(e)}){LEFT_OUT}")
            blocks.append(Paragraph(f"{problems[-1]}."))
    if curves:
        blocks.append(Image(f"{prefix}_curves.png", curves, f"{method_dir.name}: training curves"))
    elif not log_csv.exists():
        blocks.append(Paragraph(f"No {progress_png.name} or {log_csv.name}."))

    blocks.append(Heading(3, "Prediction vs ground truth"))
    blocks += _overlay_blocks(method_dir, classes, _config_modality(config_text), prefix, problems)

    blocks.append(Heading(3, "Configuration"))
    config_path = run.config_yaml
    unusable = _problem_with(config_path, problems)
    if unusable:
        blocks.append(Paragraph(f"{unusable}."))
    if config_text is not None:
        blocks.append(Preformatted(config_text))
    elif not unusable:
        blocks.append(Paragraph(f"No {config_path.name}."))
    return blocks


def _overlay_blocks(
    method_dir: Path, classes: list[str], modality: str | None, prefix: str, problems: list[str]
) -> list[Block]:
    run = RunLayout(method_dir)
    index_path = run.predictions_index
    if not index_path.exists():
        return [Paragraph(f"No {_in_run(index_path, run)}: no overlays.")]
    if not classes:
        return [Paragraph(f"No class list ({run.metrics_json.name} or {run.config_yaml.name}): no overlays.")]
    skipped: list[str] = []  # cases that cannot be read: said on the page, the other cases drawn
    try:
        overlays = class_overlays(load_index(index_path), list(classes), skipped, default_modality=modality)
    except TctsegError as e:
        problems.append(f"{e}; no overlays")
        return [Paragraph(f"Overlays skipped: {e}")]
    blocks: list[Block] = [Paragraph(f"Case skipped: {p}") for p in skipped] + [
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
        classes += [c for c in m.get("classes") or m.get("per_class") or {} if c not in classes]
    header = ["class"] + [f"{name} {col}" for name in metrics for col in ("DSC (%)", "HD95 (mm)")]
    rows = []
    for name in classes:
        row = [name]
        for m in metrics.values():
            v = (m.get("per_class") or {}).get(name)
            row += [_pct(v, "dsc"), _mm(v, "hd95")]
        rows.append(row)
    rows.append(["mean"] + [x for m in metrics.values() for x in (_pct(m, "mean_dsc"), _mm(m, "mean_hd95"))])
    return Table(header, rows)


def _results_summary(path: Path, results: Any, problems: list[str]) -> list[Block]:
    unusable = _problem_with(path, problems)
    if unusable:
        return [Heading(2, "Summary"), Paragraph(f"{unusable}.")]
    if not isinstance(results, dict) or not results:
        return [Heading(2, "Summary"), Paragraph(f"{path.name} is empty.")]
    classes: list[str] = []
    for r in results.values():
        if isinstance(r, dict):
            classes += [c for c in r.get("per_class") or {} if c not in classes]
    header = ["method"] + [f"{c} DSC (%)" for c in classes] + ["mean DSC (%)", "mean HD95 (mm)", "wall time"]
    rows = []
    for method, r in results.items():
        r = r if isinstance(r, dict) else {}
        per_class = r.get("per_class") or {}
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


def _markdown_table_blocks(path: Path, problems: list[str]) -> list[Block]:
    """A compare table file (``# title``, paragraphs, one pipe table) as report blocks."""
    blocks: list[Block] = []
    rows: list[list[str]] = []
    text = _read_text(path, problems)
    if text is None:
        return [Paragraph(f"{_problem_with(path, problems)}.")]
    for line in text.splitlines():
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


def _convention(metrics: Any) -> str:
    for m in metrics:
        if m and m.get("convention"):
            return m["convention"]
    return ""


def _in_run(path: Path, run: RunLayout) -> str:
    """``path`` as the run folder names it, e.g. ``metrics/metrics.json``."""
    return path.relative_to(run.root).as_posix()


LEFT_OUT = "; left out of the report"


def _read_text(path: Path, problems: list[str]) -> str | None:
    """``path``'s UTF-8 text; None when it is missing, or (its problem appended) unreadable."""
    if not path.exists():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"{path}: {_not_utf8(e)}{LEFT_OUT}")
    except OSError as e:
        problems.append(f"{path}: cannot read it ({e.strerror or e}){LEFT_OUT}")
    return None


def _read_json(path: Path, check: Callable[[Any], str | None], problems: list[str]) -> Any:
    """The JSON document in ``path`` if ``check`` finds nothing wrong with it; None when the file
    is missing or (its problem appended to ``problems``, one line naming the file) unusable."""
    text = _read_text(path, problems)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}){LEFT_OUT}")
        return None
    except RecursionError:
        problems.append(f"{path}: not usable JSON (nested too deeply){LEFT_OUT}")
        return None
    wrong = check(data)
    if wrong:
        problems.append(f"{path}: {wrong}{LEFT_OUT}")
        return None
    return data


def _problem_with(path: Path, problems: list[str]) -> str | None:
    """The problem recorded for ``path`` (None if it has none)."""
    return next((p for p in problems if p.startswith(f"{path}: ")), None)


def _config_classes(path: Path, text: str | None, problems: list[str]) -> list[str] | None:
    """The ``classes`` of a run's config.yaml (for the overlays), None when there are none."""
    if text is None:
        return None
    try:
        data = read_yaml(text)
    except ConfigError as e:
        problems.append(f"{path}: {e}; its class list is not used")
        return None
    classes = data.get("classes") if isinstance(data, dict) else None
    if classes is not None and not _is_names(classes):
        problems.append(f"{path}: 'classes' is {_kind(classes)}, expected a list of class names; its class list is not used")
        return None
    return classes


def _config_modality(text: str | None) -> str | None:
    """The modality predict takes for the run's scans when not told (its training data's:
    :func:`~tctseg.inference.predict.training_modality`), the overlays' window for an index
    that does not record one; None when the config cannot tell."""
    if text is None:
        return None
    try:
        data = read_yaml(text)
        return training_modality(config_from_dict(data)) if isinstance(data, dict) else None
    except TctsegError:
        return None


def _not_utf8(error: UnicodeDecodeError) -> str:
    return (f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}; "
            "save it as UTF-8)")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _kind(value: Any) -> str:
    """A JSON/YAML value's kind in a message: ``a list``, ``a number (5)``."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _per_class_problem(per_class: Any, where: str) -> str | None:
    """What is wrong with a ``per_class`` table ``{class: {dsc, hd95, cases}}`` (None: nothing)."""
    if per_class is None:
        return None
    if not isinstance(per_class, dict):
        return f"'{where}' is {_kind(per_class)}, expected an object of classes"
    for name, values in per_class.items():
        if not isinstance(values, dict):
            return f"'{where}.{name}' is {_kind(values)}, expected an object (dsc, hd95, cases)"
    return None


def _metrics_problem(data: Any) -> str | None:
    """What is wrong with a metrics.json document (format: tctseg.evaluation's ``to_dict``)."""
    if not isinstance(data, dict):
        return f"not a metrics table: {_kind(data)}, expected an object (classes, per_class, ...)"
    if data.get("classes") is not None and not _is_names(data["classes"]):
        return f"'classes' is {_kind(data['classes'])}, expected a list of class names"
    if data.get("convention") is not None and not isinstance(data["convention"], str):
        return f"'convention' is {_kind(data['convention'])}, expected a string"
    problem = _per_class_problem(data.get("per_class"), "per_class")
    if problem:
        return problem
    per_dataset = data.get("per_dataset")
    if per_dataset is not None:
        if not isinstance(per_dataset, dict):
            return f"'per_dataset' is {_kind(per_dataset)}, expected an object of datasets"
        problem = _objects_problem(per_dataset, "per_dataset.", "an object")
        if problem:
            return problem
    cases = data.get("cases")
    if cases is not None and not (isinstance(cases, list) and all(isinstance(c, dict) for c in cases)):
        return f"'cases' is {_kind(cases)}, expected a list of objects"
    return None


def _results_problem(data: Any) -> str | None:
    """What is wrong with a results.json document (``{method: {per_class, mean_dsc, ...}}``)."""
    if not isinstance(data, dict):
        return f"not a results table: {_kind(data)}, expected an object of methods"
    return _objects_problem(data, "", "an object (per_class, mean_dsc, ...)")


def _objects_problem(objects: dict, prefix: str, expected: str) -> str | None:
    """What is wrong with ``{name: {per_class: ...}, ...}`` (per dataset or per method), if anything."""
    for name, entry in objects.items():
        if not isinstance(entry, dict):
            return f"'{prefix}{name}' is {_kind(entry)}, expected {expected}"
        problem = _per_class_problem(entry.get("per_class"), f"{prefix}{name}.per_class")
        if problem:
            return problem
    return None


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
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "x"
