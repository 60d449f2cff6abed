"""QC validation statistics, checked by hand."""

import math

import pytest

from tctseg.metrics.ranking import auroc_for_low, aurc, aurc_optimal, spearman


def test_auroc_counts_pairs_of_poor_and_good_predictions_by_hand():
    dsc = [0.2, 0.5, 0.8, 0.9]  # two poor (< 0.7), two good
    assert auroc_for_low([0.1, 0.2, 0.3, 0.4], dsc) == 1.0  # every poor pair below every good one
    assert auroc_for_low([0.4, 0.3, 0.2, 0.1], dsc) == 0.0
    # poor signals 0.3, 0.5; good 0.4, 0.5: (0.3<0.4) + (0.3<0.5) + (0.5 vs 0.5 tie: ½) → 2.5 of 4
    assert auroc_for_low([0.3, 0.5, 0.4, 0.5], dsc) == pytest.approx(2.5 / 4)
    assert math.isnan(auroc_for_low([0.1, 0.2], [0.8, 0.9]))  # no poor prediction: undefined


def test_spearman_is_rank_correlation():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = ranks differ by (0, 0, 1, -1): ρ = 1 − 6·2 / (4·15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_aurc_is_the_mean_selective_risk_by_hand():
    dsc = [0.9, 0.5, 0.7]  # risks 0.1, 0.5, 0.3
    # signal orders 0.9, 0.7, 0.5: selective risks 0.1, (0.1+0.3)/2, (0.1+0.3+0.5)/3
    assert aurc([3, 1, 2], dsc) == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert aurc_optimal(dsc) == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    # the worst order: 0.5, 0.7, 0.9 → 0.5, 0.4, 0.3
    assert aurc([1, 3, 2], dsc) == pytest.approx((0.5 + 0.4 + 0.3) / 3)
    # a constant signal knows nothing: every position gets the mean risk
    assert aurc([1, 1, 1], dsc) == pytest.approx(0.3)
    # a tie between the two best-signalled pairs: both kept together
    assert aurc([2, 2, 1], [0.9, 0.7, 0.5]) == pytest.approx((0.2 + 0.2 + 0.3) / 3)
    assert math.isnan(aurc([], []))
