"""Per-task binary losses of the task-prompted baselines (DoDNet, CLIP-Driven, Hermes): one
sigmoid map per class c, ``task_logits`` ``[B, N, *S]`` with ``[:, c-1]`` the logit of c, its
target ``y^c = [labels == c]``; a (sample b, class c) pair counts only when c ∈ Φ_b (its
dataset annotates c), and every loss is the mean over those pairs
(:func:`~tctseg.losses.partial_labels.mean_over_annotated`, 0 when there is none).

* :func:`binary_task_losses` (DoDNet): voxel-mean BCE and ``1 − dice(σ(z_c), y^c)``
  (per-sample soft Dice, ε = 1e-5).
* :func:`official_task_losses` (CLIP-Driven, ljwztc/CLIP-Driven-Universal-Model
  ``utils/loss.py`` ``BinaryDiceLoss``/``DiceLoss``/``Multi_BCELoss``): voxel-mean BCE and
  ``mean_x [1 − 2 Σ_{y,z} σ(z_c)·y^c / (Σ_{y,z} σ(z_c) + Σ_{y,z} y^c + 1)]``, one Dice per
  slice along the first spatial axis, smoothing 1 in the denominator only.
* :func:`adaptive_tversky_dice_loss` (Hermes, yhygao/universal-medical-image-segmentation
  ``training/losses.py`` ``BinaryDiceLoss``): ``1 − TP / (TP + α·FP + (1−α)·FN + ε)`` with
  ``α = clamp(FP / (FP + FN + ε), 0.2, 0.8)``, ε = 1e-6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tctseg.losses.dice import soft_dice
from tctseg.losses.partial_labels import mean_over_annotated, one_hot_masks

CLIP_DICE_SMOOTH = 1.0  # CLIP-Driven's BinaryDiceLoss(smooth=1), in the denominator only
# Hermes' official training/losses.py BinaryDiceLoss: α = FP / (FP + FN + ε) clamped to [0.2, 0.8], ε = 1e-6
TVERSKY_ALPHA_RANGE = (0.2, 0.8)
TVERSKY_EPS = 1e-6


def binary_task_losses(
    task_logits: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task binary BCE and Dice loss over the annotated (sample, task) pairs.

    Args:
        task_logits: ``[B, N, *S]``, ``[:, c-1]`` the logit of task c.
        labels: ``[B, *S]``; annotated: ``[B, N]`` bool.
    Returns:
        ``(bce, dice_loss)``: means over the pairs with c ∈ Φ_b (0 when there is none).
    """
    n = task_logits.shape[1]
    logits = task_logits.float()
    target = one_hot_masks(labels, n + 1, logits.dtype, channels_last=True, first=1)  # [B, N, *S]
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(2)  # [B, N]
    dice = 1.0 - soft_dice(torch.sigmoid(logits), target)  # [B, N]
    return mean_over_annotated(bce, annotated), mean_over_annotated(dice, annotated)


def official_task_losses(
    task_logits: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-Driven's BCE and slice-wise Dice loss (module docstring), means over the annotated pairs.

    Args:
        task_logits: ``[B, N, X, Y, Z]``, ``[:, c-1]`` the logit of class c.
        labels: ``[B, X, Y, Z]`` global ids; annotated: ``[B, N]`` bool.
    Returns:
        ``(bce, dice_loss)``, each 0 when no pair is annotated.
    """
    n = task_logits.shape[1]
    logits = task_logits.float()
    target = one_hot_masks(labels.long(), n + 1, logits.dtype)[:, 1:]  # [B, N, X, Y, Z]
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(2)  # [B, N]
    probs = torch.sigmoid(logits)
    slice_dims = tuple(range(3, logits.ndim))  # one Dice per slice along the first spatial axis
    overlap = (probs * target).sum(slice_dims)
    total = probs.sum(slice_dims) + target.sum(slice_dims) + CLIP_DICE_SMOOTH
    dice_loss = (1.0 - 2.0 * overlap / total).mean(2)  # [B, N]
    return mean_over_annotated(bce, annotated), mean_over_annotated(dice_loss, annotated)


def adaptive_tversky_dice_loss(task_logits: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Hermes' adaptive Tversky-Dice (official ``training/losses.py``, ``BinaryDiceLoss``).

    Per (sample b, task c) with p = σ(z), y = [labels = c], sums over the voxels:
    ``TP = Σ p·y``, ``FP = Σ p·(1−y)``, ``FN = Σ (1−p)·y``,
    ``α = clamp(FP / (FP + FN + ε), 0.2, 0.8)``, ``β = 1 − α``,
    ``loss_bc = 1 − TP / (TP + α·FP + β·FN + ε)``; the mean over the annotated pairs.
    As in the official code α is not detached (its gradient flows inside the clamp range).

    task_logits ``[B, N, *S]``, labels ``[B, *S]``, annotated ``[B, N]`` bool → scalar (0 without pairs).
    """
    n = task_logits.shape[1]
    p = torch.sigmoid(task_logits.float()).flatten(2)  # [B, N, V]
    y = one_hot_masks(labels, n + 1, p.dtype, channels_last=True, first=1).flatten(2)  # [B, N, V]
    tp = (p * y).sum(2)
    fp = (p * (1 - y)).sum(2)
    fn = ((1 - p) * y).sum(2)
    alpha = (fp / (fp + fn + TVERSKY_EPS)).clamp(*TVERSKY_ALPHA_RANGE)
    loss = 1 - tp / (tp + alpha * fp + (1 - alpha) * fn + TVERSKY_EPS)  # [B, N]
    return mean_over_annotated(loss, annotated)
