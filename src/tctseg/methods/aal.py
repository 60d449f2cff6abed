"""AAL — ambiguity-aware losses (Chen, Zheng, Li, Ma, Ma, Li & Fan 2024, "Versatile medical
image segmentation learned from multi-source datasets via model self-disambiguation", CVPR).

One multi-class main head on the shared 3D U-Net, trained with

    L = L_focal_marg_ce + L_marg_dice + λ_H · L_entropy

Per sample with annotated set Φ and main-head softmax ``p`` (SPEC "Notation"):

* **Ambiguity-aware (marginal) losses.** A voxel labeled 0 is ambiguous: background or any
  class c ∉ Φ. Its probability is the marginal ``q^0 = p^0 + Σ_{c∉Φ} p^c``; ``q^c = p^c``
  for c ∈ Φ. Focal marginal CE ``−mean_i (1 − q^{y_i})^γ log q^{y_i}`` (γ = 2) and the
  marginal Dice of paper Eq. 1–2 (:func:`tctseg.losses.marginal_dice_loss`).
* **Prior-knowledge entropy regulariser.** Every voxel belongs to exactly one structure, so
  the model should commit on the ambiguous voxels. On voxels labeled 0, with the candidate
  set ``K = {0} ∪ (Ω \\ Φ)`` and the distribution renormalised over it,
  ``r^k = p^k / q^0`` (k ∈ K), minimise the normalised entropy
  ``H = −Σ_{k∈K} r^k log r^k / log |K|`` averaged over those voxels.

Choices where the paper leaves a detail open (our reading of its description; its equations
were not at hand): the entropy is taken over the candidate classes of the ambiguous voxels
only (annotated classes are already decided by the labels there), normalised by ``log |K|``
so that it lies in [0, 1] whatever N; samples that annotate every class (|K| = 1) have no
entropy term; γ = 2 (``method.options.focal_gamma``), λ_H = 0.1
(``method.options.entropy_weight``), constant over training; AAL's hierarchical sampling of
datasets/modalities/classes is a data-loader matter and not part of this method (the shared
sampler's dataset weights play that role). Backbone: the shared 3D U-Net (the AAL paper used
a 3D TransUNet; paper App. D puts every baseline on the same 3D U-Net).
"""

from __future__ import annotations

import torch

from tctseg.losses import marginal_dice_loss
from tctseg.methods.base import LossOutput, Method, build_network
from tctseg.methods.me import marginal_cross_entropy, option
from tctseg.methods.registry import register_method


def ambiguous_entropy(logits: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Normalised entropy over the candidate classes ``{0} ∪ (Ω \\ Φ)`` on voxels labeled 0.

    Args:
        logits: ``[B, N+1, *S]``; labels: ``[B, *S]``; annotated: ``[B, N]`` bool.
    Returns:
        Scalar: mean over samples with ambiguity (0 when none has) of the per-sample mean
        over its voxels labeled 0.
    """
    candidates = torch.cat([torch.ones_like(annotated[:, :1]), ~annotated], dim=1)  # [B, N+1]
    k = candidates.sum(1)  # |K| per sample
    cand = candidates.view(*candidates.shape, *([1] * (logits.ndim - 2)))
    # log r^k = log p^k − log q^0, over candidates only
    masked = logits.float().masked_fill(~cand, float("-inf"))
    log_r = torch.log_softmax(masked, dim=1)
    r = log_r.exp()
    entropy = -(r * log_r.masked_fill(~cand, 0.0)).sum(1)  # [B, *S]
    norm = torch.log(k.to(entropy.dtype).clamp_min(2.0)).view(-1, *([1] * (entropy.ndim - 1)))
    ambiguous = (labels == 0).to(entropy.dtype)
    per_sample = (entropy / norm * ambiguous).flatten(1).sum(1) / ambiguous.flatten(1).sum(1).clamp_min(1.0)
    valid = (k > 1).to(entropy.dtype)
    if valid.sum() == 0:
        return logits.sum() * 0.0
    return (per_sample * valid).sum() / valid.sum()


@register_method
class AALMethod(Method):
    name = "aal"
    description = "AAL: focal marginal CE + marginal Dice + entropy regulariser on ambiguous voxels (Chen et al. 2024)"

    def __init__(self, network: torch.nn.Module, focal_gamma: float = 2.0, entropy_weight: float = 0.1):
        super().__init__()
        self.network = network
        self.focal_gamma = focal_gamma
        self.entropy_weight = entropy_weight

    @classmethod
    def from_config(cls, config) -> AALMethod:
        options = config.method.options
        return cls(
            build_network(config, aux_heads=False),
            focal_gamma=option(options, "focal_gamma", 2.0),
            entropy_weight=option(options, "entropy_weight", 0.1),
        )

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        labels, annotated = batch["labels"], batch["annotated"]
        logits = self.network(batch["image"], aux=False).main_logits.float()
        main_probs = torch.softmax(logits, dim=1)
        dice = marginal_dice_loss(main_probs, labels, annotated)
        focal = marginal_cross_entropy(logits, labels, annotated, gamma=self.focal_gamma)
        entropy = ambiguous_entropy(logits, labels, annotated)
        total = dice + focal + self.entropy_weight * entropy
        return LossOutput(total, {"main": dice.detach(), "focal_ce": focal.detach(), "entropy": entropy.detach()})

