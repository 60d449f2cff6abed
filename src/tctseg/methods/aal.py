"""AAL — ambiguity-aware losses (Chen, Zheng, Li, Ma, Ma, Li & Fan 2024, "Versatile medical
image segmentation learned from multi-source datasets via model self-disambiguation", CVPR).

One multi-class main head on the shared 3D U-Net, trained as the authors' official code does
(xychen2022/VersatileSegmentation, ``train.py`` ≈ line 211,
``loss = 1.0 * loss_wce + 1.0 * loss_dice + 1.0 * regularizer``):

    L = L_focal + L_dice + λ_H · L_entropy                     (λ_H = 1)

Per sample b with annotated set Φ_b, main-head softmax ``p`` ``[N+1, *S]`` and labels ``y``
(SPEC "Notation"); a voxel labeled 0 is "background or any class not in Φ_b", so its
probability is the marginal ``q^0 = p^0 + Σ_{c∉Φ_b} p^c``; ``q^c = p^c`` for c ∈ Φ_b.

* **Focal marginal CE** (``networks/loss.py``, ``BalancedCELoss.forward``, partial-label
  branch ≈ lines 125–156): ``L_focal,b = mean_i −(1 − q^{y_i})^γ · log clamp(q^{y_i}, ε, 1−ε)``
  over all voxels of the patch, γ = 2, ε = 1e-6; mean over the batch.
* **Dice over the labels present in the patch** (``DiceLoss.forward``, partial-label branch,
  end of the file): ``L_dice,b = 1 − mean_{l ∈ L_b} (2 Σ_i q^l_i y^l_i + 1) / (Σ_i q^l_i +
  Σ_i y^l_i + 1)``, L_b the labels that occur in the patch (0 included when present), y^l =
  [y = l], smooth 1; mean over the batch.
* **Entropy regulariser** (``BalancedCELoss.forward``, the two ``regularization -= …`` lines
  ≈ 77–80): the plain entropy over ALL N+1 channels at ALL voxels,
  ``H_b = −mean_i Σ_{c=0..N} p^c_i log clamp(p^c_i, ε, 1−ε)``, multiplied by
  ``weight_entropy_minimization`` = 3 (``train.py`` argument) for a patch with no
  foreground label; ``L_entropy = (1/B) Σ_b w_b H_b``. It pushes every voxel, annotated or
  not, to commit to one class.

Options: ``method.options.focal_gamma`` (γ, 2), ``entropy_weight`` (λ_H, 1) and
``empty_patch_entropy_weight`` (w_b of an all-background patch, 3).

The loss functions: :mod:`tctseg.losses.marginal` (focal marginal CE, present-label Dice) and
:mod:`tctseg.losses.entropy`.

What remains different from the official code, and why:

* **Φ.** The official ``dataset.py`` takes a volume's annotated classes as the labels that
  occur in the whole resampled volume; we use the dataset's declared annotated set (the
  prepared cache's), so a declared organ that is missing from one scan still counts as
  annotated there (it is absent, not unknown).
* **Sampler** (documented, not implemented): the official loader draws a class, then a
  modality, then a dataset, then a scan, and centres every patch on a voxel of that class,
  so a partially labeled patch always holds foreground and the ×3 branch of the regulariser
  does not fire for partial labels (it serves the official sparse-label mode). The shared
  sampler draws a dataset, then a case, and centres a patch on an annotated organ only with
  probability ``train.foreground_fraction`` (0.33), so all-background patches — and with
  them the ×3 weight — occur; ``train.foreground_fraction=1`` comes closer to the official
  patch centring.
* **Sparse (slice-wise) labels**, the official code's second training mode, do not exist in
  tctseg and are left out.
* **Backbone**: the shared 3D U-Net (the AAL paper used a 3D TransUNet; TCT paper App. D
  puts every baseline on the same 3D U-Net); no deep supervision.
* The focal term's log is computed in log-space (log-softmax, then the same clamp of q to
  [ε, 1−ε]); the values and the zero gradient outside the clamp are the official ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tctseg.losses.entropy import PROB_EPS, entropy_regulariser
from tctseg.losses.marginal import marginal_cross_entropy, present_label_dice_loss
from tctseg.methods.base import LossOutput, Method, build_network
from tctseg.methods.options import read_options
from tctseg.methods.registry import register_method

@dataclass(frozen=True)
class AALOptions:
    """``method.options`` of AAL."""

    focal_gamma: float = 2.0  # γ
    entropy_weight: float = 1.0  # λ_H
    empty_patch_entropy_weight: float = 3.0  # w_b of an all-background patch


@register_method
class AALMethod(Method):
    name = "aal"
    description = "AAL: focal marginal CE + present-label Dice + entropy regulariser (Chen et al. 2024, official code)"

    def __init__(
        self,
        network: torch.nn.Module,
        focal_gamma: float = 2.0,
        entropy_weight: float = 1.0,
        empty_patch_entropy_weight: float = 3.0,
    ):
        super().__init__()
        self.network = network
        self.focal_gamma = focal_gamma
        self.entropy_weight = entropy_weight
        self.empty_patch_entropy_weight = empty_patch_entropy_weight

    @classmethod
    def from_config(cls, config) -> AALMethod:
        options = read_options(AALOptions, config.method.options)
        return cls(
            build_network(config, aux_heads=False),
            focal_gamma=options.focal_gamma,
            entropy_weight=options.entropy_weight,
            empty_patch_entropy_weight=options.empty_patch_entropy_weight,
        )

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        labels, annotated = batch["labels"], batch["annotated"]
        logits = self.network(batch["image"], aux=False).main_logits.float()
        main_probs = torch.softmax(logits, dim=1)
        dice = present_label_dice_loss(main_probs, labels, annotated)
        focal = marginal_cross_entropy(logits, labels, annotated, gamma=self.focal_gamma, eps=PROB_EPS)
        entropy = entropy_regulariser(main_probs, labels, self.empty_patch_entropy_weight)
        total = focal + dice + self.entropy_weight * entropy
        return LossOutput(total, {"main": dice.detach(), "focal_ce": focal.detach(), "entropy": entropy.detach()})
