"""Dice + cross-entropy on complete labels (nnU-Net's usual loss): PFL's loss for its
single-organ networks and for the network trained on pseudo-full labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tctseg.losses.dice import soft_dice
from tctseg.losses.partial_labels import one_hot_masks


def full_dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Dice (all C channels, per sample, background included) and CE on complete labels:
    ``1 − mean_b mean_{k=0..C−1} dice(p^k, [y = k])`` and ``CE(p, y)``.

    logits ``[B, C, *S]``, labels ``[B, *S]`` in 0..C−1 → ``(dice_loss, ce)`` scalars.
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=1)
    target = one_hot_masks(labels, logits.shape[1], probs.dtype, channels_last=True)
    dice = 1.0 - soft_dice(probs, target).mean(1).mean()
    ce = F.cross_entropy(logits, labels.long())
    return dice, ce
