"""PFL — pseudo-full labels (Liu, Deng, Wang, Hui, Li, Li, Luo, Sun, Quan, Yang et al. 2022,
"Universal segmentation of 33 anatomies", arXiv:2203.02098; paper ref. [24]).

Two stages: (1) models trained on the partial labels label the organs each dataset leaves
unlabeled; (2) one multi-class model trains on the merged, "pseudo-full" labels, ground
truth always winning over pseudo labels.

Merging (:func:`merge_pseudo_labels`), per voxel i of a sample with annotated set Φ and the
stage-1 teacher's prediction ``t_i = argmax_k P_teacher(k | x_i)``:

    merged_i = labels_i        if labels_i ≠ 0                  (ground truth wins)
             = t_i             if labels_i = 0 and t_i ∉ Φ ∪ {0} (an organ this dataset leaves unlabeled)
             = 0               otherwise                        (labeled background, or the teacher
                                                                 claims an annotated organ the label denies)

Stage 2 loss: plain (non-marginal) Dice + CE over all N+1 classes on the merged labels,
``1 − mean_{k=0..N} dice(p^k, [merged = k]) + CE(p, merged)``.

Both stages run inside the one training loop, so nothing trainer-side is needed:

* ``method.options.teacher_checkpoint: path`` — a checkpoint of any tctseg method trained on
  the same ``classes`` (e.g. a TAL run's ``checkpoint_best.pt``) is the stage-1 model. It is
  loaded on the first training step, frozen, and kept out of this method's state dict (so
  a PFL checkpoint predicts without it; resuming needs the file again). Every step is stage 2.
* without a teacher checkpoint, the first ``stage1_fraction`` (default 0.5) of
  ``train.epochs`` is stage 1: the network trains with TAL's marginal Dice (paper Eq. 1–2).
  At the first step of stage 2 the network's weights are copied into a frozen teacher
  (saved in the state dict, so a resumed run keeps the same teacher).

Choices where the original differs: ref. [24] trains one single-organ model per organ
(paper §4.3: "five individual networks") as the stage-1 labellers; here stage 1 is one
partial-label (TAL) model, or whatever model the user supplies as the teacher; pseudo
labels are made on the fly for each patch (with the current augmentation), not written to
disk once; no confidence threshold on the teacher (argmax, as "pseudo-full labels").
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from tctseg.errors import CheckpointError, ConfigError
from tctseg.losses import marginal_dice_loss, soft_dice
from tctseg.methods.base import LossOutput, Method, build_network
from tctseg.methods.me import option
from tctseg.methods.registry import register_method


def merge_pseudo_labels(labels: torch.Tensor, annotated: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Pseudo-full labels: the teacher's classes fill only the voxels of organs the sample
    does not annotate; ground truth always wins (see the module docstring).

    Args:
        labels: ``[B, *S]`` integer global ids (0 = background or not annotated).
        annotated: ``[B, N]`` bool.
        teacher_probs: ``[B, N+1, *S]`` teacher class scores (probabilities or logits).
    Returns:
        ``[B, *S]`` merged labels, same dtype as ``labels``; a new tensor.
    """
    n = annotated.shape[1]
    expected = (labels.shape[0], n + 1, *labels.shape[1:])
    if tuple(teacher_probs.shape) != expected:
        raise ValueError(
            f"teacher_probs {tuple(teacher_probs.shape)} must be [B, N+1, *S] for labels "
            f"{tuple(labels.shape)} and annotated {tuple(annotated.shape)}"
        )
    teacher = teacher_probs.argmax(1)  # [B, *S]
    # allowed[b, k]: k is a class sample b leaves unlabeled (k ≥ 1, k ∉ Φ_b)
    allowed = torch.cat([torch.zeros_like(annotated[:, :1]), ~annotated], dim=1)  # [B, N+1]
    teacher_allowed = allowed.gather(1, teacher.flatten(1)).view_as(teacher)
    fill = (labels == 0) & teacher_allowed
    return torch.where(fill, teacher.to(labels.dtype), labels)


