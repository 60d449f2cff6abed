"""A backbone with a main head and optional auxiliary task heads (the TCT network)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tctseg.network.heads import AuxiliaryTaskHeads, SegmentationHead
from tctseg.network.unet import UNet3D


class NetworkOutput(NamedTuple):
    """``main_logits`` ``[B, N+1, *S]``; ``aux_logits`` ``[B, N, 2, *S]`` or None when not run."""

    main_logits: torch.Tensor
    aux_logits: torch.Tensor | None


class SegmentationNetwork(nn.Module):
    """3D U-Net + MSH (N+1 channels) + N ATHs (2 channels each) when ``aux_heads``.

    ``forward(image, aux=None)``: the ATHs run when ``aux`` is True, or when ``aux`` is None
    and the module is in training mode. In eval mode (inference) they are not run at all, so
    the deployed model costs what a plain U-Net with one head costs.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 16,
        depth: int = 5,
        norm: str = "batch",
        aux_heads: bool = True,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = UNet3D(in_channels, width, depth, norm)
        self.main_head = SegmentationHead(self.backbone.out_channels, num_classes + 1)
        self.aux_heads = AuxiliaryTaskHeads(self.backbone.out_channels, num_classes) if aux_heads else None

    def forward(self, image: torch.Tensor, aux: bool | None = None) -> NetworkOutput:
        features = self.backbone(image)
        run_aux = self.training if aux is None else aux
        if run_aux and self.aux_heads is None:
            raise ValueError("this network was built without auxiliary task heads")
        if not run_aux:
            return NetworkOutput(self.main_head(features), None)
        return NetworkOutput(*self.both_heads(features))

    def both_heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MSH and the ATHs as ONE convolution: ``[B, F, *S]`` → main logits ``[B, N+1, *S]``
        and auxiliary logits ``[B, N, 2, *S]`` (views of one ``[B, 3N+1, *S]`` output).

        Every output channel of a convolution has its own kernel, so the conv with the two
        heads' kernels stacked computes exactly the two heads (same parameters, each still
        its own module and state-dict entry), while the full-resolution features are read
        once forward and once backward instead of twice, and their two gradients need no sum
        (BENCHMARKS.md, "Where a training step's time goes").
        """
        main, aux = self.main_head.conv, self.aux_heads.conv
        weight = torch.cat([main.weight, aux.weight], dim=0)
        bias = torch.cat([main.bias, aux.bias], dim=0)
        logits = F.conv3d(features, weight, bias, padding=main.padding)
        # split, not two slices: backward then joins the two gradients in one copy instead
        # of zero-filling a full-size gradient per slice and adding them
        main_logits, aux_logits = torch.split(logits, [main.out_channels, aux.out_channels], dim=1)
        return main_logits, aux_logits.unflatten(1, (self.num_classes, 2))


def count_parameters(module: nn.Module | None, include_norm: bool = True) -> int:
    """Number of parameters; ``include_norm=False`` counts conv weights and biases only."""
    if module is None:
        return 0
    if include_norm:
        return sum(p.numel() for p in module.parameters())
    return sum(
        p.numel()
        for m in module.modules()
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear))
        for p in m.parameters(recurse=False)
    )
