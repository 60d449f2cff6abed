"""Paired differences between two methods trained on the same seeds, with two paired tests.

    stats = paired_differences([0.57, 0.21, 0.60], [0.66, 0.64, 0.65])  # method A, method B, per seed
    stats.mean, stats.sd, stats.t_pvalue, stats.wilcoxon_pvalue

Seed k of every method trains on the same data order and initial weights' seed, so the
per-seed difference ``a_k − b_k`` is the paired quantity; with K seeds the tests have K − 1
degrees of freedom (t) or K pairs (Wilcoxon signed-rank, exact). With 5 seeds the smallest
two-sided Wilcoxon p-value is 2/32 = 0.0625: it can never reach 0.05, which a reader should
know before reading it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedDifferences:
    """``differences[k] = a[k] − b[k]`` over the pairs where both are finite, and their summary.

    ``sd`` is the sample sd (ddof 1; NaN for one pair). ``t_pvalue``: two-sided paired t-test
    (NaN under 2 pairs or when every difference is equal). ``wilcoxon_pvalue``: two-sided exact
    Wilcoxon signed-rank test (NaN under 2 pairs or when every difference is 0).
    """

    differences: tuple[float, ...]
    mean: float
    sd: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_pvalue: float

    @property
    def pairs(self) -> int:
        return len(self.differences)


def paired_differences(a: Sequence[float | None], b: Sequence[float | None]) -> PairedDifferences:
    """The paired differences ``a − b`` and their tests; pairs with a missing or NaN side are left out.

    Args:
        a, b: one value per seed, the same length (seed k of both at index k).
    Raises:
        ValueError: when the lengths differ.
    """
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired values need the same number of seeds, got {len(a)} and {len(b)}")
    diffs = tuple(
        float(x) - float(y)
        for x, y in zip(a, b)
        if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
    )
    nan = float("nan")
    if not diffs:
        return PairedDifferences((), nan, nan, nan, nan, nan)
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return PairedDifferences(diffs, mean, nan, nan, nan, nan)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    t_stat = t_p = nan
    if sd > 0:
        t_stat = mean / (sd / math.sqrt(len(diffs)))
        t_p = float(2.0 * stats.t.sf(abs(t_stat), df=len(diffs) - 1))
    w_p = nan
    if any(d != 0 for d in diffs):
        w_p = float(stats.wilcoxon(diffs, alternative="two-sided", method="exact").pvalue)
    return PairedDifferences(diffs, mean, sd, t_stat, t_p, w_p)
