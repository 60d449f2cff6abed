"""WORD (Whole abdominal ORgan Dataset, Luo et al. 2022), a fully labelled CT test set.

Layout of the release: ``imagesTr/labelsTr``, ``imagesVal/labelsVal``, ``imagesTs/labelsTs``
holding ``word_XXXX.nii.gz`` (all three splits are read). Labels (HiLab-git/WORD README and
A-Eval's ``label_systems.py``): 1 liver, 2 spleen, 3 left kidney, 4 right kidney, 5 stomach,
6 gallbladder, 7 esophagus, 8 pancreas, 9 duodenum, 10 colon, 11 intestine, 12 adrenal,
13 rectum, 14 bladder, 15 left femoral head, 16 right femoral head. Note the kidneys are the
other way round from BTCV/AMOS. A ``dataset.json`` beside the folders, where present, wins.
"""

from __future__ import annotations

from pathlib import Path

from tctseg.config import DatasetConfig
from tctseg.data.conversion.common import (
    SourceCase,
    build_mapping,
    dataset_labels,
    dataset_root,
    make_cases,
    paired_cases,
)

MODALITY = "CT"
WORD_LABELS = {
    0: "background",
    1: "liver",
    2: "spleen",
    3: "left_kidney",
    4: "right_kidney",
    5: "stomach",
    6: "gallbladder",
    7: "esophagus",
    8: "pancreas",
    9: "duodenum",
    10: "colon",
    11: "intestine",
    12: "adrenal",
    13: "rectum",
    14: "bladder",
    15: "left_femoral_head",
    16: "right_femoral_head",
}
SPLITS = (("imagesTr", "labelsTr"), ("imagesVal", "labelsVal"), ("imagesTs", "labelsTs"))


def label_table(dataset: DatasetConfig) -> tuple[dict[int, str], str]:
    """The dataset's own label ids → names (its dataset.json where the release folder has one,
    else the WORD table), and where they come from (for error messages)."""
    return dataset_labels(Path(dataset.path).expanduser(), WORD_LABELS, "WORD")


def find_cases(dataset: DatasetConfig, classes: list[str]) -> list[SourceCase]:
    root = dataset_root(dataset)
    labels, source = label_table(dataset)
    mapping = build_mapping(labels, dataset, classes, source=source)
    triples = []
    for images, labels_dir in SPLITS:
        if (root / images).is_dir():
            triples += paired_cases(root / images, root / labels_dir, ".nii.gz", channel_suffix=False)
    return make_cases(dataset, triples, dataset.modality or MODALITY, mapping)
