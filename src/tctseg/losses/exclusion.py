"""ME's exclusion loss (Shi et al. 2021; official ``dice_loss.py``, ``expand_gt`` ≈ lines 539–549):
an organ must not be predicted where the labels say another organ is.

For every foreground channel c the region where organ c must NOT be: ``e^c = 1 − y^c`` when
c ∈ Φ_b, ``e^c = 1 − y^0`` (the voxels of any labeled organ) when c ∉ Φ_b.
``L_ex_dice = mean_{c=1..N} (2 Σ_{b,i} p^c e^c + ε) / (Σ_{b,i} p^c + Σ_{b,i} e^c + ε)`` (batch
Dice, no background, minimised), the sums over the partially labeled samples.

Shapes: ``main_probs`` ``[B, N+1, *S]`` softmax, ``labels`` ``[B, *S]``, ``annotated`` ``[B, N]`` bool.
"""

from __future__ import annotations

import torch

from tctseg.losses.dice import batch_dice
from tctseg.losses.partial_labels import one_hot_masks, per_channel


def exclusion_targets(labels: torch.Tensor, annotated: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The official ``expand_gt`` foreground channels: ``e^c = 1 − y^c`` for c ∈ Φ and
    ``e^c = 1 − y^0`` (any labeled organ) for c ∉ Φ.

    Args:
        labels: ``[B, *S]``; annotated: ``[B, N]`` bool.
    Returns:
        ``[B, N, *S]`` in ``dtype``.
    """
    n = annotated.shape[1]
    onehot = one_hot_masks(labels, n + 1, dtype)
    ann = per_channel(annotated, labels.ndim + 1)
    return torch.where(ann, 1.0 - onehot[:, 1:], 1.0 - onehot[:, :1])


def exclusion_dice(main_probs: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Exclusion Dice (minimised): ``mean_{c=1..N} batch_dice(p^c, e^c)`` summed over the
    partially labeled samples of the batch; 0 when every sample is fully labeled.

    Args:
        main_probs: ``[B, N+1, *S]`` softmax; labels: ``[B, *S]``; annotated: ``[B, N]`` bool.
    Returns:
        Scalar.
    """
    partial = ~annotated.all(1)  # [B]
    targets = exclusion_targets(labels, annotated, main_probs.dtype)
    include = partial.unsqueeze(1).expand_as(annotated)
    # no branch on partial.any(): that would wait for the GPU every step; with no partial
    # sample every channel's batch Dice is the finite (ε)/(ε) and the factor makes it 0
    return batch_dice(main_probs[:, 1:], targets, include).mean() * partial.any().to(main_probs.dtype)
