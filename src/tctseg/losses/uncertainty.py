"""Homoscedastic uncertainty weighting of several losses — paper Eq. 7 (UAUWL / UWL)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class UncertaintyWeightedLoss(nn.Module):
    """``Σ_k exp(−s_k)·L_k + ½·s_k`` with learnable ``s_k = log σ_k²`` initialised to 0.

    Eq. 7's ``(1/σ²)·L + log σ`` term by term (``log σ = s/2``). UAUWL uses two terms (main
    head, all auxiliary heads together); UWL (Tab. 9 ablation) uses 1 + N (one per head).
    ``log_vars`` is a Parameter of shape ``[num_terms]``, optimised with the network.
    """

    def __init__(self, num_terms: int):
        super().__init__()
        if num_terms < 1:
            raise ValueError(f"num_terms must be >= 1, got {num_terms}")
        self.log_vars = nn.Parameter(torch.zeros(num_terms))

    def forward(self, losses: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """losses: ``num_terms`` scalar tensors (or one ``[num_terms]`` tensor) → scalar."""
        values = torch.stack(list(losses)) if not isinstance(losses, torch.Tensor) else losses
        if values.shape != self.log_vars.shape:
            raise ValueError(f"expected {self.log_vars.numel()} losses, got {tuple(values.shape)}")
        s = self.log_vars.to(values.dtype)
        return (torch.exp(-s) * values + 0.5 * s).sum()
