"""Intensity normalisation (paper §4.1, SPEC "Preprocessing").

CT: clip Hounsfield units to ``ct_clip`` (default [−1024, 1024]) and scale linearly to [0, 1].
MR: scale the volume's ``mr_percentiles`` (default 0.5th and 99.5th) to 0 and 1, clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np


def normalise_ct(array: np.ndarray, clip: tuple[float, float]) -> np.ndarray:
    """HU [X, Y, Z] -> float32 in [0, 1]."""
    low, high = float(clip[0]), float(clip[1])
    out = np.clip(array.astype(np.float32, copy=False), low, high)
    out -= low
    out /= high - low
    return out


def normalise_mr(array: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """MR [X, Y, Z] -> float32 in [0, 1] by per-volume percentiles; a flat volume becomes 0."""
    low, high = np.percentile(array, [float(percentiles[0]), float(percentiles[1])])
    if high <= low:
        return np.zeros(array.shape, dtype=np.float32)
    out = array.astype(np.float32, copy=True)
    out -= np.float32(low)
    out /= np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out)


def normalise(array: np.ndarray, modality: str, ct_clip: tuple[float, float], mr_percentiles: tuple[float, float]) -> np.ndarray:
    if modality == "CT":
        return normalise_ct(array, ct_clip)
    return normalise_mr(array, mr_percentiles)
