"""The partial-label primitives (tctseg.losses.partial_labels), by hand on tiny tensors."""

import pytest
import torch
import torch.nn.functional as F

from tctseg.losses.partial_labels import (
    marginal_log_probs,
    mean_over_annotated,
    merge_unannotated_into_background,
    one_hot_masks,
    unannotated_mask,
)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("first", [0, 1])
def test_one_hot_masks_equal_f_one_hot_values_and_layout(channels_last, first):
    labels = torch.tensor([[[0, 1, 3], [2, 2, 0]]])  # [1, 2, 3]
    masks = one_hot_masks(labels, 4, torch.float32, channels_last=channels_last, first=first)
    reference = F.one_hot(labels, 4).movedim(-1, 1)[:, first:].to(torch.float32)
    assert torch.equal(masks, reference)
    assert masks[0, 2 - first, 1].tolist() == [1.0, 1.0, 0.0]  # [labels == 2] on the second row
    if channels_last:  # F.one_hot's layout: the channel varies fastest in memory
        assert masks.stride(1) == 1 and masks.stride() == reference.stride()
    else:
        assert masks.is_contiguous()


def test_one_hot_masks_give_an_out_of_range_id_no_channel():
    masks = one_hot_masks(torch.tensor([[5, 1]]), 3, torch.float32)
    assert masks[0, :, 0].tolist() == [0.0, 0.0, 0.0] and masks[0, :, 1].tolist() == [0.0, 1.0, 0.0]


def test_merge_unannotated_into_background_by_hand():
    # one voxel, p = (0.1, 0.2, 0.3, 0.4); the sample annotates class 2 only
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, 4, 1)
    annotated = torch.tensor([[False, True, False]])
    q = merge_unannotated_into_background(probs, annotated)
    assert q.flatten().tolist() == pytest.approx([0.1 + 0.2 + 0.4, 0.2, 0.3, 0.4])
    assert unannotated_mask(annotated, 3, torch.float32).flatten().tolist() == [1.0, 0.0, 1.0]


def test_marginal_log_probs_are_the_log_of_the_merged_probabilities():
    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    annotated = torch.tensor([[True, False, False], [False, True, True]])
    expected = merge_unannotated_into_background(torch.softmax(logits, 1), annotated)
    assert torch.allclose(marginal_log_probs(logits, annotated).exp(), expected, atol=1e-6)


def test_mean_over_annotated_pairs_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    annotated = torch.tensor([[True, False, True], [False, False, True]])
    assert mean_over_annotated(values, annotated).item() == pytest.approx((1 + 3 + 6) / 3)
    assert mean_over_annotated(values, torch.zeros_like(annotated)).item() == 0.0
