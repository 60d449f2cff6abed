"""Deterministic case subsets: low-data fractions (Tab. 3) and the transfer split (Tab. 4).

Both depend on the sorted case ids only, so every method and seed sees the same cases.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

from tctseg.config import Config, DatasetConfig
from tctseg.errors import ConfigError


def fraction_cases(case_ids: Iterable[str], fraction: float) -> list[str]:
    """The first ``round(fraction · n)`` (at least 1) of the sorted case ids.

    Rounding is half up, so 50% of 5 cases is 3.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"--fractions: {fraction} is not in (0, 1]")
    ids = sorted(set(case_ids))
    count = max(1, math.floor(fraction * len(ids) + 0.5))
    return ids[:count]


def split_half(case_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(fine-tune part, held-out part) by sorted id: the first ⌈n/2⌉ and the rest."""
    ids = sorted(set(case_ids))
    cut = (len(ids) + 1) // 2
    return ids[:cut], ids[cut:]


def with_training_fraction(config: Config, case_ids: dict[str, Sequence[str]], fraction: float) -> Config:
    """``config`` with each training dataset restricted (``DatasetConfig.cases``) to its fraction.

    ``case_ids``: every training dataset's available case ids, by dataset name. A dataset
    whose fraction keeps every case is left as it is, so 100% is the same run as the full data.
    """
    datasets: list[DatasetConfig] = []
    for d in config.datasets:
        if d.role == "train":
            subset = fraction_cases(case_ids[d.name], fraction)
            if len(subset) < len(set(case_ids[d.name])):  # all cases: the unchanged dataset, the same run
                d = dataclasses.replace(d, cases=subset, exclude_cases=None)
        datasets.append(d)
    return dataclasses.replace(config, datasets=datasets)
