"""`tctseg compare`: the paper's tables (Tab. 1–5, 7–12) for the config's data.

See :mod:`tctseg.compare.experiments` for what each table holds and where runs go.
"""

from tctseg.compare.experiments import ABLATIONS, DEFAULT_FRACTIONS, PAPER_PATCH, TABLE_NAMES, run_compare
from tctseg.compare.subsets import fraction_cases, split_half, with_training_fraction
from tctseg.compare.tables import CompareTable, budget_line, mean_sd, write_table

__all__ = [
    "ABLATIONS",
    "DEFAULT_FRACTIONS",
    "PAPER_PATCH",
    "TABLE_NAMES",
    "CompareTable",
    "budget_line",
    "fraction_cases",
    "mean_sd",
    "run_compare",
    "split_half",
    "with_training_fraction",
    "write_table",
]
