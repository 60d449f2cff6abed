"""AMOS 2022 (Ji et al., NeurIPS 2022 Datasets and Benchmarks), a fully labelled test set.

Layout of ``amos22.zip`` (zenodo 7262581): ``dataset.json``, ``imagesTr/labelsTr``,
``imagesVa/labelsVa`` (``imagesTs`` has no labels and is not read), files ``amos_XXXX.nii.gz``.
Labels (its dataset.json; also A-Eval's ``label_systems.py``): 1 spleen, 2 right kidney,
3 left kidney, 4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 postcava (IVC),
10 pancreas, 11 right adrenal gland, 12 left adrenal gland, 13 duodenum, 14 bladder,
15 prostate/uterus. Case ids up to 500 are CT, above 500 MRI (the AMOS paper: 500 CT + 100 MRI;
nnU-Net's AMOS conversion splits on the same number). ``datasets.modality: CT`` keeps only the
CT cases (``MR`` only the MRI ones).
"""

from __future__ import annotations

from pathlib import Path

from tctseg.config import DatasetConfig
from tctseg.data.conversion.common import (
    SourceCase,
    build_mapping,
    dataset_labels,
    dataset_root,
    paired_cases,
    select_cases,
)
from tctseg.errors import DataError

AMOS_LABELS = {
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
    10: "pancreas",
    11: "right_adrenal_gland",
    12: "left_adrenal_gland",
    13: "duodenum",
    14: "bladder",
    15: "prostate_uterus",
}
LAST_CT_ID = 500
# the model modality of an AMOS dataset without datasets.modality: 500 of its 600 cases are CT
MODALITY = "CT"


def case_modality(case_id: str) -> str:
    return "CT" if int(case_id.rsplit("_", 1)[-1]) <= LAST_CT_ID else "MR"


def label_table(dataset: DatasetConfig) -> tuple[dict[int, str], str]:
    """The dataset's own label ids → names (its dataset.json where the release folder has one,
    else the AMOS table), and where they come from (for error messages)."""
    return dataset_labels(Path(dataset.path).expanduser(), AMOS_LABELS, "AMOS")


def find_cases(dataset: DatasetConfig, classes: list[str]) -> list[SourceCase]:
    root = dataset_root(dataset)
    labels, source = label_table(dataset)
    mapping = build_mapping(labels, dataset, classes, source=source)
    cases = []
    for images, labels_dir in (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa")):
        for cid, image, label in paired_cases(root / images, root / labels_dir, ".nii.gz", channel_suffix=False):
            modality = case_modality(cid)
            if dataset.modality is None or dataset.modality == modality:
                cases.append(SourceCase(dataset.name, cid, image, label, modality, mapping.annotated, mapping))
    if not cases:
        raise DataError(f"{root}: no AMOS cases found (expected imagesTr/amos_XXXX.nii.gz)")
    return select_cases(cases, dataset)
