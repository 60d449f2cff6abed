"""What the binary, task-prompted baselines (DoDNet, CLIP-Driven, Hermes) share: one sigmoid
map per class from ``task_logits(image) -> [B, N, *S]`` (:class:`TaskPromptedMethod`), the
backbone run with its bottleneck exposed and stage hooks (:func:`backbone_forward`), the
controller-driven dynamic head of DoDNet and CLIP-Driven (:class:`DynamicHead`,
:class:`ControlledDynamicHeads`) and the N binary maps read as N+1 class scores
(:func:`binary_to_multiclass_logits`). Their losses: :mod:`tctseg.losses.binary_task`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tctseg.losses.binary_task import binary_task_losses
from tctseg.methods.base import LossOutput, Method
from tctseg.network import UNet3D

# hook(stage_kind, index, features) -> features, stage_kind in {"encoder", "bottleneck", "decoder"}
StageHook = Callable[[str, int, torch.Tensor], torch.Tensor]


def backbone_forward(
    backbone: UNet3D, image: torch.Tensor, hook: StageHook | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` as :meth:`UNet3D.forward` does, exposing the bottleneck and letting
    ``hook`` rewrite the features after every stage (Hermes' prior fusion).

    Args:
        image: ``[B, 1, *S]``.
    Returns:
        ``(bottleneck [B, C_b, *S/2^(depth-1)], features [B, width, *S])``; the bottleneck
        is the hooked one.
    """
    return backbone.forward_stages(image, hook)


class DynamicHead(nn.Module):
    """A stack of 1×1×1 convolutions whose weights are given per sample (DoDNet's head).

    ``channels`` (e.g. ``(8, 8, 8, 1)``): input, hidden..., output channels. ``num_params``
    is the length of the flat parameter vector a controller must produce.
    """

    def __init__(self, channels: tuple[int, ...] = (8, 8, 8, 1)):
        super().__init__()
        self.channels = tuple(channels)
        self.shapes = [(c_out, c_in) for c_in, c_out in zip(self.channels[:-1], self.channels[1:])]
        self.num_params = sum(o * i + o for o, i in self.shapes)

    def forward(self, features: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """features ``[B, C_in, *S]``, params ``[B, num_params]`` -> logits ``[B, C_out, *S]``."""
        b, spatial = features.shape[0], features.shape[2:]
        x = features.flatten(2)  # [B, C, L]
        offset = 0
        for k, (c_out, c_in) in enumerate(self.shapes):
            weight = params[:, offset : offset + c_out * c_in].view(b, c_out, c_in)
            offset += c_out * c_in
            bias = params[:, offset : offset + c_out].view(b, c_out, 1)
            offset += c_out
            x = torch.bmm(weight, x) + bias
            if k < len(self.shapes) - 1:
                x = F.relu(x)
        return x.view(b, -1, *spatial)


def binary_to_multiclass_logits(task_logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """N independent binary maps -> N+1 class log-scores for the shared inference path.

    ``[B, N, *S]`` task logits -> ``log [1 − max_c p_c, p_1, …, p_N]`` ``[B, N+1, *S]`` with
    ``p_c = σ(z_c)``: argmax is background where every ``p_c < ½``, else the most probable task.
    """
    probs = torch.sigmoid(task_logits.float())
    background = 1.0 - probs.max(dim=1, keepdim=True).values
    return torch.log(torch.cat([background, probs], dim=1).clamp_min(eps))


class TaskPromptedMethod(Method):
    """Common part of the binary, task-prompted baselines: loss and inference from
    ``task_logits(image) -> [B, N, *S]``, one sigmoid per class (``task_prompted``)."""

    task_prompted = True
    num_classes: int

    def task_logits(self, image: torch.Tensor, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def task_logits_for(self, image: torch.Tensor, tasks: Sequence[int] | None = None) -> torch.Tensor:
        """Task logits ``[B, N, *S]`` of images whose dataset annotates ``tasks`` (global class
        ids 1..N; None: every class), the way ``run``/``compare`` evaluate a test set. Here each
        task's map does not depend on which others are asked (DoDNet, CLIP-Driven), so it is
        :meth:`task_logits`; Hermes, whose task tokens attend to one another, overrides it."""
        return self.task_logits(image)

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        logits = self.task_logits(batch["image"], batch)
        bce, dice = binary_task_losses(logits, batch["labels"], batch["annotated"])
        return LossOutput(bce + dice, {"main": dice.detach(), "bce": bce.detach()})

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        return binary_to_multiclass_logits(self.task_logits(image))


def group_norm(channels: int, groups: int = 16) -> nn.GroupNorm:
    """``GroupNorm`` with ``groups`` groups, or the largest divisor of ``channels`` below it
    (16 groups as the official heads; a CPU-sized width of 8 gets 8)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


@dataclass(frozen=True)
class DynamicHeadOptions:
    """``method.options`` of DoDNet and CLIP-Driven's dynamic head."""

    head_channels: int = 8  # the dynamic head's width (8 -> 8 -> 8 -> 1)


class ControlledDynamicHeads(nn.Module):
    """An image code + a task code -> controller -> :class:`DynamicHead` on the projected
    decoder features, run once per task. Shared by DoDNet (one-hot codes) and CLIP-Driven
    (text-embedding codes).

    ``image_encoder``: bottleneck ``[B, C_b, ...]`` -> image code ``[B, image_channels, ...]``
    (default: the global average, ``image_channels = C_b``). ``feature_norm``: GroupNorm +
    ReLU before the 1×1×1 projection of the decoder features (CLIP-Driven's ``precls_conv``).
    """

    def __init__(
        self,
        feature_channels: int,
        image_channels: int,
        code_channels: int,
        head_channels: int = 8,
        image_encoder: nn.Module | None = None,
        feature_norm: bool = False,
    ):
        super().__init__()
        conv = nn.Conv3d(feature_channels, head_channels, 1)
        self.project = nn.Sequential(group_norm(feature_channels), nn.ReLU(), conv) if feature_norm else conv
        self.image_encoder = image_encoder
        self.head = DynamicHead((head_channels, head_channels, head_channels, 1))
        self.controller = nn.Linear(image_channels + code_channels, self.head.num_params)
        self.head_passes = 0  # dynamic-head calls so far (N per image at inference)

    def forward(self, bottleneck: torch.Tensor, features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """bottleneck ``[B, C_b, ...]``, features ``[B, F, *S]``, codes ``[N, K]`` or ``[B, N, K]``
        -> task logits ``[B, N, *S]``."""
        image_code = bottleneck if self.image_encoder is None else self.image_encoder(bottleneck)
        pooled = image_code.float().mean(dim=tuple(range(2, image_code.ndim)))  # [B, image_channels]
        projected = self.project(features)
        b = features.shape[0]
        if codes.ndim == 2:
            codes = codes.unsqueeze(0).expand(b, -1, -1)
        maps = []
        for c in range(codes.shape[1]):
            params = self.controller(torch.cat([pooled, codes[:, c].to(pooled.dtype)], dim=1))
            maps.append(self.head(projected, params.to(projected.dtype)))
            self.head_passes += 1
        return torch.cat(maps, dim=1)
