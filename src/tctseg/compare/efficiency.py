"""What a method costs at inference (paper Tab. 10): parameters it runs, seconds per patch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from tctseg.methods import Method


def inference_parameters(method: Method, patch: Sequence[int]) -> int:
    """Parameters that ``method.predict_logits`` actually uses on a ``[1, 1, *patch]`` input.

    Found by back-propagating from the logits: a parameter the prediction never touches
    (TCT's auxiliary task heads, uncertainty weights, a teacher) gets no gradient.
    """
    params = list(method.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    was_training = method.training
    try:
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        method.eval()
        device = params[0].device if params else torch.device("cpu")
        image = torch.zeros(1, 1, *patch, device=device)
        method.predict_logits(image).float().sum().backward()
        return sum(p.numel() for p in params if p.grad is not None)
    finally:
        for p, (requires_grad, grad) in zip(params, saved):
            p.grad = grad
            p.requires_grad_(requires_grad)
        method.train(was_training)


def inference_seconds(method: Method, patch: Sequence[int], device: str, repeats: int = 3) -> float:
    """Median seconds of ``predict_logits`` on one random ``[1, 1, *patch]`` patch, after one warm-up."""
    method = method.to(device).eval()
    image = torch.randn(1, 1, *patch, device=device)
    times = []
    with torch.no_grad():
        method.predict_logits(image)  # warm-up: allocations, cuDNN autotuning
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            method.predict_logits(image)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times)
