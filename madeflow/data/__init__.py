"""Data: bundled digits, 2-D toy densities, and user files (offline)."""

from madeflow.data.digits import DigitSplits, load_digits, logit_log_jacobian
from madeflow.data.files import DataError, Split, Standardizer, load_array, split
from madeflow.data.toy import TOY_DATASETS, toy_data

__all__ = [
    "TOY_DATASETS",
    "DataError",
    "DigitSplits",
    "Split",
    "Standardizer",
    "load_array",
    "load_digits",
    "logit_log_jacobian",
    "split",
    "toy_data",
]
