"""TAL — target-adaptive loss (Fang & Yan 2020, "Multi-organ segmentation over partially
labeled datasets with multi-scale feature abstraction", IEEE TMI).

The main head alone, trained with the marginal Dice loss (paper Eq. 1–2): classes a sample
does not annotate are merged into its background. No auxiliary heads.
"""

from __future__ import annotations

import torch

from tctseg.losses import marginal_dice_loss
from tctseg.methods.base import LossOutput, Method, build_network
from tctseg.methods.registry import register_method


@register_method
class TALMethod(Method):
    name = "tal"
    description = "TAL: main head with the marginal (target-adaptive) Dice loss"

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    @classmethod
    def from_config(cls, config) -> TALMethod:
        return cls(build_network(config, aux_heads=False))

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        logits = self.network(batch["image"], aux=False).main_logits
        main_probs = torch.softmax(logits.float(), dim=1)
        loss = marginal_dice_loss(main_probs, batch["labels"], batch["annotated"])
        return LossOutput(loss, {"main": loss.detach()})
