"""Loss functions for partially labeled multi-organ segmentation, for use in any training loop:
Task Consistency Training's (paper Eq. 1–7) and the baselines', one family per module
(like MONAI's ``monai/losses``); the partial-label primitives they share are written once, in
:mod:`tctseg.losses.partial_labels`.

Shapes (SPEC "Notation"): ``main_probs`` ``[B, N+1, *S]`` (softmax over dim 1, channel 0
background); ``aux_probs`` ``[B, N, 2, *S]`` (softmax over dim 2); ``task_logits``
``[B, N, *S]`` (one sigmoid per class); ``labels`` ``[B, *S]`` integer global ids;
``annotated`` ``[B, N]`` bool.
"""

from tctseg.losses.binary_task import adaptive_tversky_dice_loss, binary_task_losses, official_task_losses
from tctseg.losses.consistency import ConsistencyTerms, consistency_loss, consistency_terms
from tctseg.losses.dice import (
    EPSILON,
    auxiliary_dice_loss,
    auxiliary_dice_terms,
    batch_dice,
    marginal_dice_loss,
    soft_dice,
)
from tctseg.losses.dice_ce import full_dice_ce_loss
from tctseg.losses.entropy import entropy_regulariser
from tctseg.losses.exclusion import exclusion_dice, exclusion_targets
from tctseg.losses.marginal import marginal_batch_dice_loss, marginal_cross_entropy, present_label_dice_loss
from tctseg.losses.partial_labels import (
    marginal_log_probs,
    mean_over_annotated,
    merge_unannotated_into_background,
    one_hot_masks,
    unannotated_mask,
)
from tctseg.losses.rampup import sigmoid_rampup
from tctseg.losses.uncertainty import UncertaintyWeightedLoss

__all__ = [
    "EPSILON",
    "ConsistencyTerms",
    "UncertaintyWeightedLoss",
    "adaptive_tversky_dice_loss",
    "auxiliary_dice_loss",
    "auxiliary_dice_terms",
    "batch_dice",
    "binary_task_losses",
    "consistency_loss",
    "consistency_terms",
    "entropy_regulariser",
    "exclusion_dice",
    "exclusion_targets",
    "full_dice_ce_loss",
    "marginal_batch_dice_loss",
    "marginal_cross_entropy",
    "marginal_dice_loss",
    "marginal_log_probs",
    "mean_over_annotated",
    "merge_unannotated_into_background",
    "official_task_losses",
    "one_hot_masks",
    "present_label_dice_loss",
    "sigmoid_rampup",
    "soft_dice",
    "unannotated_mask",
]
