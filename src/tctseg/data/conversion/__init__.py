"""One converter per public dataset layout: ``find_cases(dataset, classes) -> list[SourceCase]``.

:func:`find_cases` picks the converter named by ``DatasetConfig.format``.
"""

from __future__ import annotations

from typing import Callable

from tctseg.config import DatasetConfig
from tctseg.data.conversion import amos, btcv, chaos, kits19, msd, nnunet, word
from tctseg.data.conversion.common import LabelMapping, SourceCase
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


__all__ = ["CONVERTERS", "LabelMapping", "SourceCase", "find_cases"]
