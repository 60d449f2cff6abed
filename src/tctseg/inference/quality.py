"""How far to trust each predicted organ (``tctseg predict --qc``).

Two signals per case and organ, both in the scan's ORIGINAL space:

- **two-head agreement** (methods whose network has auxiliary task heads: TCT). ATH j's
  foreground probability ``gʲ`` is blended over the windows like the main head's, resampled
  back (linear) and thresholded at ½ (``gʲ > g⁰``, the head's own argmax). The agreement is
  the DSC between that mask and the main head's final label-map mask of organ j (after
  ``--lcc`` when asked, applied to both). The two heads are trained on the same features but
  by different losses (the ATH only on the datasets that label organ j), so where they
  disagree at least one is wrong. An organ that neither head finds scores 1.
- **confidence** (every method; the baseline): the mean probability of the predicted class
  over the organ's predicted voxels. For a softmax head it is the mean max-softmax
  probability inside the organ (the label is the argmax); for a task-prompted method the
  mean σ_c. ``null`` when the organ is predicted nowhere.

An organ whose agreement is below the threshold is flagged (:data:`~tctseg.predict_options.DEFAULT_QC_THRESHOLD`,
``--qc-threshold``); methods without auxiliary heads report the confidence and flag nothing.
Written as ``qc.json`` beside the label maps; :func:`qc_summary` is what the CLI prints.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tctseg.organs import display_name
from tctseg.predict_options import DEFAULT_QC_THRESHOLD

QC_JSON = "qc.json"
AUX_THRESHOLD = 0.5  # gʲ > ½: the ATH's two-class argmax


def has_auxiliary_heads(method: Any) -> bool:
    """True when ``method``'s network carries auxiliary task heads (TCT) to run for QC."""
    return getattr(getattr(method, "network", None), "aux_heads", None) is not None


def aux_masks_in_original_space(aux_probabilities: np.ndarray, geometry: Any, largest_component: bool = False) -> np.ndarray:
    """Prepared-space ATH foreground probabilities ``[N, X', Y', Z']`` → bool masks ``[N, X, Y, Z]``
    on the original grid (each resampled linearly, then ``gʲ > ½``; optionally its largest component)."""
    from tctseg.inference.postprocess import keep_largest_component
    from tctseg.preprocessing import to_original

    masks = []
    for channel in aux_probabilities:
        mask = to_original(np.ascontiguousarray(channel, dtype=np.float32), geometry, mode="linear") > AUX_THRESHOLD
        if largest_component:
            mask = keep_largest_component(mask.astype(np.uint8), [1]).astype(bool)
        masks.append(mask)
    return np.stack(masks)


def organ_quality(
    labels: np.ndarray,
    class_probabilities: np.ndarray,
    class_names: Sequence[str],
    aux_masks: np.ndarray | None = None,
    threshold: float = DEFAULT_QC_THRESHOLD,
    *,
    task_probabilities: bool = False,
) -> dict[str, dict[str, Any]]:
    """Per organ: ``{voxels, confidence, aux_voxels, agreement, flagged}``.

    ``labels`` ``[X, Y, Z]`` (ids 1..N); ``class_probabilities`` uint8 ``[X, Y, Z, C]`` scaled
    by 255 as :func:`~tctseg.inference.export.labels_in_original_space` returns them (C = N+1
    softmax channels, or C = N task sigmoids with ``task_probabilities``); ``aux_masks`` bool
    ``[N, X, Y, Z]`` or None (no auxiliary heads: ``agreement`` null, never flagged).
    """
    from tctseg.evaluation.metrics import dice  # torch and MONAI: imported when used

    offset = 1 if task_probabilities else 0  # channel of class c
    out: dict[str, dict[str, Any]] = {}
    for class_id, name in enumerate(class_names, start=1):
        mask = labels == class_id
        voxels = int(np.count_nonzero(mask))
        confidence = None
        if voxels:
            confidence = round(float(class_probabilities[..., class_id - offset][mask].mean()) / 255.0, 4)
        entry: dict[str, Any] = {"voxels": voxels, "confidence": confidence, "aux_voxels": None, "agreement": None, "flagged": False}
        if aux_masks is not None:
            aux = aux_masks[class_id - 1]
            agreement = dice(mask, aux)
            entry.update(aux_voxels=int(np.count_nonzero(aux)), agreement=round(agreement, 4), flagged=agreement < threshold)
        out[name] = entry
    return out


def qc_summary(case_id: str, quality: dict[str, dict[str, Any]]) -> str:
    """One line per case: each organ's agreement and confidence, ``FLAGGED`` where below threshold."""
    parts = []
    for organ, q in quality.items():
        conf = "—" if q["confidence"] is None else f"{q['confidence']:.2f}"
        agree = "" if q["agreement"] is None else f"agreement {q['agreement']:.2f}, "
        parts.append(f"{display_name(organ)} {agree}confidence {conf}{' FLAGGED' if q['flagged'] else ''}")
    return f"  qc {case_id}: " + "; ".join(parts)
