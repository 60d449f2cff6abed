"""Training logs, written by rank 0 only: ``log.csv`` (one row per epoch), TensorBoard
scalars of the same values, and ``progress.png`` with the curves (like nnU-Net's).

A row holds ``epoch``, ``loss_<part>`` for every loss part (epoch means), the ratio parts
a method reports (TCT: ``filter_*``, what the consistency filter did; see
:func:`loss_part_columns`), ``lr``, ``epoch_time_s`` and, after a validation,
``val_dice_<class>`` and ``val_dice_mean`` (the main head) and, for methods with auxiliary
heads, ``val_ath_dice_<class>`` and ``val_ath_dice_mean``.

Every file is written atomically through :func:`tctseg.files.outputs.write_atomically`; a full disk
is an :class:`~tctseg.errors.OutputError` naming the file (TensorBoard: its folder), like a
checkpoint's, and the files written before stay as they were.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from tctseg.files.layout import RunLayout
from tctseg.files.outputs import output_errors, write_atomically
from tctseg.files.run_records import read_log


RATIO_NUM, RATIO_DEN = ":num", ":den"


def loss_part_columns(means: dict[str, float]) -> dict[str, float]:
    """Log columns of one epoch's loss parts (each part's mean over the epoch's steps).

    A plain part ``name`` becomes ``loss_<name>``. A ratio part, reported as the pair
    ``<name>:num`` and ``<name>:den``, becomes ``<name>`` = Σnum / Σden over the epoch (the
    ratio of the means is the ratio of the sums; NaN, an empty cell, when Σden = 0).
    """
    row: dict[str, float] = {}
    for key, value in means.items():
        if key.endswith(RATIO_DEN):
            continue
        if key.endswith(RATIO_NUM):
            name = key[: -len(RATIO_NUM)]
            den = means.get(name + RATIO_DEN, 0.0)
            row[name] = value / den if den > 0 else math.nan
        else:
            row[f"loss_{key}"] = value
    return row


class TrainingLogger:
    """Collects one row per epoch and writes CSV, TensorBoard and the progress plot.

    ``resume_epoch``: epochs already completed by the run being resumed; rows of ``log.csv``
    up to it are kept, later ones (from after the last checkpoint) are dropped.
    """

    def __init__(self, output_dir: str | Path, resume_epoch: int = 0, tensorboard: bool = True):
        self.output_dir = Path(output_dir)
        self.layout = RunLayout(self.output_dir)
        self.rows: list[dict[str, float]] = [
            r for r in read_log(self.layout.log_csv) if resume_epoch and r.get("epoch", math.inf) <= resume_epoch
        ]
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events logged after the checkpoint we resume from
            with self._tensorboard_errors():
                self._writer = SummaryWriter(
                    log_dir=str(self.layout.tensorboard), purge_step=resume_epoch + 1 if resume_epoch else None
                )

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Add one epoch's row (``epoch`` plus float values) and rewrite ``log.csv``."""
        row = {k: float(v) for k, v in row.items()}
        self.rows.append(row)
        self._write_csv()
        if self._writer is not None:
            epoch = int(row["epoch"])
            with self._tensorboard_errors():
                for key, value in row.items():
                    if key != "epoch" and math.isfinite(value):
                        self._writer.add_scalar(_tensorboard_tag(key), value, epoch)
                self._writer.flush()

    def _tensorboard_errors(self):
        """Turn an OSError of the TensorBoard writer (its thread re-raises it on the next call) into an OutputError."""
        return output_errors(self.layout.tensorboard, "TensorBoard events")

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                for row in self.rows:
                    writer.writerow({k: _format(row[k]) if k in row else "" for k in columns})

        write_atomically(self.layout.log_csv, write, "the training log")

    def plot_progress(self) -> Path:
        """Write ``progress.png``: losses, validation DSC, learning rate and epoch time."""
        return plot_progress(self.rows, self.layout.progress_png)

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with self._tensorboard_errors():
                writer.close()


def plot_progress(rows: list[dict[str, float]], path: str | Path) -> Path:
    """Curves of every ``loss_*``, ``val_dice_*``, ``lr`` and ``epoch_time_s`` column over epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    keys = sorted({k for r in rows for k in r})
    filter_keys = [k for k in keys if k.startswith("filter_")]
    fig, axes = plt.subplots(4 if filter_keys else 3, 1, figsize=(9, 14 if filter_keys else 11), sharex=True)

    def curve(ax, key: str, **style) -> None:
        points = [(r["epoch"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=key, **style)

    for key in (k for k in keys if k.startswith("loss_")):
        curve(axes[0], key, linewidth=2 if key == "loss_total" else 1)
    axes[0].set_ylabel("loss (epoch mean)")
    for key in (k for k in keys if k.startswith("val_dice_")):
        curve(axes[1], key, marker="o", linewidth=2 if key == "val_dice_mean" else 1)
    for key in (k for k in keys if k.startswith("val_ath_dice_")):
        curve(axes[1], key, marker=".", linestyle="--", linewidth=2 if key == "val_ath_dice_mean" else 1)
    axes[1].set_ylabel("validation DSC (--: auxiliary heads)")
    if filter_keys:
        for key in (k for k in filter_keys if not k.startswith("filter_term_")):
            curve(axes[2], key, linewidth=2 if key in ("filter_kept_present", "filter_absent") else 1)
        axes[2].set_ylabel("consistency filter\n(fractions, mean IoU)")
    lr_axis = axes[-1]
    curve(lr_axis, "lr", color="tab:blue")
    lr_axis.set_ylabel("learning rate")
    time_axis = lr_axis.twinx()
    curve(time_axis, "epoch_time_s", color="tab:orange")
    time_axis.set_ylabel("epoch time (s)")
    lr_axis.set_xlabel("epoch")
    for ax in axes[:-1]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"), "the progress plot")
    finally:
        plt.close(fig)


def _tensorboard_tag(key: str) -> str:
    for prefix, group in (("loss_", "loss"), ("val_dice_", "val_dice")):
        if key.startswith(prefix):
            return f"{group}/{key[len(prefix):]}"
    return f"train/{key}"


def _format(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else ""
