"""The interface every method implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from tctseg.network import SegmentationNetwork, UNet3D

if TYPE_CHECKING:
    from tctseg.config import Config


@dataclass
class LossOutput:
    """``total``: the scalar to back-propagate. ``parts``: named scalars for logging (tensors,
    detached, so that logging them costs no host-device synchronisation inside the step)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """A training method: owns its network and any learnable loss parameters.

    Subclasses set ``name`` and ``description``, build ``self.network`` in ``__init__`` and
    implement :meth:`forward`. DDP wraps the whole method, so learnable loss weights are
    synchronised like network weights; a checkpoint holds ``method.state_dict()``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # The one place that says how a method's output is read. False: one softmax over N+1
    # classes (``predict_logits``), scored on the argmax label map. True (DoDNet, CLIP-Driven,
    # Hermes: :class:`~tctseg.methods.task_prompted.TaskPromptedMethod`): one sigmoid per class
    # (``task_logits`` ``[B, N, *S]``); inference blends σ per task and ``run``/``compare``
    # score each task's mask σ > ½ on its own, overlaps allowed, as their authors do.
    task_prompted: ClassVar[bool] = False
    # True (PFL): training is a pipeline of several trainings, not one Trainer run;
    # :func:`tctseg.training.build.build_trainer` picks it for ``train``/``run``/``compare``.
    trains_in_stages: ClassVar[bool] = False
    # State-dict keys whose shape the checkpoint decides: the method rebuilds them to fit in
    # ``_load_from_state_dict`` (CLIP-Driven's text embeddings and the layer reading them), so
    # :func:`tctseg.checkpoint.load_weights` does not refuse a checkpoint for their shape.
    sized_by_checkpoint: ClassVar[tuple[str, ...]] = ()
    network: nn.Module

    @classmethod
    def from_config(cls, config: Config) -> Method:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        """batch: ``image`` ``[B, 1, *S]``, ``labels`` ``[B, *S]``, ``annotated`` ``[B, N]``."""
        raise NotImplementedError

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Inference: ``[B, 1, *S]`` → main-head logits ``[B, N+1, *S]`` (auxiliary heads not run)."""
        return self.network(image, aux=False).main_logits

    def predict_with_aux(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 1, *S]`` → main logits ``[B, N+1, *S]`` and auxiliary logits ``[B, N, 2, *S]``
        (networks with auxiliary task heads only)."""
        out = self.network(image, aux=True)
        return out.main_logits, out.aux_logits


def build_network(config: Config, aux_heads: bool) -> SegmentationNetwork:
    """The shared 3D U-Net with the heads a method asks for, sized by ``config.network``."""
    net = config.network
    return SegmentationNetwork(
        num_classes=config.num_classes,
        width=net.width,
        depth=net.depth,
        norm=net.norm,
        aux_heads=aux_heads,
    )


def build_backbone(config: Config) -> UNet3D:
    """The same shared 3D U-Net without heads (the task-prompted methods add their own), sized
    by ``config.network``."""
    net = config.network
    return UNet3D(1, net.width, net.depth, net.norm)
