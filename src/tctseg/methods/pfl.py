"""PFL — pseudo-full labels (Liu, Deng, Wang, Hui, Li, Li, Luo, Sun, Quan, Yang et al. 2022,
"Universal segmentation of 33 anatomies", arXiv:2203.02098; TCT paper ref. [24]).

What the TCT paper says PFL is (§4.2 "Model Efficiency", App. D, Tab. 10): "PFL requires
training five individual networks to generate pseudo-fully labeled datasets" — one network
per organ — and then a network trained on the pseudo-full labels that "generates
multi-channel predictions"; its training time is about twice TAL's (58.47 against 29.58).
Here it is three stages, run by :mod:`tctseg.training.pfl_pipeline` (``tctseg train
--method pfl``, ``run`` and ``compare`` run all of them and resume after a kill at any):

1. one single-organ network per class, each trained on the training cases that annotate
   its organ (organ against everything else, 2 output channels), for
   ``method.options.stage1_epochs`` epochs (:func:`stage1_epochs`; default ``train.epochs``,
   the full schedule);
2. every training volume labelled offline by sliding window (:func:`pseudo_full_label`):
   ground truth wins wherever the case has it;
3. a FRESH network (same 3D U-Net, N+1 channels) trained on the merged labels for the full
   schedule. Its checkpoint is the PFL model; inference is one forward pass.

This module holds the merge rule and the method every stage trains (its loss:
:mod:`tctseg.losses.dice_ce`). The stages (folders, trainers, resuming) are in the pipeline
module.

Merge rule (:func:`pseudo_full_label`), per voxel i of a case with annotated set Φ, ground
truth y_i, and p^k_i the stage-1 network of organ k's foreground probability:

    merged_i = y_i                          if y_i ≠ 0                  (ground truth wins)
             = argmax_{k ∉ Φ, p^k_i > ½} p^k_i  if some unannotated organ's network says "organ"
             = 0                            otherwise

An annotated organ is never filled in: the case's labels say where it is, so y_i = 0 is
ground truth for it. Two networks both above ½ at a voxel: the more confident one wins
(ties to the lower class id).

Loss (stages 1 and 3, :func:`tctseg.losses.dice_ce.full_dice_ce_loss`): plain Dice over all
channels (per sample, background included) plus cross-entropy, on labels taken as complete,
``1 − mean_{k=0..C−1} dice(p^k, [y = k]) + CE(p, y)`` — nnU-Net's loss, the usual training
of the single-organ and the final networks. The batch's ``annotated`` mask is not used:
the pipeline hands this method complete labels (binary organ masks in stage 1, pseudo-full
labels in stage 3). Trained by a plain Trainer on partial labels (outside the pipeline) it
is ordinary supervised training that takes unlabelled organs for background.

Option: ``method.options.stage1_epochs`` (int, 1 … ``train.epochs``; default ``train.epochs``):
the epochs of each stage-1 network, with the same iterations per epoch, and the learning-rate
schedule (``train.schedule``) run over those epochs. By default PFL costs N + 1 full
trainings (N single-organ networks and the final one) plus the labelling, which the
efficiency table counts. The paper's "about twice TAL's time" (Tab. 10: 58.47 against 29.58)
is N · stage1_epochs ≈ train.epochs: with its five organs and 200 epochs,
``stage1_epochs: 40`` makes stage 1 cost one full training (PFL ≈ 2 × TAL plus the
labelling).

Where this differs from the original: the issue that asked for this baseline names no
official code of ref. [24], so the stages follow the TCT paper's description above, not an
official file. The stage-1 networks use the same 3D U-Net as every other method here and,
by default, the full schedule (the paper's "about twice TAL's time" suggests shorter or
smaller single-organ runs: ``stage1_epochs`` shortens them). A class that every training case annotates gets no
stage-1 network (its pseudo labels would never be used); a class that no training case
annotates cannot be learnt and is left as background. No confidence threshold beyond each
binary network's own ½, no iterative re-labelling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np
import torch

from tctseg.errors import ConfigError
from tctseg.losses.dice_ce import full_dice_ce_loss
from tctseg.methods.base import LossOutput, Method, build_network
from tctseg.methods.options import option
from tctseg.methods.registry import register_method

# a stage-1 network's foreground probability must exceed this to claim a voxel
ORGAN_THRESHOLD = 0.5


def pseudo_full_label(
    label: np.ndarray, annotated: Iterable[int], organ_probabilities: Mapping[int, np.ndarray]
) -> np.ndarray:
    """Merge one case's ground truth with the stage-1 networks' predictions (module docstring).

    Args:
        label: ``[X, Y, Z]`` integer global ids (0 = background or not annotated).
        annotated: global ids (1..N) the case annotates; their networks are ignored.
        organ_probabilities: global id k → ``[X, Y, Z]`` foreground probability of organ k's
            single-organ network (only the organs that have one).
    Returns:
        ``[X, Y, Z]`` merged labels, dtype of ``label``; a new array (``label`` is not changed).
    """
    label = np.asarray(label)
    annotated = {int(k) for k in annotated}
    best = np.full(label.shape, ORGAN_THRESHOLD, dtype=np.float32)
    chosen = np.zeros(label.shape, dtype=label.dtype)
    for class_id in sorted(organ_probabilities):
        if class_id in annotated:
            continue
        probability = np.asarray(organ_probabilities[class_id], dtype=np.float32)
        if probability.shape != label.shape:
            raise ValueError(f"organ {class_id}: probabilities {probability.shape} do not match the label {label.shape}")
        better = probability > best  # strict: a tie keeps the lower class id
        chosen[better] = class_id
        np.copyto(best, probability, where=better)
    return np.where(label != 0, label, chosen).astype(label.dtype, copy=False)


def stage1_epochs(config) -> int:
    """Epochs of each stage-1 single-organ network: ``method.options.stage1_epochs``, default
    ``train.epochs`` (the full schedule); ConfigError outside 1 … ``train.epochs`` (a longer
    stage 1 than the final network's schedule is not what the option is for)."""
    options = config.method.options
    epochs = option(options, "stage1_epochs", config.train.epochs, int)
    if not 1 <= epochs <= config.train.epochs:
        raise ConfigError(
            f"method.options.stage1_epochs: {epochs} is not between 1 and train.epochs ({config.train.epochs})"
        )
    return epochs


@register_method
class PFLMethod(Method):
    name = "pfl"
    description = "PFL: single-organ networks label what each dataset leaves out; a fresh network learns the merged labels (Liu et al. 2022)"
    trains_in_stages: ClassVar[bool] = True

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    @classmethod
    def from_config(cls, config) -> PFLMethod:
        stage1_epochs(config)  # checked when the method is built (compare builds every method first)
        return cls(build_network(config, aux_heads=False))

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        logits = self.network(batch["image"], aux=False).main_logits
        dice, ce = full_dice_ce_loss(logits, batch["labels"])
        return LossOutput(dice + ce, {"main": dice.detach(), "ce": ce.detach()})
