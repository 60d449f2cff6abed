"""The partial-label primitives every loss of a partially labeled batch is built from, written
once (like MONAI's ``monai/metrics/utils.py`` for its metrics).

Shapes (SPEC "Notation"): ``labels`` ``[B, *S]`` integer global ids (0 = background or not
annotated); ``annotated`` ``[B, N]`` bool, True where sample b's dataset annotates class c;
channel 0 of an ``[B, N+1, *S]`` tensor is the background.

* :func:`one_hot_masks`: ``y^c = [labels == c]``, channel-first, by one comparison.
* :func:`per_channel`: a ``[B, C]`` mask viewed as ``[B, C, 1, …, 1]`` to broadcast over voxels.
* :func:`unannotated_mask`: ``[c ∉ Φ_b]`` as numbers, broadcastable over voxels.
* :func:`merge_unannotated_into_background`: the marginal probabilities
  ``q^0 = p^0 + Σ_{c∉Φ} p^c``, ``q^c = p^c`` (TCT Eq. 2, TAL, AAL's Dice).
* :func:`marginal_log_probs`: the same marginalisation in log space (ME's and AAL's CE).
* :func:`mean_over_annotated`: the mean of ``[B, N]`` per-(sample, class) values over the
  annotated pairs (the task-prompted baselines' reduction).
"""

from __future__ import annotations

import torch


def one_hot_masks(
    labels: torch.Tensor, num_channels: int, dtype: torch.dtype, channels_last: bool = False, first: int = 0
) -> torch.Tensor:
    """``labels`` ``[B, *S]`` → ``[B, C − first, *S]`` with channel k = ``[labels == first + k]``
    in ``dtype`` (``first=1``: the foreground channels 1..C−1 only).

    The same values as ``F.one_hot(labels, C).movedim(-1, 1)[:, first:].to(dtype)``, built by
    one broadcast comparison. Unlike ``F.one_hot`` it does not check the ids (that would cost
    a host-device synchronisation per step): an id outside 0..C−1 gets no channel; the
    prepared cache only holds 0..N.

    ``channels_last=False``: built straight into the contiguous channel-first layout (no
    strided copy; ~3× less memory traffic than ``F.one_hot`` in the training step).
    ``channels_last=True``: channel-first view of a ``[B, *S, C − first]`` tensor, the memory
    layout ``F.one_hot(...).movedim(-1, 1)`` has. The target's layout sets the layout of the
    gradients computed from it and with it the order of the sums further back, so the
    task-prompted and PFL losses keep the layout they were written with (their gradients stay
    bit-identical).
    """
    channels = torch.arange(first, num_channels, device=labels.device)
    if channels_last:
        return (labels.unsqueeze(-1) == channels).movedim(-1, 1).to(dtype)
    channels = channels.view(1, num_channels - first, *([1] * (labels.ndim - 1)))
    return (labels.unsqueeze(1) == channels).to(dtype)


def per_channel(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    """``[B, C]`` → ``[B, C, 1, …, 1]`` with ``ndim`` dims in all (a view), to broadcast over voxels."""
    return mask.view(*mask.shape, *([1] * (ndim - 2)))


def unannotated_mask(annotated: torch.Tensor, ndim: int, dtype: torch.dtype) -> torch.Tensor:
    """``[c ∉ Φ_b]`` in ``dtype``: ``annotated`` ``[B, N]`` → ``[B, N, 1, …, 1]`` (``ndim`` dims)."""
    return per_channel((~annotated).to(dtype), ndim)


def merge_unannotated_into_background(main_probs: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """The marginal probabilities of a partially labeled sample (TCT Eq. 2, the marginal loss):
    ``q^0 = p^0 + Σ_{c∉Φ} p^c`` (label 0 means "background or any class not annotated") and
    ``q^c = p^c`` for c ≥ 1 (no label of the sample is an unannotated c).

    Args:
        main_probs: ``[B, N+1, *S]`` softmax probabilities; annotated: ``[B, N]`` bool.
    Returns:
        ``[B, N+1, *S]`` q.
    """
    fg_probs = main_probs[:, 1:]
    unannotated = unannotated_mask(annotated, main_probs.ndim, main_probs.dtype)
    q_background = main_probs[:, :1] + (fg_probs * unannotated).sum(1, keepdim=True)
    return torch.cat([q_background, fg_probs], dim=1)


def marginal_log_probs(logits: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Log of the marginal probabilities ``q`` of a partially labeled sample (the
    marginalisation of :func:`merge_unannotated_into_background`, in log space).

    ``log q^0 = logsumexp(log p^0, log p^n for n ∉ Φ)``, ``log q^c = log p^c`` for c ∈ Φ;
    channels of classes not in Φ are left as ``log p^c`` (no label of the sample is c).

    Args:
        logits: ``[B, N+1, *S]`` main-head logits.
        annotated: ``[B, N]`` bool.
    Returns:
        ``[B, N+1, *S]`` log-probabilities.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    # the channels merged into the background: channel 0 and the classes not annotated
    fold = per_channel(torch.cat([torch.ones_like(annotated[:, :1]), ~annotated], dim=1), logits.ndim)
    log_q0 = torch.logsumexp(log_p.masked_fill(~fold, float("-inf")), dim=1, keepdim=True)
    return torch.cat([log_q0, log_p[:, 1:]], dim=1)


def mean_over_annotated(values: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """``Σ_{(b,c): c ∈ Φ_b} values[b, c] / |{(b, c): c ∈ Φ_b}|``; 0 when no pair is annotated.

    values ``[B, N]``, annotated ``[B, N]`` bool → scalar.
    """
    mask = annotated.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
