"""The masked networks: degrees and masks, the masked linear layer, MADE and its checks.

* :mod:`madeflow.nn.masks`: degrees, orderings and masks as pure functions;
* :mod:`madeflow.nn.grouped`: the masked product that skips the zero half of the weights;
* :mod:`madeflow.nn.linear`: :class:`MaskedLinear`;
* :mod:`madeflow.nn.made`: :class:`MADE`, the autoregressive conditioner;
* :mod:`madeflow.nn.orderings`: which masks put a set of inputs first, orderings that do;
* :mod:`madeflow.nn.pyro`: Pyro's ``AutoRegressiveNN`` signatures on a MADE;
* :mod:`madeflow.nn.checks`: :func:`check_autoregressive` for any conditioner.
"""

from madeflow.nn.checks import AutoregressiveError, check_autoregressive
from madeflow.nn.linear import MaskedLinear
from madeflow.nn.made import MADE, Params
from madeflow.nn.orderings import covering_orderings
from madeflow.nn.pyro import AutoRegressiveNN, ConditionalAutoRegressiveNN

__all__ = [
    "MADE",
    "AutoRegressiveNN",
    "AutoregressiveError",
    "ConditionalAutoRegressiveNN",
    "MaskedLinear",
    "Params",
    "check_autoregressive",
    "covering_orderings",
]
