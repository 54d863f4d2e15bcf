"""Data: bundled digits, 2-D toy densities, user files (offline), memory-mapped rows.

And the maps to and from the space a model is trained in, with their log-Jacobians
(:class:`DataSpace`), and the digits' dequantization augmenter (:class:`Dequantize`).
"""

from madeflow.data.digits import DigitSplits, load_digits, logit_log_jacobian
from madeflow.data.files import DataError, Split, Standardizer, load_array, split, split_indices
from madeflow.data.memmap import MemmapRows, load_memmap
from madeflow.data.preprocessing import DataSpace, Dequantize
from madeflow.data.rows import RowSource
from madeflow.data.toy import TOY_DATASETS, toy_data

__all__ = [
    "TOY_DATASETS",
    "DataError",
    "DataSpace",
    "Dequantize",
    "DigitSplits",
    "MemmapRows",
    "RowSource",
    "Split",
    "Standardizer",
    "load_array",
    "load_digits",
    "load_memmap",
    "logit_log_jacobian",
    "split",
    "split_indices",
    "toy_data",
]
