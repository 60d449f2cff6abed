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

The loss functions: :mod:`tctseg.losses.marginal` (marginal CE and batch Dice) and
:mod:`tctseg.losses.exclusion`.

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

from dataclasses import dataclass

import torch

from tctseg.losses.exclusion import exclusion_dice
from tctseg.losses.marginal import marginal_batch_dice_loss, marginal_cross_entropy
from tctseg.methods.base import LossOutput, Method, build_network
from tctseg.methods.options import read_options
from tctseg.methods.registry import register_method


@dataclass(frozen=True)
class MEOptions:
    """``method.options`` of ME."""

    exclusion_weight: float = 2.0  # λ_ex


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
        options = read_options(MEOptions, config.method.options)
        return cls(build_network(config, aux_heads=False), options.exclusion_weight)

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
