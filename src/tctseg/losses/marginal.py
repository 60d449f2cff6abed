"""Marginal losses of the softmax baselines (ME, AAL): a partially labeled sample's label 0
means "background or any class it does not annotate", so its probability is the marginal
``q^0 = p^0 + Σ_{c∉Φ} p^c`` (:mod:`tctseg.losses.partial_labels`); ``q^c = p^c`` for c ∈ Φ.
TCT's and TAL's marginal Dice (Eq. 1–2) is :func:`tctseg.losses.dice.marginal_dice_loss`.

* :func:`marginal_cross_entropy`: ``−mean_i (1 − q^{y_i})^γ · log q^{y_i}`` — ME's marginal CE
  (γ = 0) and AAL's focal marginal CE (γ = 2, q clamped to [1e-6, 1 − 1e-6] in the log).
* :func:`marginal_batch_dice_loss`: ME's marginal Dice, nnU-Net's batch Dice without background.
* :func:`present_label_dice_loss`: AAL's marginal Dice over the labels present in the patch.

Shapes: ``logits``/``main_probs`` ``[B, N+1, *S]``, ``labels`` ``[B, *S]``, ``annotated`` ``[B, N]`` bool.
"""

from __future__ import annotations

import math

import torch

from tctseg.losses.dice import batch_dice, soft_dice
from tctseg.losses.partial_labels import marginal_log_probs, merge_unannotated_into_background, one_hot_masks


def marginal_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor, gamma: float = 0.0, eps: float = 0.0
) -> torch.Tensor:
    """Marginal cross-entropy ``−mean_i (1 − q^{y_i})^γ · log q^{y_i}`` (γ = 0: plain CE; γ > 0:
    focal, as AAL). Mean over the voxels of a sample, then over the batch.

    Args:
        logits: ``[B, N+1, *S]``; labels: ``[B, *S]``; annotated: ``[B, N]`` bool.
        gamma: focal exponent.
        eps: > 0 clamps ``q`` to ``[eps, 1 − eps]`` inside the log only (AAL's official code
            does, with 1e-6); 0: no clamp.
    Returns:
        Scalar loss.
    """
    log_q = marginal_log_probs(logits, annotated)
    log_q_label = log_q.gather(1, labels.long().unsqueeze(1)).squeeze(1)  # [B, *S]
    log_term = log_q_label.clamp(math.log(eps), math.log1p(-eps)) if eps > 0 else log_q_label
    loss = -log_term
    if gamma:
        loss = loss * (1.0 - log_q_label.exp()).clamp_min(0.0) ** gamma
    return loss.flatten(1).mean(1).mean()


def marginal_batch_dice_loss(main_probs: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """ME's marginal Dice: ``1 − mean_c batch_dice(p^c, y^c)`` over the foreground classes c
    that some sample of the batch annotates, each channel summed over those samples (no
    background channel, official ``do_bg=False``).

    Args:
        main_probs: ``[B, N+1, *S]`` softmax; labels: ``[B, *S]``; annotated: ``[B, N]`` bool.
    Returns:
        Scalar loss.
    """
    n = main_probs.shape[1] - 1
    target = one_hot_masks(labels, n + 1, main_probs.dtype)[:, 1:]
    dice = batch_dice(main_probs[:, 1:], target, annotated)  # [N]
    seen = annotated.any(0).to(dice.dtype)
    return 1.0 - (dice * seen).sum() / seen.sum().clamp_min(1.0)


def present_label_dice_loss(
    main_probs: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Marginal Dice over the labels present in each patch (AAL's official ``DiceLoss``, partial branch).

    Per sample: ``1 − mean_{l present} (2·Σ q^l y^l + smooth) / (Σ q^l + Σ y^l + smooth)``,
    with the merged background ``q^0 = p^0 + Σ_{c∉Φ} p^c`` and ``q^c = p^c`` otherwise.

    Args:
        main_probs: ``[B, N+1, *S]`` softmax; labels: ``[B, *S]``; annotated: ``[B, N]`` bool.
    Returns:
        Scalar: the mean over the batch of the per-sample loss.
    """
    n = main_probs.shape[1] - 1
    merged = merge_unannotated_into_background(main_probs, annotated)
    target = one_hot_masks(labels, n + 1, main_probs.dtype)
    present = (target.flatten(2).sum(2) > 0).to(main_probs.dtype)  # [B, N+1]
    dice = soft_dice(merged, target, eps=smooth)  # [B, N+1]
    per_sample = 1.0 - (dice * present).sum(1) / present.sum(1).clamp_min(1.0)
    return per_sample.mean()
