"""How well a per-organ quality signal ranks predictions by their true DSC (QC validation).

- :func:`spearman`: Spearman's rank correlation between signal and DSC (scipy; ties get
  their average rank). A useful signal correlates positively.
- :func:`auroc_for_low`: the AUROC of the signal as a detector of poor predictions
  (``DSC < cutoff``): the probability that a randomly drawn poor pair has a LOWER signal
  than a randomly drawn good one, ties counting one half (the Mann–Whitney U statistic
  divided by ``n_poor · n_good``). 0.5 is chance, 1.0 a perfect flag.
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
