"""CHAOS (Kavur et al. 2021), the abdominal MR part: liver, both kidneys and spleen.

Two forms:

- ``chaos_nifti``: the NIfTI form in nnU-Net raw layout (``dataset.json``, ``imagesTr/
  chaos_NN_0000.nii.gz``, ``labelsTr/chaos_NN.nii.gz``; labels from dataset.json: 1 liver,
  2 right kidney, 3 left kidney, 4 spleen). Read through the generic nnU-Net door.
- ``chaos_dicom``: the original release (``CHAOS_Train_Sets.zip``), ``<path>/MR/<subject>/
  T2SPIR/DICOM_anon/*.dcm`` with ``T2SPIR/Ground/*.png``, and ``T1DUAL/DICOM_anon/InPhase``,
  ``T1DUAL/DICOM_anon/OutPhase`` sharing ``T1DUAL/Ground/*.png`` (``<path>`` may also hold
  ``Train_Sets/MR``). Ground-truth PNGs hold grey levels (CHAOS challenge data description
  and its evaluation code): 63 liver (55–70), 126 right kidney (110–135), 189 left kidney
  (175–200), 252 spleen (240–255). One PNG per slice, in the order of the DICOM file names;
  they are stacked in the order SimpleITK reads the series so they align with its geometry.
  Case ids: ``<subject>_T2SPIR``, ``<subject>_T1DUAL_InPhase``, ``<subject>_T1DUAL_OutPhase``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tctseg.config import DatasetConfig
from tctseg.data.conversion import nnunet
from tctseg.data.conversion.common import SourceCase, apply_lut, build_mapping, dataset_root, make_cases
from tctseg.data.io import Volume, load_volume, read_dicom_series_itk
from tctseg.errors import DataError, LabelError

MODALITY = "MR"  # unless the nnU-Net-format dataset.json says otherwise
CHAOS_LABELS = {0: "background", 1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"}
# (low, high, label id): the grey-level windows of the CHAOS evaluation code
GREY_LEVELS = ((55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4))
SEQUENCES = (("T2SPIR", "DICOM_anon"), ("T1DUAL_InPhase", "DICOM_anon/InPhase"), ("T1DUAL_OutPhase", "DICOM_anon/OutPhase"))


def find_nifti_cases(dataset: DatasetConfig, classes: list[str]) -> list[SourceCase]:
    return nnunet.find_cases(dataset, classes, default_modality=MODALITY)


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def grey_to_ids(png: np.ndarray, path: Path) -> np.ndarray:
    """CHAOS grey levels [rows, cols] -> ids 0..4; a grey level in no window is a LabelError."""
    ids = np.zeros(png.shape, dtype=np.uint8)
    known = png == 0
    for low, high, label_id in GREY_LEVELS:
        inside = (png >= low) & (png <= high)
        ids[inside] = label_id
        known |= inside
    if not known.all():
        value = int(png[~known].flat[0])
        raise LabelError(
            f"{path.parent.name}/{path.name} holds grey level {value}, but CHAOS defines only "
            "0, 63 (55-70), 126 (110-135), 189 (175-200), 252 (240-255)"
        )
    return ids


@dataclass
class ChaosDicomCase(SourceCase):
    """A CHAOS series: ``image`` is the DICOM folder, ``label`` the Ground PNG folder."""

    def load(self) -> tuple[Volume, np.ndarray | None]:
        from PIL import Image

        image = load_volume(self.image)
        if self.label is None:
            return image, None
        pngs = sorted((p for p in self.label.glob("*.png") if not p.name.startswith(".")), key=lambda p: natural_key(p.name))
        if not pngs:
            raise DataError(f"{self.label}: no ground-truth PNG files found (image {self.image})")
        _, itk_files = read_dicom_series_itk(self.image)
        by_name = sorted(itk_files, key=lambda f: natural_key(Path(f).name))
        if len(pngs) != len(by_name):
            raise DataError(f"{self.label}: {len(pngs)} ground-truth PNGs for {len(by_name)} DICOM slices in {self.image}")
        png_of = dict(zip(by_name, pngs))
        slices = []
        for f in itk_files:  # ITK slice order = the series' k axis
            path = png_of[f]
            try:
                with Image.open(path) as im:
                    png = np.asarray(im.convert("L"))
            except OSError as e:
                raise DataError(f"{path}: cannot read PNG ({e})") from None
            # PNG [row, col] -> [col, row] = ITK [i, j]
            slices.append(grey_to_ids(png, path).T)
        label = np.stack(slices, axis=-1)
        if label.shape != image.shape:
            raise DataError(f"{self.label}: ground truth shape {list(label.shape)} differs from image {list(image.shape)}")
        return image, apply_lut(label, self.mapping, self.label / pngs[0].name)


def _mr_folder(root: Path) -> Path:
    for candidate in (root / "MR", root / "Train_Sets" / "MR", root):
        if candidate.is_dir() and any((p / "T2SPIR").is_dir() or (p / "T1DUAL").is_dir() for p in candidate.iterdir() if p.is_dir()):
            return candidate
    raise DataError(f"{root}: no CHAOS MR/<subject>/T2SPIR folders found")


def dicom_label_table(dataset: DatasetConfig) -> tuple[dict[int, str], str]:
    """The DICOM release's label ids (its grey levels' order) → names, and where they come from."""
    return CHAOS_LABELS, "the CHAOS grey levels"


def find_dicom_cases(dataset: DatasetConfig, classes: list[str]) -> list[SourceCase]:
    mr = _mr_folder(dataset_root(dataset))
    labels, source = dicom_label_table(dataset)
    mapping = build_mapping(labels, dataset, classes, source=source)
    triples = []
    for subject in sorted((p for p in mr.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        for name, dicom in SEQUENCES:
            folder = subject / name.split("_")[0] / dicom
            if folder.is_dir():
                ground = subject / name.split("_")[0] / "Ground"
                triples.append((f"{subject.name}_{name}", folder, ground if ground.is_dir() else None))
    return make_cases(dataset, triples, dataset.modality or MODALITY, mapping, case_type=ChaosDicomCase)
