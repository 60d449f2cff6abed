"""The generic door: any nnU-Net-raw or MSD-format dataset plus a label mapping.

Layout (nnU-Net v2 "dataset format"): ``<path>/dataset.json``, ``imagesTr/<case>_0000<ending>``,
``labelsTr/<case><ending>`` where ``dataset.json`` has ``"labels": {"background": 0, "liver": 1}``,
``"channel_names": {"0": "CT"}`` and ``"file_ending": ".nii.gz"``. MSD-format datasets
(``"labels": {"0": "background", "1": "liver"}``, ``"modality": {"0": "CT"}``, images without
the channel suffix) come in through the same door.

``DatasetConfig.label_map`` (dataset id -> global class name) says which label is which; without
it, dataset.json label names are matched to the global names (synonym-aware: "kidney_right" is
``right_kidney``). Only channel 0 of a multi-channel dataset is read.
"""

from __future__ import annotations

from tctseg.config import DatasetConfig
from tctseg.data.conversion.common import (
    SourceCase,
    build_mapping,
    dataset_root,
    labels_from_dataset_json,
    make_cases,
    modality_from_dataset_json,
    paired_cases,
    read_dataset_json,
)
from tctseg.errors import DataError


def label_table(dataset: DatasetConfig) -> tuple[dict[int, str], str]:
    """The dataset's own label ids → names from its dataset.json (a DataError names the file
    when it is missing), and where they come from."""
    root = dataset_root(dataset)
    return labels_from_dataset_json(read_dataset_json(root), root / "dataset.json"), "dataset.json"


def find_cases(dataset: DatasetConfig, classes: list[str], *, default_modality: str | None = None) -> list[SourceCase]:
    root = dataset_root(dataset)
    info = read_dataset_json(root)
    json_path = root / "dataset.json"
    labels = labels_from_dataset_json(info, json_path)
    modality = dataset.modality or modality_from_dataset_json(info, json_path) or default_modality
    if modality is None:
        raise DataError(f"{json_path}: no channel_names/modality entry; set datasets.modality (CT or MR)")
    mapping = build_mapping(labels, dataset, classes, source="dataset.json")
    ending = str(info.get("file_ending", ".nii.gz"))
    triples = paired_cases(root / "imagesTr", root / "labelsTr", ending)
    return make_cases(dataset, triples, modality, mapping)


def dataset_modality(dataset: DatasetConfig, *, default_modality: str | None = None) -> str | None:
    """The modality :func:`find_cases` gives the dataset's cases (``datasets.modality``, else
    its dataset.json's first channel, else ``default_modality``), without raising: the dataset
    folder may be absent where a trained model is used (None then, without a default)."""
    if dataset.modality:
        return dataset.modality
    try:
        root = dataset_root(dataset)
        found = modality_from_dataset_json(read_dataset_json(root), root / "dataset.json")
    except DataError:
        return default_modality
    return found or default_modality
