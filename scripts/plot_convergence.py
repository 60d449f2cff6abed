"""Curves of the convergence study (docs/CONVERGENCE.md): validation DSC against optimizer
steps for every run under runs/convergence/, one line per run, mean DSC and per organ.

    .venv/bin/python scripts/plot_convergence.py [RUN ...]  →  docs/convergence/*.png + a markdown table

Reads each run's log.csv and config.yaml (steps = epoch × train.iterations_per_epoch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from tctseg.files.run_records import read_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "convergence"
OUT = ROOT / "docs" / "convergence"


def load(run: Path) -> tuple[list[dict[str, float]], dict]:
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    return read_log(run / "log.csv"), config


def main(names: list[str]) -> None:
    runs = [RUNS / n for n in names] if names else sorted(p for p in RUNS.iterdir() if (p / "log.csv").is_file())
    OUT.mkdir(parents=True, exist_ok=True)
    data = {r.name: load(r) for r in runs}
    classes = next(iter(data.values()))[1]["classes"]
    keys = ["val_dice_mean"] + [f"val_dice_{c}" for c in classes]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), sharey=True)
    print("| run | steps | wall time (min) | best val mean DSC (step) | last val mean DSC |")
    print("|---|---|---|---|---|")
    for name, (rows, config) in data.items():
        per_epoch = config["train"]["iterations_per_epoch"]
        for ax, key in zip(axes, keys):
            points = [(r["epoch"] * per_epoch, r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), label=name, linewidth=1.2)
        val = [(r["epoch"] * per_epoch, r["val_dice_mean"]) for r in rows if "val_dice_mean" in r]
        wall = sum(r.get("epoch_time_s", 0.0) for r in rows) / 60
        if val:
            best = max(val, key=lambda p: p[1])
            print(f"| {name} | {int(rows[-1]['epoch']) * per_epoch} | {wall:.1f} | {best[1]:.3f} ({best[0]}) | {val[-1][1]:.3f} |")
    for ax, key in zip(axes, keys):
        ax.set_title(key.removeprefix("val_dice_"))
        ax.set_xlabel("optimizer steps")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation DSC (subjects 31, 33)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    name = "-".join(names) if names else "all"
    fig.savefig(OUT / f"val_dice_{name}.png", dpi=70)
    print(f"\nwrote {OUT / f'val_dice_{name}.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
