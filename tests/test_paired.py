"""Paired differences between methods over seeds (tctseg.compare.paired)."""

import math

import pytest
from scipy import stats

from tctseg.compare.paired import paired_differences


def test_differences_mean_sd_and_t_test_by_hand():
    a = [0.60, 0.50, 0.70, 0.55]
    b = [0.50, 0.45, 0.60, 0.56]
    result = paired_differences(a, b)
    diffs = [0.10, 0.05, 0.10, -0.01]
    assert result.differences == pytest.approx(diffs)
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    assert result.mean == pytest.approx(mean) and result.sd == pytest.approx(sd)
    t = mean / (sd / 2.0)
    assert result.t_statistic == pytest.approx(t)
    assert result.t_pvalue == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_exact_wilcoxon_of_five_seeds_all_one_way_is_its_floor():
    # every difference positive: the most extreme of 2^5 sign patterns, two-sided p = 2/32
    result = paired_differences([5, 6, 7, 8, 9], [1, 1, 1, 1, 1])
    assert result.wilcoxon_pvalue == pytest.approx(2 / 32)
    # one negative difference of the smallest size: rank sum of negatives 1 → p = 2·2/32
    result = paired_differences([5, 6, 7, 8, 0.5], [1, 1, 1, 1, 1])
    assert result.wilcoxon_pvalue == pytest.approx(4 / 32)


def test_missing_values_drop_their_pair_and_small_samples_have_no_test():
    result = paired_differences([0.5, None, float("nan"), 0.7], [0.4, 0.3, 0.2, 0.6])
    assert result.pairs == 2 and result.differences == pytest.approx([0.1, 0.1])
    assert math.isnan(result.t_pvalue)  # sd 0: no t-test
    single = paired_differences([0.5], [0.4])
    assert single.pairs == 1 and single.mean == pytest.approx(0.1) and math.isnan(single.sd)
    assert math.isnan(single.wilcoxon_pvalue)
    none = paired_differences([None], [0.4])
    assert none.pairs == 0 and math.isnan(none.mean)
    with pytest.raises(ValueError, match="same number of seeds"):
        paired_differences([0.1, 0.2], [0.1])
