"""Training curves drawn from a run's ``log.csv`` (when the trainer left no ``progress.png``).

``log.csv`` has one row per logged step (usually per epoch) and any of the columns
``epoch``, ``loss_total``, ``loss_<part>``, ``val_dice_<class>``, for TCT runs
``val_ath_dice_<class>`` (the auxiliary heads' own validation DSC) and the consistency
filter's ``filter_*`` columns; missing columns and empty cells (e.g. validation only every
few epochs) are tolerated.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tctseg.files.run_records import read_log_columns  # noqa: E402


def training_curves_png(log_csv: str | Path) -> bytes | None:
    """A PNG with losses, validation Dice per class (main head solid, auxiliary heads dashed)
    and, for TCT runs, the consistency filter (present pairs kept, their mean IoU, absent
    pairs, per-class kept fraction); None if nothing to plot."""
    log = read_log_columns(log_csv)
    losses = [k for k in log if k.startswith("loss") and _has_values(log[k])]
    dices = [k for k in log if k.startswith(("val_dice", "val_ath_dice")) and _has_values(log[k])]
    filters = [k for k in log if k.startswith("filter_") and not k.startswith("filter_term_") and _has_values(log[k])]
    if not losses and not dices:
        return None
    n_rows = len(next(iter(log.values())))
    x = log["epoch"] if "epoch" in log and _has_values(log["epoch"]) else list(range(n_rows))
    panels = [p for p in (("losses", losses), ("validation Dice (--: auxiliary heads)", dices),
                          ("consistency filter", filters)) if p[1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(a, b) for a, b in zip(x, log[key]) if not (math.isnan(a) or math.isnan(b))]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None,
                    linestyle="--" if key.startswith("val_ath_dice") else "-",
                    linewidth=2.0 if key in ("loss_total", "filter_kept_present") else 1.2,
                    label=key.removeprefix("val_dice_").removeprefix("filter_"))
        ax.set_title(title)
        ax.set_xlabel("epoch" if "epoch" in log else "step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax, (title, _) in zip(axes[0], panels):
        if title != "losses":
            ax.set_ylim(0, 1)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _has_values(values: list[float]) -> bool:
    return any(not math.isnan(v) for v in values)
