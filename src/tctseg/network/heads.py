"""Heads on the backbone's last feature map (paper App. B: one 3×3×3 conv each)."""

from __future__ import annotations

import torch
from torch import nn


class SegmentationHead(nn.Module):
    """Main segmentation head (MSH): features ``[B, F, *S]`` → logits ``[B, N+1, *S]``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)


class AuxiliaryTaskHeads(nn.Module):
    """N auxiliary task heads (ATHs), one binary 3×3×3 conv per class, run as ONE convolution.

    A conv with ``2N`` output channels is exactly N independent ``F → 2`` convs (each output
    channel has its own kernel over all inputs), with the same parameters (N·(2·27·F + 2)),
    but one kernel launch instead of N. Features ``[B, F, *S]`` → logits ``[B, N, 2, *S]``;
    ``[:, j-1, 1]`` is ATH j's foreground logit.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv3d(in_channels, 2 * num_classes, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.conv(features)
        return logits.unflatten(1, (self.num_classes, 2))
