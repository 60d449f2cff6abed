"""One path from a scan to the network's input, and one record of the settings it depends on.

Training reads scans prepared by the cache (:mod:`tctseg.preprocessing.cache`), prediction
prepares each new scan itself (:mod:`tctseg.inference.predict`); both call
:func:`prepare_scan`, so the day the preparation changes, it changes for both (nnU-Net v2
does the same: one preprocessor's ``run_case`` for training and inference).
:func:`prepared_settings` is what the cache's fingerprint, the cache's per-case record and
every checkpoint store, so a model is only ever fed scans prepared as its training scans were.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tctseg.errors import DataError
from tctseg.preprocessing.geometry import PreparedGeometry, to_prepared
from tctseg.preprocessing.intensity import normalise

if TYPE_CHECKING:
    from tctseg.config import PreprocessingConfig


def prepared_settings(pre: PreprocessingConfig) -> dict[str, Any]:
    """The preprocessing settings the prepared image depends on (``workers`` does not):
    ``{"spacing", "ct_clip", "mr_percentiles"}``, each a list of floats."""
    return {
        "spacing": [float(s) for s in pre.spacing],
        "ct_clip": [float(s) for s in pre.ct_clip],
        "mr_percentiles": [float(s) for s in pre.mr_percentiles],
    }


def prepare_scan(
    array: np.ndarray, affine: np.ndarray, modality: str, settings: dict[str, Any], source: str | Path | None = None
) -> tuple[np.ndarray, PreparedGeometry]:
    """A scan ``[X, Y, Z]`` with its voxel-to-world ``affine`` → the network's input.

    Intensities are normalised on the original voxels (CT: clip to ``ct_clip`` and scale to
    [0, 1]; MR: per-volume ``mr_percentiles``), then the volume is reoriented to RAS and
    resampled (linear) to ``spacing``. ``settings``: :func:`prepared_settings`'s dict (the
    cache passes its stored record). Raises DataError naming ``source`` for a scan that
    intensity scaling makes non-finite or constant. Returns ``(image [X', Y', Z'] float32,
    geometry)``; ``geometry`` maps predictions back to the scan.
    """
    normalised = normalise(array, modality, tuple(settings["ct_clip"]), tuple(settings["mr_percentiles"]))
    check_normalised(normalised, array, modality, settings, source)
    image, geometry = to_prepared(normalised, affine, tuple(settings["spacing"]), mode="linear", source=source)
    return np.asarray(image, dtype=np.float32), geometry


def check_normalised(
    normalised: np.ndarray, raw: np.ndarray, modality: str, settings: dict[str, Any], source: str | Path | None
) -> None:
    """Refuse (DataError naming ``source``) an intensity-normalised scan that is not finite
    everywhere or holds one value only: a network learns nothing from it and finds nothing in
    it, and a wrong ``preprocessing.ct_clip`` / ``mr_percentiles`` made every scan so in silence
    (issue 31). Training (the cache) and predict refuse such a scan alike, as a per-case error."""
    key, value = ("ct_clip", settings["ct_clip"]) if modality == "CT" else ("mr_percentiles", settings["mr_percentiles"])
    setting = f"preprocessing.{key} {list(value)}"
    low, high = (float(np.min(raw)), float(np.max(raw))) if raw.size else (math.nan, math.nan)
    finite = np.isfinite(normalised)
    if not finite.all():
        bad = int(normalised.size - np.count_nonzero(finite))
        raise DataError(
            f"{source}: {bad} of {normalised.size} voxels are NaN or infinite after intensity scaling "
            f"({modality}, {setting}, the scan's values {low:g} to {high:g}); check the setting"
        )
    first = float(normalised.flat[0]) if normalised.size else 0.0
    if normalised.size == 0 or (normalised == first).all():
        raise DataError(
            f"{source}: the prepared image is constant (every voxel {first:g} after intensity scaling: {modality}, "
            f"{setting}, the scan's values {low:g} to {high:g}): nothing in it to learn from or to segment — check "
            "the setting or the scan (a training case can be left out with exclude_cases)"
        )
