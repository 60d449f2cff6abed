"""Dice losses on partially labeled samples: the main head's marginal Dice (Eq. 1–2) and the
auxiliary task heads' binary Dice (Eq. 3–4). Every loss is computed per sample (samples of a
batch come from datasets with different annotated sets Φ) and then averaged over the batch.
"""

from __future__ import annotations

import torch

EPSILON = 1e-5


def soft_dice(probs: torch.Tensor, target: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """``(2·Σ a·y + ε) / (Σ a + Σ y + ε)`` summed over the spatial dims of one sample.

    probs, target: ``[B, C, *S]`` (same shape) → dice ``[B, C]``.
    """
    dims = tuple(range(2, probs.ndim))
    intersection = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return (2.0 * intersection + eps) / (total + eps)


def one_hot_masks(labels: torch.Tensor, num_channels: int, dtype: torch.dtype) -> torch.Tensor:
    """``labels`` ``[B, *S]`` → ``[B, C, *S]`` with channel c = ``[labels == c]`` in ``dtype``.

    The same values as ``F.one_hot(labels, C).movedim(-1, 1).to(dtype)``, built by one
    broadcast comparison straight into the channel-first layout (no int64 one-hot, no
    strided copy): ~3× less memory traffic in the training step. Unlike ``F.one_hot`` it
    does not check the ids (that would cost a host-device synchronisation per step): an id
    outside 0..C−1 gets no channel; the prepared cache only holds 0..N.
    """
    channels = torch.arange(num_channels, device=labels.device).view(1, num_channels, *([1] * (labels.ndim - 1)))
    return (labels.unsqueeze(1) == channels).to(dtype)


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
    fg_probs = main_probs[:, 1:]
    # Eq. 2: fold every unannotated class into the background channel
    unannotated = (1.0 - ann).view(*ann.shape, *([1] * (main_probs.ndim - 2)))
    q_background = main_probs[:, :1] + (fg_probs * unannotated).sum(1, keepdim=True)
    merged = torch.cat([q_background, fg_probs], dim=1)
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
