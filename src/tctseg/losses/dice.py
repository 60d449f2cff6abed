"""Dice: the per-sample soft Dice and nnU-Net's batch Dice, and the Dice losses of TCT on
partially labeled samples: the main head's marginal Dice (Eq. 1–2, also TAL's loss) and the
auxiliary task heads' binary Dice (Eq. 3–4). TCT's losses are computed per sample (samples of a
batch come from datasets with different annotated sets Φ) and then averaged over the batch.
"""

from __future__ import annotations

import torch

from tctseg.losses.partial_labels import merge_unannotated_into_background, one_hot_masks, per_channel

EPSILON = 1e-5


def soft_dice(probs: torch.Tensor, target: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """``(2·Σ a·y + ε) / (Σ a + Σ y + ε)`` summed over the spatial dims of one sample.

    probs, target: ``[B, C, *S]`` (same shape) → dice ``[B, C]``.
    """
    dims = tuple(range(2, probs.ndim))
    intersection = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return (2.0 * intersection + eps) / (total + eps)


def batch_dice(probs: torch.Tensor, target: torch.Tensor, include: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """Batch Dice per channel over the included samples only (nnU-Net's ``batch_dice=True``).

    ``dice_c = (2·Σ_{b: include[b,c]} Σ_i a·t + eps) / (Σ_{b: include[b,c]} Σ_i (a + t) + eps)``
    — the same as nnU-Net's ``(2tp + eps) / (2tp + fp + fn + eps)``.

    Args:
        probs, target: ``[B, C, *S]``; include: ``[B, C]`` bool.
    Returns:
        ``[C]`` (a channel no sample includes gets eps / eps = 1).
    """
    weight = per_channel(include.to(probs.dtype), probs.ndim)
    dims = (0, *range(2, probs.ndim))
    intersection = (probs * target * weight).sum(dims)
    total = ((probs + target) * weight).sum(dims)
    return (2.0 * intersection + eps) / (total + eps)


def _check(main_or_aux: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor, n: int, what: str) -> None:
    if labels.shape[0] != main_or_aux.shape[0] or labels.shape[1:] != main_or_aux.shape[-labels.ndim + 1 :]:
        raise ValueError(f"{what} {tuple(main_or_aux.shape)} and labels {tuple(labels.shape)} do not match")
    if annotated.shape != (labels.shape[0], n):
        raise ValueError(f"annotated must be [B, N] = [{labels.shape[0]}, {n}], got {tuple(annotated.shape)}")


def marginal_dice_loss(main_probs: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Marginal (target-adaptive) Dice loss of the main head — paper Eq. 1–2 (SPEC).

    Per sample with annotated set Φ: merged background ``q^0 = p^0 + Σ_{n∉Φ} p^n`` (classes
    the sample does not annotate are background to its labels; the printed "{0} ∪ Φ" is a
    misprint), ``q^c = p^c`` for c ∈ Φ; loss ``1 − mean_{c∈{0}∪Φ} dice(q^c, [labels == c])``.

    Args:
        main_probs: ``[B, N+1, *S]`` softmax probabilities, channel 0 background.
        labels: ``[B, *S]`` integer global ids (0 = background or not annotated).
        annotated: ``[B, N]`` bool, True where the sample's dataset annotates class j.
    Returns:
        Scalar: the mean over the batch of the per-sample loss.
    """
    n = main_probs.shape[1] - 1
    _check(main_probs, labels, annotated, n, "main_probs")
    ann = annotated.to(main_probs.dtype)
    merged = merge_unannotated_into_background(main_probs, annotated)  # Eq. 2
    target = one_hot_masks(labels, n + 1, main_probs.dtype)
    dice = soft_dice(merged, target)  # [B, N+1]
    channel_mask = torch.cat([torch.ones_like(ann[:, :1]), ann], dim=1)  # {0} ∪ Φ
    per_sample = 1.0 - (dice * channel_mask).sum(1) / channel_mask.sum(1)
    return per_sample.mean()


def auxiliary_dice_terms(aux_probs: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-head terms of Eq. 3–4, zero where the head's class is not annotated.

    ``term[b, j-1] = 1 − ½·[dice(g_j^0, 1 − y^j) + dice(g_j^1, y^j)]`` for j ∈ Φ_b, with
    ``y^j = [labels == j]``; 0 for j ∉ Φ_b (its target is unknown there).

    Args:
        aux_probs: ``[B, N, 2, *S]`` softmax over dim 2; ``[:, j-1, 1]`` is g^j.
        labels: ``[B, *S]`` integer global ids.
        annotated: ``[B, N]`` bool.
    Returns:
        ``[B, N]`` terms.
    """
    n = aux_probs.shape[1]
    _check(aux_probs, labels, annotated, n, "aux_probs")
    target = one_hot_masks(labels, n + 1, aux_probs.dtype)[:, 1:]  # [B, N, *S]
    # both channels of every head in one soft_dice over [B, 2N, *S] (a view of aux_probs):
    # the same sums as two calls on aux_probs[:, :, 0] and [:, :, 1], without the two strided
    # selects whose backward zero-fills and copies a full-size gradient each
    binary_target = torch.stack([1.0 - target, target], dim=2)  # [B, N, 2, *S]
    dice = soft_dice(aux_probs.flatten(1, 2), binary_target.flatten(1, 2)).unflatten(1, (n, 2))  # [B, N, 2]
    dice_bg, dice_fg = dice[..., 0], dice[..., 1]
    terms = 1.0 - 0.5 * (dice_bg + dice_fg)
    return terms * annotated.to(terms.dtype)


def auxiliary_dice_loss(aux_probs: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Dice loss of the auxiliary task heads — paper Eq. 3–4 (SPEC).

    Per sample: ``Σ_{j∈Φ} (1 − ½·[dice(g_j^0, 1 − y^j) + dice(g_j^1, y^j)])``; heads of
    classes the sample does not annotate get no term. Mean over the batch.

    Args:
        aux_probs: ``[B, N, 2, *S]`` softmax over dim 2.
        labels: ``[B, *S]`` integer global ids.
        annotated: ``[B, N]`` bool.
    Returns:
        Scalar loss.
    """
    return auxiliary_dice_terms(aux_probs, labels, annotated).sum(1).mean()
