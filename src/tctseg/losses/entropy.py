"""AAL's entropy regulariser (Chen et al. 2024; official ``networks/loss.py``,
``BalancedCELoss.forward``, the two ``regularization -= …`` lines ≈ 77–80): the plain entropy
over all N+1 channels at all voxels, weighted up for a patch with no foreground label.
It pushes every voxel, annotated or not, to commit to one class.
"""

from __future__ import annotations

import torch

PROB_EPS = 1e-6  # AAL's official clamp of probabilities inside every log


def entropy_regulariser(
    main_probs: torch.Tensor, labels: torch.Tensor, empty_patch_weight: float = 3.0, eps: float = PROB_EPS
) -> torch.Tensor:
    """Entropy over all channels and voxels, weighted up for all-background patches.

    ``(1/B) Σ_b w_b · mean_i −Σ_c p^c_i log clamp(p^c_i, eps, 1−eps)``, ``w_b =
    empty_patch_weight`` where patch b holds no foreground label, else 1.

    Args:
        main_probs: ``[B, N+1, *S]`` softmax; labels: ``[B, *S]``.
    Returns:
        Scalar.
    """
    entropy = -(main_probs * main_probs.clamp(eps, 1.0 - eps).log()).sum(1)  # [B, *S]
    per_sample = entropy.flatten(1).mean(1)
    empty = (labels.flatten(1) == 0).all(1)
    weight = torch.where(empty, torch.full_like(per_sample, empty_patch_weight), torch.ones_like(per_sample))
    return (weight * per_sample).mean()
