"""A comparison table: cells formatted as mean ± sd over seeds, written as markdown and CSV.

Every table carries its budget line (epochs, iterations, patch, batch, net, seeds, hardware,
torch, wall time), so a CPU-sized run is never read as the paper's setting::

    <output>/tables/<name>.md    # title, budget line, notes, a pipe table
    <output>/tables/<name>.csv   # "# budget: ..." comment line, then header and rows
"""

from __future__ import annotations

import csv
import io
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tctseg.config import Config
from tctseg.files.outputs import write_atomically

MISSING = "–"
PAPER_BUDGET = "paper: 200 epochs × 250 iterations, patch 192×192×64, batch 4, width 16 depth 5"


@dataclass
class CompareTable:
    """One of the paper's tables for this data: ``rows`` are lists of cell strings under ``header``."""

    name: str
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    budget: str = ""
    notes: list[str] = field(default_factory=list)


def mean_sd(values: Sequence[float | None], scale: float = 1.0, digits: int = 2) -> str:
    """``"m"`` for one value, ``"m ± sd"`` (sample sd, ddof 1) for several; ``–`` when none is finite.

    ``scale`` multiplies first (100 turns a DSC fraction into %). Missing or NaN values are
    left out of both the mean and the sd.
    """
    finite = [scale * float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not finite:
        return MISSING
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return f"{mean:.{digits}f}"
    sd = math.sqrt(sum((x - mean) ** 2 for x in finite) / (len(finite) - 1))
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def hardware_name(device: str) -> str:
    """The GPU's name on CUDA, else the CPU model from /proc/cpuinfo (and its core count)."""
    import os

    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model} ({os.cpu_count()} cores)"


def budget_line(config: Config, seeds: int, device: str, wall_time_s: float, extra: str = "") -> str:
    """``Budget: 2 epochs × 4 iterations/epoch, patch 16×16×8, ...`` for one table."""
    import torch

    t, n = config.train, config.network
    seed_ids = ", ".join(str(t.seed + k) for k in range(seeds))
    parts = [
        f"{plural(t.epochs, 'epoch')} × {plural(t.iterations_per_epoch, 'iteration')}/epoch",
        f"patch {'×'.join(map(str, t.patch_size))}",
        f"batch {t.batch_size}",
        f"net width {n.width} depth {n.depth}",
        f"{plural(seeds, 'seed')} ({seed_ids})",
        hardware_name(device),
        f"torch {torch.__version__}",
        f"wall time {format_duration(wall_time_s)}",
    ]
    if extra:
        parts.append(extra)
    return "Budget: " + ", ".join(parts) + f" ({PAPER_BUDGET})."


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def to_markdown(table: CompareTable) -> str:
    """Title, budget line, notes, then the pipe table."""
    lines = [f"# {table.title}", "", table.budget, ""]
    lines += [f"{note}" for note in table.notes]
    if table.notes:
        lines.append("")
    if table.rows:
        lines.append("| " + " | ".join(table.header) + " |")
        lines.append("|" + "|".join("---" for _ in table.header) + "|")
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def to_csv(table: CompareTable) -> str:
    """A ``# budget`` comment line (``pandas.read_csv(comment="#")`` skips it), header, rows."""
    out = io.StringIO()
    out.write(f"# {table.budget}\n")
    for note in table.notes:
        out.write(f"# {note}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows(table.rows)
    return out.getvalue()


def write_table(table: CompareTable, tables_dir: Path) -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.csv`` (UTF-8) into ``tables_dir``; returns both paths."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = tables_dir / f"{table.name}.md", tables_dir / f"{table.name}.csv"
    write_atomically(md, lambda tmp: tmp.write_text(to_markdown(table), encoding="utf-8"), "a table")
    write_atomically(csv_path, lambda tmp: tmp.write_text(to_csv(table), encoding="utf-8"), "a table")
    return md, csv_path
