"""Intensity normalisation (paper §4.1, SPEC "Preprocessing"), and the grey window a picture
shows a scan in — the intensity rules per modality, in one place.

CT: clip Hounsfield units to ``ct_clip`` (default [−1024, 1024]) and scale linearly to [0, 1].
MR: scale the volume's ``mr_percentiles`` (default 0.5th and 99.5th) to 0 and 1, clipped to [0, 1].

Display (:func:`display_window`, for predict's previews and the report's overlays): CT the
soft-tissue window (W 400, L 40 HU: −160..240); MR the 1st–99th percentile of what is shown
(MR intensities have no absolute scale).
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


CT_SOFT_TISSUE_WINDOW = (-160.0, 240.0)  # W 400, L 40 HU
DISPLAY_PERCENTILES = (1.0, 99.0)  # the grey range of a scan without an absolute scale


def display_window(image: np.ndarray, modality: str | None) -> tuple[float, float]:
    """Grey-value range ``(low, high)`` to show ``image`` in, by the scan's recorded ``modality``.

    ``CT``: the soft-tissue window. ``MR``, or None (not recorded): the 1st–99th percentile of
    ``image`` (the volume or slice the caller shows), widened to one unit when flat; an empty
    ``image`` gets 0..1.
    """
    if image.size == 0:
        return 0.0, 1.0
    if modality == "CT":
        return CT_SOFT_TISSUE_WINDOW
    low, high = (float(v) for v in np.percentile(image, DISPLAY_PERCENTILES))
    return low, high if high > low else low + 1.0
