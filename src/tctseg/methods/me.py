"""ME — marginal loss + exclusion loss (Shi, Xiao, Chen & Zhou 2021, "Marginal loss and
exclusion loss for partially supervised multi-organ segmentation", Medical Image Analysis 70).

One multi-class main head on the shared 3D U-Net (like TAL), trained as the authors' official
code does (MIRACLE-Center/Partially-supervised-multi-organ-segmentation,
``nnunet/training/loss_functions/dice_loss.py``, ``DC_CE_Marginal_Exclusion_loss.forward``
≈ line 500: ``result = ce_loss + dc_loss`` then ``result + 2*ex_loss``; loss built in
``nnunet/training/network_training/nnUNetMultiTrainierV2.py`` with
``{'batch_dice': self.batch_dice, 'smooth': 1e-5, 'do_bg': False}``, batch_dice True by default):

    L = L_marg_ce + L_marg_dice + λ_ex · L_ex_dice                (λ_ex = 2)

Per sample b with annotated set Φ_b (SPEC "Notation"), ``p`` the softmax of the main head,
``y^c = [labels == c]``:

* **Marginal loss.** Label 0 of a partially labeled sample is really "background or any
  organ not in Φ_b", so its probability is the marginal ``q^0 = p^0 + Σ_{n∉Φ_b} p^n``;
  ``q^c = p^c`` for c ∈ Φ_b. Marginal CE ``−mean_i log q^{y_i}_i`` (over the voxels of a
  sample, then the batch). Marginal Dice: batch Dice without background,
  ``1 − mean_c (2 Σ_{b,i} p^c y^c + ε) / (Σ_{b,i} p^c + Σ_{b,i} y^c + ε)`` over the
  foreground classes c, the sums over the samples that annotate c (ε = 1e-5).
* **Exclusion loss** (``expand_gt`` ≈ lines 539–549). For every foreground channel c the
  region where organ c must NOT be: ``e^c = 1 − y^c`` when c ∈ Φ_b, ``e^c = 1 − y^0`` (the
  voxels of any labeled organ) when c ∉ Φ_b. ``L_ex_dice = mean_{c=1..N} (2 Σ_{b,i} p^c e^c
  + ε) / (Σ_{b,i} p^c + Σ_{b,i} e^c + ε)`` (batch Dice, no background, minimised), the sums
  over the partially labeled samples: the official code adds the exclusion term only to a
  partially labeled task's batches; a fully labeled sample gets plain Dice + CE.

Options: ``method.options.exclusion_weight`` (λ_ex, 2).

What remains different from the official code, and why:

* **Probabilities, not logits.** The official ``merge_prediction`` adds the *logits* of the
  background and the unannotated channels and then takes the softmax of the merged logits;
  the paper's marginal loss (and this module) adds the *probabilities*. We follow the paper:
  q^0 = p^0 + Σ_{n∉Φ} p^n and q^c = p^c of the full softmax (in the official code the
  annotated channels too come from the softmax of the merged logits). The exclusion Dice
  uses the full softmax in both.
* **Mixed batches.** The official loader serves each batch from one task (dataset), so the
  batch Dice sums run over samples with the same Φ. tctseg's batches mix datasets; each
  channel's sums run over the samples for which the official code would have used that
  channel (the samples annotating c for the marginal Dice, the partially labeled samples for
  the exclusion Dice). For a batch of one dataset the sums are the official ones.
* **Dice sign.** The official SoftDiceLoss returns ``−dice``; the marginal Dice here is
  ``1 − dice`` (the same gradient, a loss that stays ≥ 0 in the logs). The exclusion term is
  ``+dice`` in both.
* **Backbone**: the shared 3D U-Net without nnU-Net's deep supervision (TCT paper App. D
  puts every baseline on the same 3D U-Net).
* The official file also builds an "exclusion CE" (``ex_CE``) but never adds it (its line is
  commented out); neither does this module.

Inference: the main head's N+1 logits, as TAL.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tctseg.errors import ConfigError
from tctseg.losses import EPSILON
from tctseg.losses.dice import one_hot_masks
from tctseg.methods.base import LossOutput, Method, build_network
from tctseg.methods.registry import register_method


def option(options: dict[str, Any], key: str, default: Any, kind: type = float) -> Any:
    """``method.options[key]`` as ``kind`` (default when absent); ConfigError naming the key."""
    value = options.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"method.options.{key}: expected {kind.__name__}, got {value!r}") from None


def marginal_log_probs(logits: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Log of the marginal probabilities ``q`` of a partially labeled sample.

    ``log q^0 = logsumexp(log p^0, log p^n for n ∉ Φ)``, ``log q^c = log p^c`` for c ∈ Φ;
    channels of classes not in Φ are left as ``log p^c`` (no label of the sample is c).

    Args:
        logits: ``[B, N+1, *S]`` main-head logits.
        annotated: ``[B, N]`` bool.
    Returns:
        ``[B, N+1, *S]`` log-probabilities.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    # classes the sample annotates take no part in the merged background
    fold = torch.cat([torch.ones_like(annotated[:, :1]), ~annotated], dim=1)
    fold = fold.view(*fold.shape, *([1] * (logits.ndim - 2)))
    log_q0 = torch.logsumexp(log_p.masked_fill(~fold, float("-inf")), dim=1, keepdim=True)
    return torch.cat([log_q0, log_p[:, 1:]], dim=1)


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


def batch_dice(probs: torch.Tensor, target: torch.Tensor, include: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """Batch Dice per channel over the included samples only (nnU-Net's ``batch_dice=True``).

    ``dice_c = (2·Σ_{b: include[b,c]} Σ_i a·t + eps) / (Σ_{b: include[b,c]} Σ_i (a + t) + eps)``
    — the same as nnU-Net's ``(2tp + eps) / (2tp + fp + fn + eps)``.

    Args:
        probs, target: ``[B, C, *S]``; include: ``[B, C]`` bool.
    Returns:
        ``[C]`` (a channel no sample includes gets eps / eps = 1).
    """
    weight = include.to(probs.dtype).view(*include.shape, *([1] * (probs.ndim - 2)))
    dims = (0, *range(2, probs.ndim))
    intersection = (probs * target * weight).sum(dims)
    total = ((probs + target) * weight).sum(dims)
    return (2.0 * intersection + eps) / (total + eps)


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
    ann = annotated.view(*annotated.shape, *([1] * (labels.ndim - 1)))
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


@register_method
class MEMethod(Method):
    name = "me"
    description = "ME: marginal CE + marginal batch Dice + 2 x exclusion Dice (Shi et al. 2021, official code)"

    def __init__(self, network: torch.nn.Module, exclusion_weight: float = 2.0):
        super().__init__()
        self.network = network
        self.exclusion_weight = exclusion_weight

    @classmethod
    def from_config(cls, config) -> MEMethod:
        options = config.method.options
        return cls(build_network(config, aux_heads=False), option(options, "exclusion_weight", 2.0))

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        labels, annotated = batch["labels"], batch["annotated"]
        logits = self.network(batch["image"], aux=False).main_logits.float()
        main_probs = torch.softmax(logits, dim=1)
        marg_dice = marginal_batch_dice_loss(main_probs, labels, annotated)
        marg_ce = marginal_cross_entropy(logits, labels, annotated)
        ex_dice = exclusion_dice(main_probs, labels, annotated)
        total = marg_ce + marg_dice + self.exclusion_weight * ex_dice
        parts = {"main": marg_dice.detach(), "marginal_ce": marg_ce.detach(), "exclusion_dice": ex_dice.detach()}
        return LossOutput(total, parts)
