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
    # MSH argmax = [0, 1]: mask1 = [0, 1], mask2 = []; ATH masks [0, 1] and [] → IoU 1 and 1 (both empty)
    assert out.iou[0].tolist() == [1.0, 1.0]
    assert out.keep.all()
    assert consistency_loss(main, probs).item() == pytest.approx(sum(expected))


def filter_case():
    """Two samples, N = 4, ten voxels, with IoU [0.5, 0.5, 0.4, 0] and [0, 1, 0.4, 1]."""
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
    iou = consistency_terms(main, aux_probs, threshold=None).iou
    assert iou.tolist() == [pytest.approx([0.5, 0.5, 0.4, 0.0]), pytest.approx([0.0, 1.0, 0.4, 1.0])]


@pytest.mark.parametrize(
    "threshold, expected_keep",
    [
        # median: θ0 = (0.4 + 0.5)/2 = 0.45; θ1 = (0.4 + 1)/2 = 0.7
        ("median", [[1, 1, 0, 0], [0, 1, 0, 1]]),
        # task mean: θ0 = 1.4/4 = 0.35; θ1 = 2.4/4 = 0.6
        ("task_mean", [[1, 1, 1, 0], [0, 1, 0, 1]]),
        # batch mean per class: θ = [0.25, 0.75, 0.4, 0.5]
        ("batch_mean", [[1, 0, 1, 0], [0, 1, 1, 1]]),
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


def test_confidence_filter_drops_uncertain_heads():
    main, aux_probs = filter_case()
    aux_probs = aux_probs.clone()
    aux_probs[:, 3] = 0.5  # head 4 maximally uncertain: confidence 0
    out = consistency_terms(main, aux_probs, threshold=None, confidence_threshold=0.5)
    # heads 1–3 predict 0.9/0.1 everywhere: confidence 1 − H(0.9, 0.1)/log 2 ≈ 0.531
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    assert out.confidence[0, 0].item() == pytest.approx(1 - h, rel=1e-5)
    assert out.keep.int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 0]]


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
