"""ME — marginal loss + exclusion loss (Shi, Xiao, Chen & Zhou 2021, "Marginal loss and
exclusion loss for partially supervised multi-organ segmentation", Medical Image Analysis 70).

One multi-class main head on the shared 3D U-Net (like TAL), trained with

    L = L_marg_dice + L_marg_ce + λ_ex · (L_ex_dice + L_ex_ce)

Per sample with annotated set Φ (SPEC "Notation"), ``p`` the softmax of the main head:

* **Marginal loss.** Label 0 of a partially labeled sample is really "background or any
  organ not in Φ", so its probability is the marginal ``q^0 = p^0 + Σ_{n∉Φ} p^n``;
  ``q^c = p^c`` for c ∈ Φ. Marginal Dice = TAL's loss (paper Eq. 1–2,
  :func:`tctseg.losses.marginal_dice_loss`); marginal CE = ``−mean_i log q^{y_i}_i``.
* **Exclusion loss.** Organs do not overlap, so where the sample labels an annotated organ
  no *unannotated* organ may be predicted. With ``e = [labels ∈ Φ]`` (the union of the
  annotated organs' voxels) and every c ∉ Φ:
  exclusion Dice ``mean_{c∉Φ} dice(p^c, e)`` (minimised: the overlap of the unlabeled
  organ's prediction with the labeled organs) and exclusion CE
  ``−(1/|e|) Σ_{i∈e} Σ_{c∉Φ} log(1 − p^c_i)``.

Choices where the paper leaves a detail open (our reading; the MedIA text was not at hand):

* the exclusion target is the union of the annotated organs (not each organ separately):
  an annotated organ's voxel predicted as another *annotated* organ is already penalised by
  the marginal loss, so only unannotated classes need the exclusion term;
* exclusion terms are dropped for samples whose patch holds no annotated-organ voxel
  (``e`` empty: its Dice would be ε/ε = 1, a constant) and for samples that annotate
  every class (no c ∉ Φ);
* λ_ex = 1 (``method.options.exclusion_weight``), Dice and CE weighted equally, as in the
  paper's combined "Dice + CE" form.

Inference: the main head's N+1 logits, as TAL.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tctseg.errors import ConfigError
from tctseg.losses import marginal_dice_loss, soft_dice
from tctseg.methods.base import LossOutput, Method, build_network
from tctseg.methods.registry import register_method


def option(options: dict[str, Any], key: str, default: Any, kind: type = float) -> Any:
    """``method.options[key]`` as ``kind`` (default when absent); ConfigError naming the key."""
    value = options.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"method.options.{key}: expected {kind.__name__}, got {value!r}") from None


def _unannotated_mask(annotated: torch.Tensor, ndim: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, N]`` bool → ``[B, N, 1, ...]`` float, 1 where the class is NOT annotated."""
    return (~annotated).to(dtype).view(*annotated.shape, *([1] * (ndim - 2)))


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
    logits: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor, gamma: float = 0.0
) -> torch.Tensor:
    """Marginal cross-entropy ``−mean_i (1 − q^{y_i})^γ · log q^{y_i}`` (γ = 0: plain CE; γ > 0:
    focal, as AAL). Mean over the voxels of a sample, then over the batch.

    Args:
        logits: ``[B, N+1, *S]``; labels: ``[B, *S]``; annotated: ``[B, N]`` bool.
    Returns:
        Scalar loss.
    """
    log_q = marginal_log_probs(logits, annotated)
    log_q_label = log_q.gather(1, labels.long().unsqueeze(1)).squeeze(1)  # [B, *S]
    loss = -log_q_label
    if gamma:
        loss = loss * (1.0 - log_q_label.exp()).clamp_min(0.0) ** gamma
    return loss.flatten(1).mean(1).mean()


def exclusion_losses(
    main_probs: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exclusion Dice and exclusion CE (Shi et al. 2021), see the module docstring.

    Args:
        main_probs: ``[B, N+1, *S]`` softmax; labels: ``[B, *S]``; annotated: ``[B, N]`` bool.
    Returns:
        ``(exclusion_dice, exclusion_ce)``: scalars, the mean over the samples that have a
        term (0 when none has).
    """
    n = main_probs.shape[1] - 1
    fg_probs = main_probs[:, 1:]  # [B, N, *S]
    onehot = F.one_hot(labels.long(), n + 1).movedim(-1, 1)[:, 1:].to(main_probs.dtype)
    ann = annotated.to(main_probs.dtype)
    # e: voxels of any annotated organ (labels of classes outside Φ never occur)
    exclusion = (onehot * ann.view(*ann.shape, *([1] * (onehot.ndim - 2)))).sum(1, keepdim=True)
    unannotated = _unannotated_mask(annotated, main_probs.ndim, main_probs.dtype)  # [B, N, 1...]
    dims = tuple(range(2, main_probs.ndim))
    has_exclusion = exclusion.sum(dims).squeeze(1) > 0  # [B]
    n_unannotated = (~annotated).sum(1)  # [B]
    valid = (has_exclusion & (n_unannotated > 0)).to(main_probs.dtype)
    if valid.sum() == 0:
        zero = main_probs.sum() * 0.0
        return zero, zero
    dice = soft_dice(fg_probs, exclusion.expand_as(fg_probs))  # [B, N]
    dice_term = (dice * unannotated.flatten(1)).sum(1) / n_unannotated.clamp_min(1)
    log_not = torch.log((1.0 - fg_probs).clamp_min(eps))
    ce_voxel = -(log_not * unannotated).sum(1, keepdim=True) * exclusion  # [B, 1, *S]
    ce_term = ce_voxel.sum(dims).squeeze(1) / exclusion.sum(dims).squeeze(1).clamp_min(1.0)
    dice_loss = (dice_term * valid).sum() / valid.sum()
    ce_loss = (ce_term * valid).sum() / valid.sum()
    return dice_loss, ce_loss


@register_method
class MEMethod(Method):
    name = "me"
    description = "ME: marginal Dice+CE and exclusion loss on the main head (Shi et al. 2021)"

    def __init__(self, network: torch.nn.Module, exclusion_weight: float = 1.0):
        super().__init__()
        self.network = network
        self.exclusion_weight = exclusion_weight

    @classmethod
    def from_config(cls, config) -> MEMethod:
        options = config.method.options
        return cls(build_network(config, aux_heads=False), option(options, "exclusion_weight", 1.0))

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        labels, annotated = batch["labels"], batch["annotated"]
        logits = self.network(batch["image"], aux=False).main_logits.float()
        main_probs = torch.softmax(logits, dim=1)
        marg_dice = marginal_dice_loss(main_probs, labels, annotated)
        marg_ce = marginal_cross_entropy(logits, labels, annotated)
        ex_dice, ex_ce = exclusion_losses(main_probs, labels, annotated)
        main = marg_dice + marg_ce
        total = main + self.exclusion_weight * (ex_dice + ex_ce)
        parts = {
            "main": marg_dice.detach(),
            "marginal_ce": marg_ce.detach(),
            "exclusion_dice": ex_dice.detach(),
            "exclusion_ce": ex_ce.detach(),
        }
        return LossOutput(total, parts)
