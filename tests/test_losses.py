"""Loss values computed by hand on tiny tensors (SPEC Eq. 1–7), not by calling the code twice."""

import math

import pytest
import torch

from tctseg.losses import (
    UncertaintyWeightedLoss,
    auxiliary_dice_loss,
    consistency_loss,
    consistency_terms,
    marginal_dice_loss,
    sigmoid_rampup,
)

EPS = 1e-5


def dice(i, p, y):
    return (2 * i + EPS) / (p + y + EPS)


def as_probs(rows, dtype=torch.float64):
    """rows: per-voxel channel probabilities → [1, C, 1, 1, V]."""
    return torch.tensor(rows, dtype=dtype).T.reshape(1, len(rows[0]), 1, 1, len(rows))


# ---------------------------------------------------------------- Eq. 1-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_marginal_dice_merges_unannotated_classes_into_background(dtype):
    # N = 2, two voxels; the sample annotates class 1 only, so p^2 joins the background
    main = as_probs([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], dtype)
    labels = torch.tensor([0, 1]).reshape(1, 1, 1, 2)
    annotated = torch.tensor([[True, False]])
    # q0 = p0 + p2 = [0.7, 0.4], y0 = [1, 0];  q1 = [0.3, 0.6], y1 = [0, 1]
    expected = 1 - (dice(0.7, 1.1, 1) + dice(0.6, 0.9, 1)) / 2
    got = marginal_dice_loss(main, labels, annotated)
    assert got.dtype == dtype
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_marginal_dice_all_annotated_is_plain_dice():
    main = as_probs([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    labels = torch.tensor([0, 1]).reshape(1, 1, 1, 2)
    # q = p; classes {0, 1, 2}; y2 is empty
    expected = 1 - (dice(0.5, 0.6, 1) + dice(0.6, 0.9, 1) + dice(0.0, 0.5, 0)) / 3
    assert marginal_dice_loss(main, labels, torch.tensor([[True, True]])).item() == pytest.approx(expected)


def test_marginal_dice_nothing_annotated_is_zero():
    # every class merges into the background, which then covers the all-zero labels exactly
    main = as_probs([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    labels = torch.zeros(1, 1, 1, 2, dtype=torch.long)
    assert marginal_dice_loss(main, labels, torch.tensor([[False, False]])).item() == pytest.approx(0.0, abs=1e-9)


def test_marginal_dice_empty_annotated_class_predicted_empty_counts_as_perfect():
    # class 1 annotated but absent and predicted with probability 0: dice = ε/ε = 1
    main = as_probs([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 2]).reshape(1, 1, 1, 2)
    assert marginal_dice_loss(main, labels, torch.tensor([[True, True]])).item() == pytest.approx(0.0, abs=1e-6)


def test_marginal_dice_is_a_per_sample_mean_over_the_batch():
    a = as_probs([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    b = as_probs([[0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    la = torch.tensor([0, 1]).reshape(1, 1, 1, 2)
    lb = torch.tensor([2, 0]).reshape(1, 1, 1, 2)
    # sample b annotates class 2 only: q0 = p0 + p1 = [0.4, 0.6], y0 = [0, 1]; q2 = [0.6, 0.4], y2 = [1, 0]
    loss_a = 1 - (dice(0.7, 1.1, 1) + dice(0.6, 0.9, 1)) / 2
    loss_b = 1 - (dice(0.6, 1.0, 1) + dice(0.6, 1.0, 1)) / 2
    got = marginal_dice_loss(torch.cat([a, b]), torch.cat([la, lb]), torch.tensor([[True, False], [False, True]]))
    assert got.item() == pytest.approx((loss_a + loss_b) / 2)


def test_marginal_dice_rejects_mismatched_shapes():
    main = as_probs([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    with pytest.raises(ValueError, match="annotated"):
        marginal_dice_loss(main, torch.zeros(1, 1, 1, 2, dtype=torch.long), torch.tensor([[True, False, True]]))


# ---------------------------------------------------------------- Eq. 3-4


def aux(heads, dtype=torch.float64):
    """heads: per head, per-voxel foreground probability → [1, N, 2, 1, 1, V]."""
    g1 = torch.tensor(heads, dtype=dtype)
    return torch.stack([1 - g1, g1], dim=1).reshape(1, len(heads), 2, 1, 1, len(heads[0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auxiliary_dice_only_annotated_heads_count(dtype):
    probs = aux([[0.2, 0.9], [0.5, 0.5]], dtype)
    labels = torch.tensor([0, 1]).reshape(1, 1, 1, 2)
    # head 1: g1 = [0.2, 0.9] vs y = [0, 1]; g0 = [0.8, 0.1] vs 1 - y = [1, 0]; head 2 unannotated
    expected = 1 - 0.5 * (dice(0.8, 0.9, 1) + dice(0.9, 1.1, 1))
    got = auxiliary_dice_loss(probs, labels, torch.tensor([[True, False]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_auxiliary_dice_sums_over_heads_and_averages_over_batch():
    probs = torch.cat([aux([[0.2, 0.9], [0.5, 0.5]]), aux([[0.0, 0.0], [0.5, 0.5]])])
    labels = torch.tensor([[0, 1], [0, 2]]).reshape(2, 1, 1, 2)
    annotated = torch.tensor([[True, True], [False, False]])
    head1 = 1 - 0.5 * (dice(0.8, 0.9, 1) + dice(0.9, 1.1, 1))
    # head 2 on sample 0: y2 empty; g1 = [0.5, 0.5], g0 = [0.5, 0.5] vs 1 - y = [1, 1]
    head2 = 1 - 0.5 * (dice(1.0, 1.0, 2) + dice(0.0, 1.0, 0))
    got = auxiliary_dice_loss(probs, labels, annotated)
    assert got.item() == pytest.approx((head1 + head2 + 0.0) / 2)


def test_auxiliary_dice_no_annotation_is_zero():
    probs = aux([[0.2, 0.9], [0.5, 0.5]])
    assert auxiliary_dice_loss(probs, torch.zeros(1, 1, 1, 2, dtype=torch.long), torch.tensor([[False, False]])) == 0


# ---------------------------------------------------------------- Eq. 5-6


def test_consistency_terms_by_hand():
    main = as_probs([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    probs = aux([[0.4, 0.8], [0.0, 0.3]])
    out = consistency_terms(main, probs)
    # g0 = 1 - g1, so each voxel adds 2·(p - g)²; divided by 2·N_v = 4
    expected = [2 * ((0.3 - 0.4) ** 2 + (0.7 - 0.8) ** 2) / 4, 2 * ((0.1 - 0.0) ** 2 + (0.1 - 0.3) ** 2) / 4]
    assert out.terms[0].tolist() == pytest.approx(expected)
    # MSH argmax = [0, 1]: mask1 = {1}, mask2 = {}; ATH masks {1} and {} → class 1 IoU 1,
    # class 2 absent (both masks empty): no IoU, and its term is kept
    assert out.iou[0, 0].item() == 1.0 and math.isnan(out.iou[0, 1].item())
    assert out.present.tolist() == [[True, False]]
    assert out.keep.tolist() == [[True, True]]
    assert consistency_loss(main, probs).item() == pytest.approx(sum(expected))


def filter_case():
    """Two samples, N = 4, ten voxels, with IoU [0.5, 0.5, 0.4, 0] and [0, 1, 0.4, absent]
    (sample 1: neither head finds class 4)."""
    main_maps = [[1, 1, 2, 2, 3, 3, 0, 0, 0, 4], [1, 0, 2, 3, 3, 0, 0, 0, 0, 0]]
    aux_masks = [
        [{0}, {3}, {4, 5, 6, 7, 8}, set()],
        [{1}, {2}, {3, 4, 5, 6, 7}, set()],
    ]
    main = torch.full((2, 5, 10), 0.1 / 4)
    for b, row in enumerate(main_maps):
        for v, c in enumerate(row):
            main[b, c, v] = 0.9
    g1 = torch.full((2, 4, 10), 0.1)
    for b, heads in enumerate(aux_masks):
        for j, voxels in enumerate(heads):
            for v in voxels:
                g1[b, j, v] = 0.9
    aux_probs = torch.stack([1 - g1, g1], dim=2)
    return main.reshape(2, 5, 1, 1, 10), aux_probs.reshape(2, 4, 2, 1, 1, 10)


def test_iou_values_of_the_filter_case():
    main, aux_probs = filter_case()
    out = consistency_terms(main, aux_probs, threshold=None)
    assert out.iou[0].tolist() == pytest.approx([0.5, 0.5, 0.4, 0.0])
    assert out.iou[1, :3].tolist() == pytest.approx([0.0, 1.0, 0.4]) and math.isnan(out.iou[1, 3].item())
    assert out.present.tolist() == [[True] * 4, [True, True, True, False]]
    # the earlier rule stored the absent class as IoU 1
    assert consistency_terms(main, aux_probs, threshold=None, empty="as_one").iou[1, 3].item() == 1.0


@pytest.mark.parametrize(
    "threshold, expected_keep",
    [
        # median over the present classes: sample 0 has four (even: θ0 = (0.4 + 0.5)/2 = 0.45),
        # sample 1 three (odd: θ1 = the middle value 0.4); sample 1's absent class 4 is kept
        ("median", [[1, 1, 0, 0], [0, 1, 1, 1]]),
        # task mean: θ0 = 1.4/4 = 0.35; θ1 = 1.4/3 ≈ 0.467
        ("task_mean", [[1, 1, 1, 0], [0, 1, 0, 1]]),
        # batch mean per class over the samples where it is present: θ = [0.25, 0.75, 0.4, 0]
        # (class 4 is present in sample 0 only, so θ4 is that sample's IoU 0)
        ("batch_mean", [[1, 0, 1, 1], [0, 1, 1, 1]]),
        (0.5, [[1, 1, 0, 0], [0, 1, 0, 1]]),
        (0.4, [[1, 1, 1, 0], [0, 1, 1, 1]]),
        (None, [[1, 1, 1, 1], [1, 1, 1, 1]]),
    ],
)
def test_every_threshold_keeps_exactly_the_expected_terms(threshold, expected_keep):
    main, aux_probs = filter_case()
    out = consistency_terms(main, aux_probs, threshold=threshold)
    assert out.keep.int().tolist() == expected_keep
    keep = torch.tensor(expected_keep, dtype=out.terms.dtype)
    assert consistency_loss(main, aux_probs, threshold=threshold).item() == pytest.approx(
        (out.terms * keep).sum().item() / 2
    )


def test_median_of_an_odd_number_of_classes_is_the_middle_value():
    main, aux_probs = filter_case()
    # drop class 4: IoU [0.5, 0.5, 0.4] → θ = 0.5; [0, 1, 0.4] → θ = 0.4
    out = consistency_terms(main[:, :4], aux_probs[:, :3], threshold="median")
    assert out.keep.int().tolist() == [[1, 1, 0], [0, 1, 1]]


def present_organs_case():
    """The issue's reproduction: one sample, N = 5, 40 voxels. Organ 1: MSH mask voxels 0–19,
    ATH mask 0–18 (IoU 0.95). Organ 2: MSH 20–29, ATH 20–26 (IoU 0.70). Organs 3–5: absent
    from both heads. The heads' probabilities differ a little everywhere, so every term > 0."""
    v = 40
    main_map = [1] * 20 + [2] * 10 + [0] * 10
    ath_fg = [set(range(19)), set(range(20, 27)), set(), set(), set()]
    main = torch.full((1, 6, v), 0.1 / 5, dtype=torch.float64)
    for i, c in enumerate(main_map):
        main[0, c, i] = 0.9
    g1 = torch.full((1, 5, v), 0.05, dtype=torch.float64)
    for j, voxels in enumerate(ath_fg):
        for i in voxels:
            g1[0, j, i] = 0.8
    aux_probs = torch.stack([1 - g1, g1], dim=2)
    return main.reshape(1, 6, 1, 1, v), aux_probs.reshape(1, 5, 2, 1, 1, v)


@pytest.mark.parametrize(
    "empty, expected_keep",
    [
        # θ = median(0.95, 0.70) = 0.825 over the two present organs: organ 1 kept, organ 2
        # not; the absent organs' terms are kept (the heads agree they are not there)
        ("keep", [True, False, True, True, True]),
        ("drop", [True, False, False, False, False]),
        # the earlier rule: IoU [0.95, 0.70, 1, 1, 1], θ = 1: only the empty classes count
        ("as_one", [False, False, True, True, True]),
    ],
)
def test_the_filter_acts_on_the_present_organs(empty, expected_keep):
    main, aux_probs = present_organs_case()
    out = consistency_terms(main, aux_probs, threshold="median", empty=empty)
    assert out.iou[0, :2].tolist() == pytest.approx([0.95, 0.70])
    assert out.present.tolist() == [[True, True, False, False, False]]
    assert out.keep.tolist() == [expected_keep]
    kept = sum(t for t, k in zip(out.terms[0].tolist(), expected_keep) if k)
    assert consistency_loss(main, aux_probs, threshold="median", empty=empty).item() == pytest.approx(kept)
    # the present organ's term is what the method exists for: far larger than an absent one's
    assert out.terms[0, 0] > 10 * out.terms[0, 2]


def test_the_previous_rule_kept_almost_nothing_of_the_reproduction():
    main, aux_probs = present_organs_case()
    unfiltered = consistency_loss(main, aux_probs, threshold=None).item()
    assert consistency_loss(main, aux_probs, empty="as_one").item() < 0.05 * unfiltered
    assert consistency_loss(main, aux_probs, empty="keep").item() > 0.3 * unfiltered


def test_a_sample_with_no_present_class_keeps_all_its_terms():
    main = as_probs([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]])  # MSH: background everywhere
    probs = aux([[0.1, 0.3], [0.2, 0.4]])  # ATHs: g1 < 0.5 everywhere
    for threshold in ("median", "task_mean", "batch_mean", 0.5):
        out = consistency_terms(main, probs, threshold=threshold)
        assert out.present.tolist() == [[False, False]]
        assert out.keep.tolist() == [[True, True]]
        assert consistency_terms(main, probs, threshold=threshold, empty="drop").keep.tolist() == [[False, False]]
        assert consistency_terms(main, probs, threshold=threshold, empty="as_one").keep.tolist() == [[True, True]]


def test_unknown_empty_rule_is_refused():
    main, aux_probs = filter_case()
    with pytest.raises(ValueError, match="empty"):
        consistency_terms(main, aux_probs, empty="ignore")


def spec_reference(main, aux_probs, threshold, empty):
    """SPEC "Eq. 5–6" written out in plain numpy loops: (terms, keep, loss)."""
    import numpy as np

    main = main.detach().numpy().reshape(main.shape[0], main.shape[1], -1)
    g = aux_probs.detach().numpy().reshape(*aux_probs.shape[:3], -1)
    b_count, n = main.shape[0], main.shape[1] - 1
    argmax = main.argmax(1)
    terms = np.zeros((b_count, n))
    iou = np.full((b_count, n), np.nan)
    for b in range(b_count):
        for j in range(1, n + 1):
            p = main[b, j]
            terms[b, j - 1] = (((1 - p) - g[b, j - 1, 0]) ** 2 + (p - g[b, j - 1, 1]) ** 2).sum() / (2 * p.size)
            m, a = argmax[b] == j, g[b, j - 1, 1] > g[b, j - 1, 0]
            union = (m | a).sum()
            if union:
                iou[b, j - 1] = (m & a).sum() / union
            elif empty == "as_one":
                iou[b, j - 1] = 1.0
    present = ~np.isnan(iou)
    keep = np.zeros((b_count, n), dtype=bool)
    for b in range(b_count):
        for j in range(n):
            if threshold is None:
                keep[b, j] = True
                continue
            if not present[b, j]:
                keep[b, j] = empty == "keep"
                continue
            if threshold == "median":
                theta = np.median(iou[b][present[b]])
            elif threshold == "task_mean":
                theta = np.mean(iou[b][present[b]])
            elif threshold == "batch_mean":
                theta = np.mean(iou[:, j][present[:, j]])
            else:
                theta = threshold
            keep[b, j] = iou[b, j] >= theta
    return terms, keep, (terms * keep).sum(1).mean()


@pytest.mark.parametrize("threshold", ["median", "task_mean", "batch_mean", 0.5, None])
@pytest.mark.parametrize("empty", ["keep", "drop", "as_one"])
def test_filter_equals_the_spec_on_random_inputs_with_absent_classes(threshold, empty):
    import numpy as np

    generator = torch.Generator().manual_seed(7)
    batch, n, shape = 6, 5, (6, 5, 4)
    main_logits = torch.randn(batch, n + 1, *shape, generator=generator, dtype=torch.float64)
    aux_logits = torch.randn(batch, n, 2, *shape, generator=generator, dtype=torch.float64)
    # make some classes absent from both heads in some samples, some present in one sample only
    absent = torch.rand(batch, n, generator=generator) < 0.45
    absent[:, 0] = True
    absent[2, 0] = False
    for b, j in absent.nonzero().tolist():
        main_logits[b, j + 1] -= 20.0
        aux_logits[b, j, 1] -= 20.0
    main, aux_probs = main_logits.softmax(1), aux_logits.softmax(2)
    out = consistency_terms(main, aux_probs, threshold=threshold, empty=empty)
    terms, keep, loss = spec_reference(main, aux_probs, threshold, empty)
    assert (~out.present).sum() >= batch  # the case does hold absent classes
    np.testing.assert_allclose(out.terms.numpy(), terms, rtol=0, atol=1e-6)
    assert out.keep.numpy().tolist() == keep.tolist()
    assert abs(consistency_loss(main, aux_probs, threshold=threshold, empty=empty).item() - loss) < 1e-6


def confidence_case(g_head2):
    """N = 2, four voxels. Main head: class 1 on voxels 0–1, background on 2–3 (p = 0.8 for
    its argmax, 0.1 for the other two channels). ATH 1 agrees on voxels 0–1 (g¹ = 0.9 there,
    0.1 elsewhere: confident, IoU 1); ATH 2's foreground probability per voxel is ``g_head2``."""
    main = as_probs([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.8, 0.1, 0.1]])
    g = torch.tensor([[0.9, 0.9, 0.1, 0.1], g_head2], dtype=torch.float64)  # [N, V]
    aux_probs = torch.stack([1 - g, g], dim=1).reshape(1, 2, 2, 1, 1, 4)
    return main, aux_probs


def confidence(g):
    return 1 + (g * math.log(g) + (1 - g) * math.log(1 - g)) / math.log(2)


def test_confidence_strategy_keeps_a_term_the_iou_filter_drops():
    # ATH 2 finds class 2 on voxel 3 with g = 0.95 (confident), the main head does not: IoU 0
    # against ATH 1's 1, θ = median = 0.5, so the IoU filter drops term 2
    main, aux_probs = confidence_case([0.02, 0.02, 0.02, 0.95])
    iou = consistency_terms(main, aux_probs, threshold="median")
    assert iou.iou[0].tolist() == [1.0, 0.0] and iou.keep.tolist() == [[True, False]]
    # every voxel of both heads is confident (c(0.9) ≈ 0.53, c(0.02) ≈ 0.86, c(0.95) ≈ 0.71 ≥ 0.5):
    # both terms kept, each the mean of (p − g)² over the four voxels
    assert min(confidence(0.9), confidence(0.02), confidence(0.95)) >= 0.5
    out = consistency_terms(main, aux_probs, filter="confidence")
    assert out.keep.tolist() == [[True, True]]
    term1 = (2 * (0.8 - 0.9) ** 2 + 2 * (0.1 - 0.1) ** 2) / 4
    term2 = (3 * (0.1 - 0.02) ** 2 + (0.1 - 0.95) ** 2) / 4
    assert out.terms[0].tolist() == pytest.approx([term1, term2])
    assert out.confident.tolist() == [[1.0, 1.0]]
    assert consistency_loss(main, aux_probs, filter="confidence").item() == pytest.approx(term1 + term2)
    assert consistency_loss(main, aux_probs).item() == pytest.approx(term1)  # the IoU filter's


def test_iou_filter_keeps_a_term_the_confidence_strategy_drops_or_thins():
    # ATH 2 undecided everywhere (g = 0.5: confidence 0) and the main head never predicts class
    # 2: class 2 is absent from both masks, so the IoU filter keeps its term (empty="keep")...
    main, aux_probs = confidence_case([0.5, 0.5, 0.5, 0.5])
    iou = consistency_terms(main, aux_probs)
    assert iou.keep.tolist() == [[True, True]]
    assert iou.terms[0, 1].item() == pytest.approx((0.1 - 0.5) ** 2)
    # ... and the confidence strategy leaves every voxel out: term 0, not kept
    out = consistency_terms(main, aux_probs, filter="confidence")
    assert out.keep.tolist() == [[True, False]] and out.terms[0, 1].item() == 0.0
    assert out.confident[0].tolist() == [1.0, 0.0]
    # half-confident: only voxels 2 and 3 (g = 0.05, c ≈ 0.71) count, averaged over those two
    main, aux_probs = confidence_case([0.5, 0.6, 0.05, 0.05])
    assert confidence(0.6) < 0.5 <= confidence(0.05)
    out = consistency_terms(main, aux_probs, filter="confidence")
    assert out.confident[0, 1].item() == 0.5
    assert out.terms[0, 1].item() == pytest.approx(((0.1 - 0.05) ** 2 + (0.1 - 0.05) ** 2) / 2)


def test_consistency_does_not_train_the_auxiliary_heads_by_default():
    torch.manual_seed(0)
    main_logits = torch.randn(2, 3, 4, 4, 2, requires_grad=True)
    aux_logits = torch.randn(2, 2, 2, 4, 4, 2, requires_grad=True)

    def run(**kwargs):
        main_logits.grad = aux_logits.grad = None
        loss = consistency_loss(main_logits.softmax(1), aux_logits.softmax(2), threshold=None, **kwargs)
        loss.backward()

    run()
    assert aux_logits.grad is None
    assert main_logits.grad.abs().sum() > 0
    run(detach_aux=False)
    assert aux_logits.grad.abs().sum() > 0


def test_consistency_rejects_mismatched_heads():
    with pytest.raises(ValueError):
        consistency_terms(torch.rand(1, 3, 4), torch.rand(1, 3, 2, 4))


# ---------------------------------------------------------------- Eq. 7 and ramp-up


def test_uncertainty_weighting_value_and_gradient():
    weighting = UncertaintyWeightedLoss(2)
    assert weighting.log_vars.shape == (2,) and weighting.log_vars.requires_grad
    l1, l2 = torch.tensor(0.8), torch.tensor(0.3)
    # s = 0: exp(0)·L + 0 → L1 + L2
    assert weighting([l1, l2]).item() == pytest.approx(1.1)
    weighting([l1, l2]).backward()
    # d/ds [exp(−s)·L + s/2] at s = 0 is 0.5 − L
    assert weighting.log_vars.grad.tolist() == pytest.approx([0.5 - 0.8, 0.5 - 0.3])
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([math.log(2.0), 0.0]))
    assert weighting([l1, l2]).item() == pytest.approx(0.8 / 2 + 0.3 + 0.5 * math.log(2.0))


def test_uncertainty_weighting_counts_its_terms():
    with pytest.raises(ValueError):
        UncertaintyWeightedLoss(3)([torch.tensor(1.0), torch.tensor(2.0)])


@pytest.mark.parametrize(
    "t, length, expected",
    [(0, 10, math.exp(-5)), (5, 10, math.exp(-1.25)), (10, 10, 1.0), (25, 10, 1.0), (-3, 10, math.exp(-5)), (7, 0, 1.0)],
)
def test_sigmoid_rampup(t, length, expected):
    assert sigmoid_rampup(t, length) == pytest.approx(expected)
