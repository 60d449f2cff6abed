"""Instance normalisation that keeps channels-last 3D tensors channels-last.

``nn.InstanceNorm3d`` reshapes its input with ``.contiguous()``: a channels-last tensor is
copied to channels-first, normalised, and the next convolution copies it back — forward and
backward, around every norm of the U-Net. On the CPU those copies were 22–25 % of a width-16
training step (BENCHMARKS.md, "Where a training step's time goes"). PyTorch's GroupNorm with
one group per channel keeps the layout but sums in one pass and loses precision (1e-4
relative error in the gradients against float64, torch's instance norm 1e-7), so it is not
used. :func:`instance_norm` computes the same function as ``F.instance_norm`` with
elementwise operations and reductions that keep the layout, two-pass, with sums as accurate as torch's, at
least as accurate as torch's kernel (tests/test_network.py compares both with float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPATIAL = (2, 3, 4)


def _spatial_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial axes, ``[B, C, X, Y, Z]`` → ``[B, C, 1, 1, 1]``, as accurate as
    torch's sums over contiguous memory. torch reduces a channels-last tensor over its outer
    axes one voxel after the other, and over 10⁴–10⁶ voxels that loses up to 1e-4 of the
    gradients where they nearly cancel (as ``g − mean(g)`` below does). Here blocks of up to
    32 voxels are summed in float32, and the block sums (a 32× smaller tensor) in float64."""
    b, c = t.shape[:2]
    voxels = t.shape[2] * t.shape[3] * t.shape[4]
    if not t.is_contiguous(memory_format=torch.channels_last_3d) or t.is_contiguous():
        return t.mean(SPATIAL, keepdim=True)
    block = 32
    while voxels % block:
        block //= 2
    rows = t.permute(0, 2, 3, 4, 1).reshape(b, voxels // block, block, c)  # a view
    return (rows.sum(2).sum(1, dtype=torch.float64) / voxels).to(t.dtype).view(b, c, 1, 1, 1)


class _InstanceNormChannelsLast(torch.autograd.Function):
    """``y = (x − mean) / sqrt(var + eps) · w + b`` per sample and channel over the spatial
    axes (biased variance), for ``x`` ``[B, C, X, Y, Z]``; forward and backward by hand so that
    only the normalised input and ``1/std`` are kept (what torch's kernel keeps)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        # two passes, as torch's kernel; torch.var_mean would be 10× slower on this layout
        centred = x - _spatial_mean(x)
        rstd = torch.rsqrt(_spatial_mean(centred * centred) + eps)
        xhat = centred.mul_(rstd)
        ctx.save_for_backward(xhat, rstd, weight)
        return torch.addcmul(bias.view(1, -1, 1, 1, 1), xhat, weight.view(1, -1, 1, 1, 1))

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        xhat, rstd, weight = ctx.saved_tensors
        w = weight.view(1, -1, 1, 1, 1)
        mean_grad_y, mean_grad_y_xhat = _spatial_mean(grad_y), _spatial_mean(grad_y * xhat)
        voxels = xhat.shape[2] * xhat.shape[3] * xhat.shape[4]
        grad_weight = mean_grad_y_xhat.sum(0).flatten() * voxels
        grad_bias = mean_grad_y.sum(0).flatten() * voxels
        # dx = rstd · w · (g − mean(g) − xhat · mean(g · xhat)), g = grad_y, in two passes
        scale = w * rstd
        grad_x = torch.addcmul(-mean_grad_y * scale, grad_y, scale)
        grad_x.addcmul_(xhat, mean_grad_y_xhat * scale, value=-1)
        return grad_x, grad_weight, grad_bias, None


def instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``F.instance_norm(x, weight=weight, bias=bias, eps=eps)`` for ``[B, C, X, Y, Z]``; a
    channels-last input gives a channels-last output without a layout copy. Half-precision
    inputs (autocast) are normalised in float32 and returned in their own dtype."""
    if x.dim() != 5 or not x.is_contiguous(memory_format=torch.channels_last_3d) or x.is_contiguous():
        return F.instance_norm(x, weight=weight, bias=bias, eps=eps)
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    y = _InstanceNormChannelsLast.apply(x, weight.to(x.dtype), bias.to(x.dtype), eps)
    return y.to(dtype)


class InstanceNorm(nn.Module):
    """``nn.InstanceNorm3d(channels, affine=True)`` (no running statistics, eps 1e-5) with the
    same parameters and state-dict keys (``weight``, ``bias``: checkpoints load either way),
    computed by :func:`instance_norm` so that channels-last tensors stay channels-last."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine=True"
