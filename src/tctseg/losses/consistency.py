"""Task consistency between the main head and the auxiliary task heads — paper Eq. 5–6, with
IoU consistency filtering (§3.4, thresholds of Tab. 7) or, instead of it, the confidence
strategy of Tab. 8 (SPEC "Eq. 5–6", Tab. 8 revised)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch

from tctseg.settings import CONSISTENCY_FILTERS, EMPTY_RULES, THRESHOLDS

Threshold = Union[str, float, None]


@dataclass
class ConsistencyTerms:
    """All ``[B, N]``: ``terms`` the per-class MSE of Eq. 6 (under the confidence filter over
    ATH j's confident voxels only), ``iou`` between the two heads' masks (NaN where the class
    is absent, except under ``empty="as_one"`` where it is 1; computed under either filter, for
    the log), ``present`` where either head's mask holds the class (union > 0), ``keep`` the
    bool filter, and ``confident`` the fraction of voxels where ATH j is confident (the
    confidence filter only, else None)."""

    terms: torch.Tensor
    iou: torch.Tensor
    keep: torch.Tensor
    present: torch.Tensor
    confident: torch.Tensor | None = None

    @property
    def loss(self) -> torch.Tensor:
        """``(1/B) Σ_b Σ_j keep[b, j] · terms[b, j]`` (Eq. 6, averaged over the batch)."""
        return (self.terms * self.keep.to(self.terms.dtype)).sum(1).mean()


def consistency_terms(
    main_probs: torch.Tensor,
    aux_probs: torch.Tensor,
    threshold: Threshold = "median",
    detach_aux: bool = True,
    empty: str = "keep",
    filter: str = "iou",
    confidence_threshold: float = 0.5,
) -> ConsistencyTerms:
    """Per-sample, per-class consistency terms and the filter that keeps them (Eq. 5–6).

    For every sample b and EVERY class j (annotated or not):
    ``terms[b, j] = (1/(2·N_v)) Σ_i [(q^0_i − g^0_i)² + (q^j_i − g^j_i)²]`` with the main
    head's binary view ``(q^0, q^j) = (1 − p^j, p^j)`` and ATH j's ``(g^0, g^j)``.
    ``iou[b, j]`` compares the masks ``argmax_n p == j`` and ``g^j > g^0``. Class j is
    PRESENT in sample b when the union of the two masks is not empty, ABSENT otherwise (no
    IoU: 0/0).

    ``filter="iou"`` (the paper's): θ is computed over the present classes only, and a
    present term is kept where ``iou ≥ θ``:
    ``"median"`` θ_b = median of iou[b, j] over the classes present in b (numpy's median:
    the mean of the two middle values for an even count); ``"task_mean"`` θ_b = their mean;
    ``"batch_mean"`` θ_j = mean of iou[b, j] over the samples in which j is present; a
    float: fixed θ; ``None``: every term kept (no filtering at all).
    ``empty`` says what absent classes do: ``"keep"`` (default, SPEC) their terms are kept —
    the heads agree the organ is not in the patch — so a sample with no present class keeps
    all its terms; ``"drop"`` their terms never count; ``"as_one"`` the earlier rule: an
    absent class has IoU = 1, also when θ is computed (ablation only: in small patches it
    lifts the median to 1 and drops every present organ).

    ``filter="confidence"`` (Tab. 8, INSTEAD of the IoU filter; ``threshold`` and ``empty``
    are not used): per voxel i, ATH j's confidence ``c_i = 1 − H(g_i)/log 2`` with
    ``H(g) = −g^0 log g^0 − g^j log g^j`` (0 log 0 = 0); voxels with ``c_i <
    confidence_threshold`` are left out of term j, which averages over the remaining
    ``N_conf`` voxels (``1/(2·N_conf)``); a term with no confident voxel is 0 and not kept.

    The filter carries no gradient; with ``detach_aux`` (default) the ATHs act as teachers
    and receive no gradient from this loss.

    Args:
        main_probs: ``[B, N+1, *S]`` softmax over dim 1.
        aux_probs: ``[B, N, 2, *S]`` softmax over dim 2.
    Returns:
        :class:`ConsistencyTerms` with ``[B, N]`` tensors.
    """
    if empty not in EMPTY_RULES:
        raise ValueError(f"empty {empty!r} is not one of {', '.join(EMPTY_RULES)}")
    if filter not in CONSISTENCY_FILTERS:
        raise ValueError(f"filter {filter!r} is not one of {', '.join(CONSISTENCY_FILTERS)}")
    n = aux_probs.shape[1]
    if main_probs.shape[1] != n + 1 or main_probs.shape[2:] != aux_probs.shape[3:] or aux_probs.shape[2] != 2:
        raise ValueError(
            f"main_probs {tuple(main_probs.shape)} must be [B, N+1, *S] and aux_probs "
            f"{tuple(aux_probs.shape)} [B, N, 2, *S] with the same B, N and *S"
        )
    if detach_aux:
        aux_probs = aux_probs.detach()
    spatial = tuple(range(2, main_probs.ndim))
    p_fg = main_probs[:, 1:]  # [B, N, *S]
    g_bg, g_fg = aux_probs[:, :, 0], aux_probs[:, :, 1]
    # (1/(2·N_v)) Σ_i [((1 − p) − g^0)² + (p − g^j)²] with g^0 = 1 − g^j (ATH j is a softmax
    # over two channels) is (1/N_v) Σ_i (p − g^j)²: the same function of the logits, so the
    # same gradients too (with or without detach_aux), in one full-size difference, not four
    squared = (p_fg - g_fg).square()

    with torch.no_grad():
        # max(1).indices is argmax (first index on ties) but ~4× faster over the channel dim
        # on the CPU; comparing with 1..N gives the [B, N, *S] masks without an int64 one-hot
        classes = torch.arange(1, n + 1, device=main_probs.device).view(1, n, *([1] * len(spatial)))
        main_mask = main_probs.max(1).indices.unsqueeze(1) == classes
        aux_mask = g_fg > g_bg
        intersection = (main_mask & aux_mask).sum(spatial).to(squared.dtype)
        union = (main_mask | aux_mask).sum(spatial).to(squared.dtype)
        present = union > 0
        absent_iou = 1.0 if empty == "as_one" else math.nan
        iou = torch.where(present, intersection / union.clamp_min(1), torch.full_like(union, absent_iou))

    if filter == "confidence":
        with torch.no_grad():
            confident_voxels = _entropy_confidence(aux_probs) >= confidence_threshold  # [B, N, *S]
            count = confident_voxels.sum(spatial).to(squared.dtype)
        terms = (squared * confident_voxels).sum(spatial) / count.clamp_min(1)
        voxels = math.prod(main_probs.shape[2:])
        return ConsistencyTerms(terms, iou, count > 0, present, count / voxels)

    terms = squared.mean(spatial)
    with torch.no_grad():
        keep = _iou_filter(iou, threshold)  # False wherever iou is NaN
        if threshold is not None and empty == "keep":
            keep = keep | ~present
    return ConsistencyTerms(terms, iou, keep, present)


def consistency_loss(
    main_probs: torch.Tensor,
    aux_probs: torch.Tensor,
    threshold: Threshold = "median",
    detach_aux: bool = True,
    empty: str = "keep",
    filter: str = "iou",
    confidence_threshold: float = 0.5,
) -> torch.Tensor:
    """Task consistency loss — paper Eq. 5–6 (SPEC): ``(1/B) Σ_b Σ_j keep[b, j]·terms[b, j]``.

    See :func:`consistency_terms` for the terms, the IoU filter (``threshold`` one of
    ``"median"``, ``"task_mean"``, ``"batch_mean"``, a float, or None, computed over the
    classes present in the patch), the ``empty`` rule for absent classes (``"keep"``,
    ``"drop"``, ``"as_one"``) and ``filter="confidence"``, Tab. 8's strategy instead of it.

    Args:
        main_probs: ``[B, N+1, *S]`` softmax over dim 1.
        aux_probs: ``[B, N, 2, *S]`` softmax over dim 2.
    Returns:
        Scalar loss.
    """
    return consistency_terms(main_probs, aux_probs, threshold, detach_aux, empty, filter, confidence_threshold).loss


def _iou_filter(iou: torch.Tensor, threshold: Threshold) -> torch.Tensor:
    """``iou ≥ θ`` for ``[B, N]`` IoUs with NaN at absent classes: θ ignores them and they
    are never kept here (the caller decides what absent classes do)."""
    if threshold is None:
        return torch.ones_like(iou, dtype=torch.bool)
    if isinstance(threshold, str):
        if threshold == "median":
            # torch.nanquantile interpolates linearly: for q = 0.5 that is numpy's median
            # of the values that are not NaN (NaN for a row with none)
            theta = torch.nanquantile(iou, 0.5, dim=1, keepdim=True)
        elif threshold == "task_mean":
            theta = iou.nanmean(1, keepdim=True)
        elif threshold == "batch_mean":
            theta = iou.nanmean(0, keepdim=True)
        else:
            raise ValueError(f"threshold {threshold!r} is not one of {', '.join(THRESHOLDS)}, a float or None")
        return iou >= theta
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"threshold {threshold!r} is not one of {', '.join(THRESHOLDS)}, a float or None")
    return iou >= float(threshold)


def _entropy_confidence(aux_probs: torch.Tensor) -> torch.Tensor:
    """Per voxel ``1 − H(g)/log 2`` of each ATH's two-class softmax: ``[B, N, 2, *S]`` →
    ``[B, N, *S]`` in [0, 1] (0 log 0 = 0: a certain voxel has confidence 1)."""
    entropy = -torch.special.xlogy(aux_probs, aux_probs).sum(2)
    return 1.0 - entropy / math.log(2.0)