def full_dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Dice (all N+1 channels, per sample) and CE on fully labeled targets.

    logits ``[B, N+1, *S]``, labels ``[B, *S]`` → ``(dice_loss, ce)`` scalars.
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=1)
    target = F.one_hot(labels.long(), logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    dice = 1.0 - soft_dice(probs, target).mean(1).mean()
    ce = F.cross_entropy(logits, labels.long())
    return dice, ce


def load_teacher(path: str | Path, classes: list[str]) -> torch.nn.Module:
    """A frozen method (eval mode, CPU) from a tctseg checkpoint trained on ``classes``."""
    from tctseg.training.checkpoint import load_method_from_checkpoint

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"method.options.teacher_checkpoint: {path} does not exist")
    teacher, teacher_config = load_method_from_checkpoint(path, device="cpu")
    if list(teacher_config.classes) != list(classes):
        raise CheckpointError(
            f"{path}: the teacher was trained on classes {teacher_config.classes}, this run has {classes}"
        )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@register_method
class PFLMethod(Method):
    name = "pfl"
    description = "PFL: a stage-1 teacher labels unannotated organs; stage 2 trains on merged labels (Liu et al. 2022)"

    def __init__(
        self,
        network: torch.nn.Module,
        stage1_epochs: float = 0.0,
        teacher_checkpoint: str | None = None,
        classes: list[str] | None = None,
    ):
        super().__init__()
        self.network = network
        self.stage1_epochs = stage1_epochs
        self.teacher_checkpoint = teacher_checkpoint
        self.classes = list(classes or [])
        # an external teacher stays out of the module tree (and the state dict): see docstring
        self._external: list[torch.nn.Module] = []
        if teacher_checkpoint is None:
            self.teacher = copy.deepcopy(network)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.register_buffer("teacher_ready", torch.tensor(False))
        else:
            self.teacher = None

    @classmethod
    def from_config(cls, config) -> PFLMethod:
        options = config.method.options
        teacher = options.get("teacher_checkpoint")
        fraction = option(options, "stage1_fraction", 0.5)
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(f"method.options.stage1_fraction: must be in [0, 1), got {fraction}")
        return cls(
            build_network(config, aux_heads=False),
            stage1_epochs=0.0 if teacher else fraction * config.train.epochs,
            teacher_checkpoint=str(teacher) if teacher else None,
            classes=list(config.classes),
        )

    def stage(self, epoch: int) -> int:
        """1 while the partial-label model trains, 2 once pseudo-full labels are used."""
        return 1 if self.teacher_checkpoint is None and epoch < self.stage1_epochs else 2

    def teacher_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The frozen stage-1 model's ``[B, N+1, *S]`` class scores (no gradient)."""
        if self.teacher_checkpoint is not None:
            if not self._external:
                self._external.append(load_teacher(self.teacher_checkpoint, self.classes))
            teacher = self._external[0].to(image.device)
            self._external[0] = teacher
            with torch.no_grad():
                return teacher.predict_logits(image)
        if not bool(self.teacher_ready):
            # first step of stage 2: the stage-1 network becomes the frozen teacher
            self.teacher.load_state_dict(self.network.state_dict())
            self.teacher_ready.fill_(True)
        self.teacher.eval()
        with torch.no_grad():
            return self.teacher(image, aux=False).main_logits

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        labels, annotated = batch["labels"], batch["annotated"]
        logits = self.network(batch["image"], aux=False).main_logits.float()
        if self.stage(epoch) == 1:
            loss = marginal_dice_loss(torch.softmax(logits, dim=1), labels, annotated)
            return LossOutput(loss, {"main": loss.detach(), "stage": torch.tensor(1.0, device=logits.device)})
        merged = merge_pseudo_labels(labels, annotated, self.teacher_logits(batch["image"]).float())
        dice, ce = full_dice_ce_loss(logits, merged)
        pseudo_fraction = ((merged != labels).float().mean()).detach()
        parts = {"main": dice.detach(), "ce": ce.detach(), "pseudo_fraction": pseudo_fraction}
        parts["stage"] = torch.tensor(2.0, device=logits.device)
        return LossOutput(dice + ce, parts)
