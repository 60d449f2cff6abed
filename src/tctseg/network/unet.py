"""The 3D U-Net backbone of paper Tab. 6 (SPEC "Network"), built from width and depth.

With ``width=16, depth=5`` the convolutions are exactly Tab. 6's::

    encoder   {1,16}{16,16} | {16,16}{16,32} | {32,32}{32,64} | {64,64}{64,128}
    bottleneck {128,128}{128,256}
    decoder   {384,128}{128,128} | {192,64}{64,64} | {96,32}{32,32} | {48,16}{16,16}

Stage s of the encoder doubles the channels in its second conv (stage 1 only lifts the
input to ``width``); 2×2×2 max-pool goes down, trilinear ×2 goes up, skips concatenate.
The backbone knows nothing of heads or losses: it returns the last decoder feature map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tctseg.network.norm import InstanceNorm
from tctseg.settings import NORMS


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``batch`` | ``instance`` | ``group`` | ``none``."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return InstanceNorm(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")


class ConvBlock(nn.Sequential):
    """Two 3×3×3 convolutions, each followed by norm and ReLU: in → mid → out channels."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, norm: str):
        super().__init__(
            nn.Conv3d(in_channels, mid_channels, 3, padding=1),
            make_norm(norm, mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid_channels, out_channels, 3, padding=1),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )

    def forward_concatenated(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``self(torch.cat([first, second], dim=1))`` without building the concatenation.

        The first convolution is linear in its input channels, so it is the sum of two
        convolutions, one over each part with its slice of the kernel (the same parameters).
        On the CPU that skips the concatenation's copy forward and the non-contiguous gradient
        slices backward (each copied again before the upsampling's backward): 27 % less time
        for a decoder stage at full resolution (BENCHMARKS.md, "Where a training step's time goes").
        """
        conv = self[0]
        split = first.shape[1]
        x = F.conv3d(first, conv.weight[:, :split], conv.bias, padding=conv.padding)
        x = x + F.conv3d(second, conv.weight[:, split:], None, padding=conv.padding)
        for layer in list(self)[1:]:
            x = layer(x)
        return x


class UNet3D(nn.Module):
    """3D U-Net backbone: image ``[B, in_channels, X, Y, Z]`` → features ``[B, width, X, Y, Z]``.

    Any spatial size works: inputs are zero-padded at the far end of each axis up to a
    multiple of ``2**(depth-1)`` (the total down-sampling) and the output is cropped back,
    so the returned map always has the input's spatial shape.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 5, norm: str = "batch"):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.width = width
        self.depth = depth
        # encoder stage outputs: width, 2·width, 4·width, ...; the bottleneck doubles once more
        skips = [width * 2**s for s in range(depth - 1)]
        self.encoder = nn.ModuleList()
        channels = in_channels
        for s, out in enumerate(skips):
            mid = width if s == 0 else channels
            self.encoder.append(ConvBlock(channels, mid, out, norm))
            channels = out
        self.bottleneck = ConvBlock(channels, channels, channels * 2, norm)
        channels *= 2
        self.decoder = nn.ModuleList()
        for skip in reversed(skips):
            self.decoder.append(ConvBlock(channels + skip, skip, skip, norm))
            channels = skip
        # the channel counts, published for the heads and fusions that sit on a stage (as
        # dynamic-network-architectures' decoder reads ``encoder.output_channels``)
        self.encoder_channels = tuple(skips)
        self.bottleneck_channels = skips[-1] * 2
        self.decoder_channels = tuple(reversed(skips))
        self.out_channels = self.decoder_channels[-1]

    def stage_channels(self, kind: str, index: int) -> int:
        """Output channels of stage ``index`` of ``kind`` (``encoder``, ``bottleneck``,
        ``decoder``: the names :meth:`forward_stages` hands its hook)."""
        if kind == "encoder":
            return self.encoder_channels[index]
        if kind == "bottleneck":
            return self.bottleneck_channels
        if kind == "decoder":
            return self.decoder_channels[index]
        raise ValueError(f"unknown U-Net stage kind {kind!r}; expected encoder, bottleneck or decoder")

    @property
    def divisor(self) -> int:
        """Spatial sizes that are multiples of this need no padding."""
        return 2 ** (self.depth - 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(image)[1]

    def forward_stages(
        self, image: torch.Tensor, hook: Callable[[str, int, torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass exposing the bottleneck, with an optional ``hook(kind, index,
        features) -> features`` applied after every stage (``kind``: ``encoder``,
        ``bottleneck``, ``decoder``) — what task-conditioned methods (DoDNet, Hermes) need.

        Returns ``(bottleneck [B, C_b, *S_padded/2^(depth-1)], features [B, width, *S])``.
        """
        spatial = image.shape[2:]
        pad = [(-size) % self.divisor for size in spatial]
        if any(pad):
            # F.pad takes the last axis first: (Z_lo, Z_hi, Y_lo, Y_hi, X_lo, X_hi)
            image = F.pad(image, [p for axis_pad in reversed(pad) for p in (0, axis_pad)])
        x = image
        skips = []
        for s, stage in enumerate(self.encoder):
            x = stage(x)
            if hook is not None:
                x = hook("encoder", s, x)
            skips.append(x)
            x = F.max_pool3d(x, 2)
        x = self.bottleneck(x)
        if hook is not None:
            x = hook("bottleneck", 0, x)
        bottleneck = x
        for s, (stage, skip) in enumerate(zip(self.decoder, reversed(skips))):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = stage.forward_concatenated(x, skip)  # = stage(torch.cat([x, skip], dim=1))
            if hook is not None:
                x = hook("decoder", s, x)
        if any(pad):
            x = x[(..., *(slice(0, size) for size in spatial))]
        return bottleneck, x
