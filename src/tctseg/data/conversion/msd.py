"""Medical Segmentation Decathlon tasks (Task03_Liver, Task07_Pancreas, Task09_Spleen, ...).

Layout as downloaded from medicaldecathlon.com: ``<path>/dataset.json``, ``imagesTr/*.nii.gz``,
``labelsTr/*.nii.gz`` (same file names), ``imagesTs/`` (unlabelled, not read). Label ids and
modality come from dataset.json (Task03: 0 background, 1 liver, 2 cancer; Task07: 0 background,
1 pancreas, 2 cancer; Task09: 0 background, 1 spleen; "modality": {"0": "CT"}) — Antonelli et
al., "The Medical Segmentation Decathlon", Nat. Commun. 2022, and each task's dataset.json.
Tumour ("cancer") merges into the task's organ (SPEC "Preprocessing"). The archives carry macOS
``._*`` resource files beside the volumes; they are skipped.
"""

from __future__ import annotations

from tctseg.config import DatasetConfig
from tctseg.data.conversion.common import SourceCase
from tctseg.data.conversion import nnunet

MODALITY = "CT"  # unless its dataset.json says otherwise


def find_cases(dataset: DatasetConfig, classes: list[str]) -> list[SourceCase]:
    return nnunet.find_cases(dataset, classes, default_modality=MODALITY)
