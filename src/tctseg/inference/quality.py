"""How far to trust each predicted organ (``tctseg predict --qc``).

Up to three signals per case and organ, all in the scan's ORIGINAL space:

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
  mean σ_c. ``null`` when the organ is predicted nowhere. With an ensemble: of the members'
  mean probabilities, the ensemble's confidence.
- **ensemble agreement** (two or more members, :mod:`~tctseg.inference.ensemble`): the mean
  over every pair of members of the DSC between their own label maps' organ masks (each
  member's label map as it alone would write it). Independently trained models do not share
  a backbone, so where they disagree the organ is hard (Zenk et al., Medical Image Analysis
  2025: the most robust failure signal they measured). An organ no member finds scores 1;
  the two-head agreement and confidence are then the ensemble's (averaged heads).

An organ is flagged when its two-head agreement is below the threshold
(:data:`~tctseg.predict_options.DEFAULT_QC_THRESHOLD`, ``--qc-threshold``) or its ensemble
agreement below :data:`~tctseg.predict_options.ENSEMBLE_QC_THRESHOLD` (0.8, fixed in code,
chosen before any validation); a single model without auxiliary heads reports the confidence
and flags nothing. Written as ``qc.json`` beside the label maps; :func:`qc_summary` is what
the CLI prints.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tctseg.inference.organs import display_name
from tctseg.predict_options import DEFAULT_QC_THRESHOLD, ENSEMBLE_QC_THRESHOLD

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


def ensemble_agreement(member_labels: Sequence[np.ndarray], num_classes: int) -> list[float]:
    """Per class c = 1..N, the mean over member pairs i < j of DSC(labels_i == c, labels_j == c).

    ``member_labels``: two or more label maps ``[X, Y, Z]`` of one scan (ids 0..N). A pair
    where neither member predicts the class scores 1 (:func:`~tctseg.metrics.masks.dice`'s
    rule). Returns N floats in [0, 1].
    """
    if len(member_labels) < 2:
        raise ValueError(f"ensemble agreement needs two or more label maps, got {len(member_labels)}")
    out = []
    for class_id in range(1, num_classes + 1):
        masks = [labels == class_id for labels in member_labels]
        sizes = [int(np.count_nonzero(m)) for m in masks]
        pairs = []
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                total = sizes[i] + sizes[j]
                pairs.append(1.0 if total == 0 else 2.0 * int(np.count_nonzero(masks[i] & masks[j])) / total)
        out.append(float(np.mean(pairs)))
    return out


def organ_quality(
    labels: np.ndarray,
    class_probabilities: np.ndarray,
    class_names: Sequence[str],
    aux_masks: np.ndarray | None = None,
    threshold: float = DEFAULT_QC_THRESHOLD,
    *,
    task_probabilities: bool = False,
    ensemble: Sequence[float] | None = None,
    ensemble_threshold: float = ENSEMBLE_QC_THRESHOLD,
) -> dict[str, dict[str, Any]]:
    """Per organ: ``{voxels, confidence, aux_voxels, agreement, flagged}``; with ``ensemble``
    (the N classes' :func:`ensemble_agreement`) also ``ensemble_agreement`` and ``flagged_by``
    (``"two-head"`` and/or ``"ensemble"``: the signals below their thresholds), placed before
    ``flagged``, which is then true when either is.

    ``labels`` ``[X, Y, Z]`` (ids 1..N); ``class_probabilities`` uint8 ``[X, Y, Z, C]`` scaled
    by 255 as :func:`~tctseg.inference.export.labels_in_original_space` returns them (C = N+1
    softmax channels, or C = N task sigmoids with ``task_probabilities``); ``aux_masks`` bool
    ``[N, X, Y, Z]`` or None (no auxiliary heads: ``agreement`` null, never flagged by it).
    """
    from tctseg.metrics.masks import dice  # torch and MONAI: imported when used

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
        if ensemble is not None:
            members = float(ensemble[class_id - 1])
            flagged_by = ["two-head"] if entry["flagged"] else []
            flagged_by += ["ensemble"] if members < ensemble_threshold else []
            del entry["flagged"]  # after the signals, as without an ensemble
            entry.update(ensemble_agreement=round(members, 4), flagged=bool(flagged_by), flagged_by=flagged_by)
        out[name] = entry
    return out


def qc_summary(case_id: str, quality: dict[str, dict[str, Any]]) -> str:
    """One line per case: each organ's agreement(s) and confidence, ``FLAGGED`` where below
    threshold (with an ensemble, ``FLAGGED (ensemble)`` naming the signals)."""
    parts = []
    for organ, q in quality.items():
        conf = "—" if q["confidence"] is None else f"{q['confidence']:.2f}"
        agree = "" if q["agreement"] is None else f"agreement {q['agreement']:.2f}, "
        members = "" if q.get("ensemble_agreement") is None else f"ensemble agreement {q['ensemble_agreement']:.2f}, "
        flag = " FLAGGED" if q["flagged"] else ""
        if q["flagged"] and q.get("flagged_by"):
            flag += f" ({', '.join(q['flagged_by'])})"
        parts.append(f"{display_name(organ)} {agree}{members}confidence {conf}{flag}")
    return f"  qc {case_id}: " + "; ".join(parts)
