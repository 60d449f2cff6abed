"""How well a per-organ quality signal ranks predictions by their true DSC (QC validation).

- :func:`spearman`: Spearman's rank correlation between signal and DSC (scipy; ties get
  their average rank). A useful signal correlates positively.
- :func:`auroc_for_low`: the AUROC of the signal as a detector of poor predictions
  (``DSC < cutoff``): the probability that a randomly drawn poor pair has a LOWER signal
  than a randomly drawn good one, ties counting one half (the Mann–Whitney U statistic
  divided by ``n_poor · n_good``). 0.5 is chance, 1.0 a perfect flag.
- :func:`aurc`: the area under the risk–coverage curve (Jaeger et al., ICLR 2023; the
  failure-detection benchmark of Zenk et al., MedIA 2025, with risk ``1 − DSC``): keep the k
  predictions with the highest signal, their mean risk is the selective risk at coverage
  k/n; AURC is the mean of the selective risks over k = 1..n. Lower is better; a signal that
  knows nothing scores the mean risk, one that orders by the true DSC scores
  :func:`aurc_optimal`. Pairs with equal signals are kept or left together: each of their
  positions gets the selective risk with the whole group kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def spearman(signal: Sequence[float], dsc: Sequence[float]) -> float:
    """Spearman's ρ between two equal-length sequences (NaN when either is constant)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(signal, dtype=np.float64), np.asarray(dsc, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"signal {x.shape} and dsc {y.shape} must be equal-length 1-D sequences")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def auroc_for_low(signal: Sequence[float], dsc: Sequence[float], cutoff: float = 0.7) -> float:
    """AUROC of "low signal" for "DSC < cutoff" (module docstring); NaN when one group is empty."""
    x, y = np.asarray(signal, dtype=np.float64), np.asarray(dsc, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"signal {x.shape} and dsc {y.shape} must be equal-length 1-D sequences")
    poor, good = x[y < cutoff], x[y >= cutoff]
    if poor.size == 0 or good.size == 0:
        return float("nan")
    lower = (poor[:, None] < good[None, :]).sum() + 0.5 * (poor[:, None] == good[None, :]).sum()
    return float(lower / (poor.size * good.size))


def aurc(signal: Sequence[float], dsc: Sequence[float]) -> float:
    """Area under the risk–coverage curve of ``signal`` with risk ``1 − dsc`` (module docstring)."""
    x, y = np.asarray(signal, dtype=np.float64), np.asarray(dsc, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"signal {x.shape} and dsc {y.shape} must be equal-length 1-D sequences")
    if x.size == 0:
        return float("nan")
    order = np.argsort(-x, kind="stable")
    risk = 1.0 - y[order]
    kept = np.arange(1, x.size + 1)
    selective = np.cumsum(risk) / kept
    # a group of equal signals is kept whole: every position takes the risk at the group's end
    ends = np.r_[np.flatnonzero(np.diff(x[order]) != 0), x.size - 1]
    group_end = np.repeat(ends, np.diff(np.r_[-1, ends]))
    return float(selective[group_end].mean())


def aurc_optimal(dsc: Sequence[float]) -> float:
    """The lowest AURC any signal can reach on ``dsc``: the one that orders by DSC itself."""
    return aurc(dsc, dsc)
