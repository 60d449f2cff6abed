"""A one-picture preview of a prediction (``tctseg predict --preview``): ``<case>_preview.png``.

Three planes through the centre of the predicted organs (the mean voxel of all organ voxels;
the scan's centre when nothing is predicted): axial, coronal and sagittal, the scan in grey
with each organ filled in its colour (:mod:`tctseg.inference.organs`) at 45% opacity, a legend naming
the organs with their volumes, and the patient's directions at the edges. Radiological view:
the patient's right on the viewer's left (axial, coronal), anterior on the left (sagittal),
anterior and superior up; each plane at its true aspect ratio from the voxel spacing.

Grey window by the modality predict was given (``--modality``, else the training data's):
CT soft tissue (W 400, L 40 HU: -160..240); MR the 1st–99th percentile of the scan
(:func:`tctseg.preprocessing.intensity.display_window`, which the report's overlays use too).
"""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib
import nibabel as nib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from tctseg.inference.organs import display_name, organ  # noqa: E402
from tctseg.preprocessing.intensity import display_window  # noqa: E402

ORGAN_OPACITY = 0.45


def organ_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """Mean voxel index of all organ voxels (labels > 0) of ``labels`` ``[X, Y, Z]``; the centre if none."""
    index = np.argwhere(labels > 0)
    if index.size == 0:
        return tuple(int(s) // 2 for s in labels.shape)  # type: ignore[return-value]
    return tuple(int(round(v)) for v in index.mean(axis=0))  # type: ignore[return-value]


def render_preview(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    class_names: Sequence[str],
    modality: str,
    title: str = "",
) -> bytes:
    """PNG bytes of the three-plane preview. ``image``, ``labels``: ``[X, Y, Z]`` in any file
    orientation on one grid; ``affine`` 4×4 voxel → RAS mm; ``labels`` ids 1..N = ``class_names``."""
    ras_image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine))
    ras_labels = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), affine))
    grey = np.asarray(ras_image.dataobj, dtype=np.float32)
    lab = np.asarray(ras_labels.dataobj)
    sx, sy, sz = (float(z) for z in ras_image.header.get_zooms()[:3])
    low, high = display_window(grey, modality)
    cx, cy, cz = organ_centre(lab)
    colours = np.zeros((len(class_names) + 1, 4), dtype=np.float32)
    for class_id, name in enumerate(class_names, start=1):
        colours[class_id, :3] = np.asarray(organ(name, class_id - 1).colour) / 255.0
        colours[class_id, 3] = ORGAN_OPACITY

    # each plane as [rows, columns] with row 0 at the bottom (origin="lower"); the first array
    # axis of the slice is reversed so that +X (patient's right) / +Y (anterior) is on the left
    planes = [
        ("axial", grey[:, :, cz], lab[:, :, cz], sy / sx, ("R", "L", "P", "A")),
        ("coronal", grey[:, cy, :], lab[:, cy, :], sz / sx, ("R", "L", "I", "S")),
        ("sagittal", grey[cx, :, :], lab[cx, :, :], sz / sy, ("A", "P", "I", "S")),
    ]
    nx, ny, _ = grey.shape
    widths_mm = (nx * sx, nx * sx, ny * sy)  # the horizontal extent of each plane
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.8), gridspec_kw={"width_ratios": widths_mm})
    for ax, (plane, g, l, aspect, (left, right, bottom, top)) in zip(axes, planes):
        view = lambda a: np.asarray(a)[::-1, :].T  # noqa: E731
        ax.imshow(view(g), cmap="gray", vmin=low, vmax=high, origin="lower", aspect=aspect, interpolation="bilinear")
        ax.imshow(colours[view(l).clip(0, len(class_names))], origin="lower", aspect=aspect, interpolation="nearest")
        ax.set_title(plane, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        for text, xy in ((left, (0.02, 0.5)), (right, (0.98, 0.5)), (bottom, (0.5, 0.02)), (top, (0.5, 0.98))):
            ax.text(*xy, text, transform=ax.transAxes, color="white", fontsize=10, fontweight="bold",
                    ha="center", va="center", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "edgecolor": "none"})
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    handles = []
    for class_id, name in enumerate(class_names, start=1):
        volume = float(np.count_nonzero(labels == class_id)) * voxel_ml
        label = f"{display_name(name)} ({volume:.0f} ml)" if volume else f"{display_name(name)} (not found)"
        handles.append(Patch(facecolor=colours[class_id, :3], edgecolor="black", label=label))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=10, frameon=False)
    window = f"window {low:.0f}..{high:.0f}" + (" HU" if modality == "CT" else "")
    fig.suptitle(f"{title}  ({modality}, {window})".strip(), fontsize=12)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
