"""BTCV "Multi-Atlas Labeling Beyond the Cranial Vault" abdomen (Synapse), a fully labelled test set.

Layout of the Synapse download (RawData.zip): ``RawData/Training/img/img0001.nii.gz`` and
``RawData/Training/label/label0001.nii.gz`` (``<path>`` may point at the folder holding
``RawData``, at ``RawData`` or at ``Training``). Labels (Synapse challenge page; also MONAI's
BTCV tutorial and A-Eval's ``label_systems.py``): 1 spleen, 2 right kidney, 3 left kidney,
4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 inferior vena cava, 10 portal and
splenic vein, 11 pancreas, 12 right adrenal gland, 13 left adrenal gland. CT.
"""

from __future__ import annotations

from pathlib import Path

from tctseg.config import DatasetConfig
from tctseg.data.conversion.common import SourceCase, build_mapping, dataset_root, make_cases, visible_files
from tctseg.errors import DataError

MODALITY = "CT"
BTCV_LABELS = {
    0: "background",
    1: "spleen",
    2: "right_kidney",
    3: "left_kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_and_splenic_vein",
    11: "pancreas",
    12: "right_adrenal_gland",
    13: "left_adrenal_gland",
}


def _training_folder(root: Path) -> Path:
    for candidate in (root / "RawData" / "Training", root / "Training", root):
        if (candidate / "img").is_dir():
            return candidate
    raise DataError(f"{root}: no BTCV 'RawData/Training/img' folder found")


def label_table(dataset: DatasetConfig) -> tuple[dict[int, str], str]:
    """The dataset's own label ids → names, and where they come from (for error messages)."""
    return BTCV_LABELS, "the BTCV label list"


def find_cases(dataset: DatasetConfig, classes: list[str]) -> list[SourceCase]:
    folder = _training_folder(dataset_root(dataset))
    labels, source = label_table(dataset)
    mapping = build_mapping(labels, dataset, classes, source=source)
    triples = []
    for image in visible_files(folder / "img", ".nii.gz"):
        number = image.name[len("img") : -len(".nii.gz")]
        triples.append((number, image, folder / "label" / f"label{number}.nii.gz"))
    return make_cases(dataset, triples, dataset.modality or MODALITY, mapping)
