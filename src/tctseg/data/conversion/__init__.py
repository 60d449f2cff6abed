"""One converter per public dataset layout: ``find_cases(dataset, classes) -> list[SourceCase]``.

:func:`find_cases` picks the converter named by ``DatasetConfig.format``.
"""

from __future__ import annotations

from typing import Callable

from tctseg.config import DatasetConfig
from tctseg.data.conversion import amos, btcv, chaos, kits19, msd, nnunet, word
from tctseg.data.conversion.common import LabelMapping, SourceCase, build_mapping
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


# each format's own label ids → names, and where they come from: what its converter maps
LABEL_TABLES: dict[str, Callable[[DatasetConfig], tuple[dict[int, str], str]]] = {
    "kits19": kits19.label_table,
    "msd": nnunet.label_table,
    "chaos_nifti": nnunet.label_table,
    "chaos_dicom": chaos.dicom_label_table,
    "btcv": btcv.label_table,
    "word": word.label_table,
    "amos": amos.label_table,
    "nnunet": nnunet.label_table,
}


def label_mapping(dataset: DatasetConfig, classes: list[str]) -> LabelMapping:
    """How the dataset's OWN label ids become global ids, as its converter maps them (its
    ``datasets.label_map``, tumours merged into their organ), without listing its cases: what
    a ground truth of the dataset's release needs to be scored (``tctseg evaluate --config``).

    Formats read through a dataset.json (msd, chaos_nifti, nnunet) read it from the dataset
    folder: a :class:`~tctseg.errors.DataError` names the file when it is missing. The
    others need no folder (word and amos read a dataset.json where their folder has one).
    """
    try:
        label_table = LABEL_TABLES[dataset.format]
    except KeyError:
        raise ConfigError(f"datasets: format {dataset.format!r} is not one of {', '.join(CONVERTERS)}") from None
    labels, source = label_table(dataset)
    return build_mapping(labels, dataset, classes, source=source)


__all__ = ["CONVERTERS", "LabelMapping", "SourceCase", "dataset_modality", "find_cases", "label_mapping"]
