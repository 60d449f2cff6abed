"""Post-processing of predicted label maps."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 26-connectivity: voxels touching at a corner belong to one organ (thin 3 mm slices)
_FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def keep_largest_component(labels: np.ndarray, classes: list[int] | None = None) -> np.ndarray:
    """Per class, keep only its largest 26-connected component; the rest becomes background (0).

    ``labels``: integer ``[X, Y, Z]``; ``classes``: the ids to clean (default: every id > 0
    present). Returns a new array of the same shape and dtype.
    """
    cleaned = np.array(labels, copy=True)
    ids = classes if classes is not None else [int(c) for c in np.unique(labels) if c > 0]
    for class_id in ids:
        mask = labels == class_id
        components, count = ndimage.label(mask, structure=_FULL_CONNECTIVITY)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0  # index 0 is everything outside the class
        cleaned[mask & (components != int(np.argmax(sizes)))] = 0
    return cleaned
