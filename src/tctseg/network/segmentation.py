"""A backbone with a main head and optional auxiliary task heads (the TCT network)."""

from __future__ import annotations

from typing import NamedTuple

import torch
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
        main_logits = self.main_head(features)
        run_aux = self.training if aux is None else aux
        if run_aux and self.aux_heads is None:
            raise ValueError("this network was built without auxiliary task heads")
        aux_logits = self.aux_heads(features) if run_aux else None
        return NetworkOutput(main_logits, aux_logits)


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
