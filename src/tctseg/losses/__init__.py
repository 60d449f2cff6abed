"""Loss functions of Task Consistency Training (paper Eq. 1–7), for use in any training loop.

Shapes (SPEC "Notation"): ``main_probs`` ``[B, N+1, *S]`` (softmax over dim 1, channel 0
background); ``aux_probs`` ``[B, N, 2, *S]`` (softmax over dim 2); ``labels`` ``[B, *S]``
integer global ids; ``annotated`` ``[B, N]`` bool.
"""

from tctseg.losses.consistency import ConsistencyTerms, consistency_loss, consistency_terms
from tctseg.losses.dice import (
    EPSILON,
    auxiliary_dice_loss,
    auxiliary_dice_terms,
    marginal_dice_loss,
    soft_dice,
)
from tctseg.losses.rampup import sigmoid_rampup
from tctseg.losses.uncertainty import UncertaintyWeightedLoss

__all__ = [
    "EPSILON",
    "ConsistencyTerms",
    "UncertaintyWeightedLoss",
    "auxiliary_dice_loss",
    "auxiliary_dice_terms",
    "consistency_loss",
    "consistency_terms",
    "marginal_dice_loss",
    "sigmoid_rampup",
    "soft_dice",
]
