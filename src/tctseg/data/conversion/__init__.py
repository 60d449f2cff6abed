"""One converter per public dataset layout: ``find_cases(dataset, classes) -> list[SourceCase]``.

:func:`find_cases` picks the converter named by ``DatasetConfig.format``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tctseg.config import DatasetConfig
from tctseg.data.conversion import amos, btcv, chaos, kits19, msd, nnunet, word
from tctseg.data.conversion.common import (
    LabelMapping,
    SourceCase,
    build_mapping,
    dataset_labels,
    dataset_root,
    labels_from_dataset_json,
    read_dataset_json,
)
from tctseg.errors import ConfigError

CONVERTERS: dict[str, Callable[[DatasetConfig, list[str]], list[SourceCase]]] = {
    "kits19": kits19.find_cases,
    "msd": msd.find_cases,
    "chaos_nifti": chaos.find_nifti_cases,
    "chaos_dicom": chaos.find_dicom_cases,
    "btcv": btcv.find_cases,
    "word": word.find_cases,
    "amos": amos.find_cases,
    "nnunet": nnunet.find_cases,
}


def find_cases(dataset: DatasetConfig, classes: list[str]) -> list[SourceCase]:
    """The cases of one configured dataset, with labels mapped to the global ``classes``."""
    try:
        converter = CONVERTERS[dataset.format]
    except KeyError:
        raise ConfigError(f"datasets: format {dataset.format!r} is not one of {', '.join(CONVERTERS)}") from None
    return converter(dataset, classes)


# formats whose cases all get one modality (unless datasets.modality says otherwise)
FIXED_MODALITY: dict[str, str] = {
    "kits19": kits19.MODALITY,
    "chaos_dicom": chaos.MODALITY,
    "btcv": btcv.MODALITY,
    "word": word.MODALITY,
    "amos": amos.MODALITY,
}
# formats read through a dataset.json, with the modality when it names none (nnunet: none)
DATASET_JSON_DEFAULT_MODALITY: dict[str, str | None] = {"msd": msd.MODALITY, "chaos_nifti": chaos.MODALITY, "nnunet": None}


def dataset_modality(dataset: DatasetConfig) -> str | None:
    """The modality (CT or MR) the dataset's converter gives its cases: ``datasets.modality``,
    else the format's, else its dataset.json's; None when it cannot tell (never raises)."""
    if dataset.modality:
        return dataset.modality
    if dataset.format in FIXED_MODALITY:
        return FIXED_MODALITY[dataset.format]
    if dataset.format in DATASET_JSON_DEFAULT_MODALITY:
        return nnunet.dataset_modality(dataset, default_modality=DATASET_JSON_DEFAULT_MODALITY[dataset.format])
    return None


# formats whose release fixes its label ids: (table, name); word and amos let a dataset.json
# in the release folder win over theirs, as their converters do
BUILTIN_LABELS: dict[str, tuple[dict[int, str], str]] = {
    "kits19": (kits19.KITS19_LABELS, "KiTS19"),
    "btcv": (btcv.BTCV_LABELS, "BTCV"),
    "chaos_dicom": (chaos.CHAOS_LABELS, "CHAOS"),
    "word": (word.WORD_LABELS, "WORD"),
    "amos": (amos.AMOS_LABELS, "AMOS"),
}
DATASET_JSON_WINS = ("word", "amos")


def label_mapping(dataset: DatasetConfig, classes: list[str]) -> LabelMapping:
    """How the dataset's OWN label ids become global ids, as its converter maps them (its
    ``datasets.label_map``, tumours merged into their organ), without listing its cases: what
    a ground truth of the dataset's release needs to be scored (``tctseg evaluate --config``).

    Formats read through a dataset.json (msd, chaos_nifti, nnunet) read it from the dataset
    folder: a :class:`~tctseg.errors.DataError` names the file when it is missing. The
    formats of :data:`BUILTIN_LABELS` need no folder.
    """
    if dataset.format in DATASET_JSON_DEFAULT_MODALITY:
        root = dataset_root(dataset)
        labels = labels_from_dataset_json(read_dataset_json(root), root / "dataset.json")
        source = "dataset.json"
    elif dataset.format in BUILTIN_LABELS:
        table, name = BUILTIN_LABELS[dataset.format]
        root = Path(dataset.path).expanduser()
        if dataset.format in DATASET_JSON_WINS and root.is_dir():
            labels, source = dataset_labels(root, table, name)
        else:
            labels, source = table, f"the {name} label list"
    else:
        raise ConfigError(f"datasets: format {dataset.format!r} is not one of {', '.join(CONVERTERS)}")
    return build_mapping(labels, dataset, classes, source=source)


__all__ = ["CONVERTERS", "LabelMapping", "SourceCase", "dataset_modality", "find_cases", "label_mapping"]
