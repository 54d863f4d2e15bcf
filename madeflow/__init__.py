"""madeflow: MADE, MAF and IAF for PyTorch and Pyro, with exact densities and fast inversion."""

from madeflow.checks import AutoregressiveError, check_autoregressive
from madeflow.layers import MaskedLinear
from madeflow.made import MADE

__version__ = "0.1.0"

__all__ = [
    "MADE",
    "AutoregressiveError",
    "MaskedLinear",
    "check_autoregressive",
]
