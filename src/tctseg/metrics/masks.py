"""Overlap and surface-distance metrics on binary masks: DSC and HD95 in millimetres.

Pure functions on numpy boolean masks of one class in one case, shape ``[X, Y, Z]`` (any
3D voxel order, as long as ``spacing`` gives the voxel size in mm along the same axes).

- **DSC** (Dice similarity coefficient) ``= 2·|P ∩ G| / (|P| + |G|)``, a fraction in [0, 1].
- **HD95** is MONAI's ``compute_hausdorff_distance(..., percentile=95, spacing=...)``:
  the surfaces (mask minus its erosion) of prediction and ground truth are extracted, the
  Euclidean distance in mm from every surface voxel of one to the nearest surface voxel of
  the other is taken in both directions, and HD95 is the larger of the two directed 95th
  percentiles (numpy's linear interpolation). Voxel spacing is honoured, so a one-voxel
  shift along a 3 mm axis costs 3 mm and along a 1 mm axis 1 mm.

Empty-mask convention (a metric is never NaN, so a mean over cases is always defined):

=====================  =====  ===========================================================
case                   DSC    HD95 (mm)
=====================  =====  ===========================================================
both masks empty       1.0    0.0 — the class is correctly absent
exactly one empty      0.0    the diagonal of the image's field of view,
                              ``sqrt(Σ_i (shape_i · spacing_i)²)`` — a finite worst case:
                              no two voxels of the image are farther apart
=====================  =====  ===========================================================

A missed organ (empty prediction) and a hallucinated one (empty ground truth) therefore
score the worst DSC and the worst distance the image allows, rather than dropping out of
the mean (which would flatter a model that misses organs) or poisoning it with NaN/inf.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance


def dice(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """DSC of two boolean masks of the same shape; 1.0 when both are empty."""
    pred = np.asarray(pred_mask, dtype=bool)
    gt = np.asarray(gt_mask, dtype=bool)
    _check_same_shape(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the field of view's diagonal: the finite worst-case HD95."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def hd95(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (see the module docstring).

    ``spacing``: voxel size in mm per array axis (``len(spacing) == pred_mask.ndim``).
    Both empty → 0.0; exactly one empty → :func:`image_diagonal_mm`.
    """
    pred = np.asarray(pred_mask, dtype=bool)
    gt = np.asarray(gt_mask, dtype=bool)
    _check_same_shape(pred, gt)
    spacing = [float(s) for s in spacing]
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {pred.ndim}D mask")
    pred_empty, gt_empty = not pred.any(), not gt.any()
    if pred_empty and gt_empty:
        return 0.0
    if pred_empty or gt_empty:
        return image_diagonal_mm(pred.shape, spacing)
    # MONAI wants one-hot [B, C, *spatial]; one batch item, one channel (the class itself).
    as_batch = lambda m: torch.from_numpy(m[None, None].astype(np.uint8))  # noqa: E731
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about its own deprecated internal argument; nothing to act on.
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            as_batch(pred), as_batch(gt), include_background=True, percentile=95, spacing=spacing
        )
    return float(value.reshape(-1)[0])


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
