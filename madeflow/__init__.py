"""madeflow: MADE, MAF and IAF for PyTorch and Pyro, with exact densities and fast inversion.

The public API, flat:

* the conditioner: :class:`MADE`, :class:`MaskedLinear`, :func:`check_autoregressive`, and
  Pyro's exact signatures in :class:`AutoRegressiveNN`, :class:`ConditionalAutoRegressiveNN`;
* density estimators: :class:`BernoulliMADE`, :class:`GaussianMADE`,
  :class:`GaussianMixtureMADE`; their exact marginals and conditionals, :func:`impute` and
  :func:`covering_orderings` (orderings that make a subset conditionable);
* Pyro transforms: :class:`MAFTransform`, :class:`IAFTransform` (and conditional twins),
  :class:`BatchNormTransform`, :class:`PermuteTransform`, factories;
* flows and guides: :class:`MAF`, :class:`IAF`, :class:`AutoIAF`;
* the sequential solver: :func:`autoregressive_solve`;
* training and runs: :func:`fit` (:mod:`madeflow.train`), :func:`load_run`
  (:mod:`madeflow.runs`), :func:`build_model`; data-parallel training under ``torchrun`` in
  :mod:`madeflow.train.distributed`;
* data and its preprocessing (logit and standardising maps, dequantization): :mod:`madeflow.data`.

The command line (:mod:`madeflow.cli`) is built on these; ``import madeflow`` does not load it.
"""

from madeflow.autoguide import AutoIAF
from madeflow.distributions import (
    BernoulliMADE,
    GaussianMADE,
    GaussianMixtureMADE,
    MADEDensity,
    MADEDistribution,
)
from madeflow.flows import IAF, MAF
from madeflow.imputation import impute
from madeflow.models import build_model
from madeflow.nn.checks import AutoregressiveError, check_autoregressive
from madeflow.nn.linear import MaskedLinear
from madeflow.nn.made import MADE
from madeflow.nn.orderings import covering_orderings
from madeflow.nn.pyro import AutoRegressiveNN, ConditionalAutoRegressiveNN
from madeflow.runs import CheckpointError, load_run
from madeflow.solve import autoregressive_solve, naive_autoregressive_solve
from madeflow.train import (
    EpochEnd,
    History,
    NonFiniteLossError,
    NumericalError,
    evaluate_log_prob,
    fit,
)
from madeflow.transforms import (
    BatchNormTransform,
    ConditionalIAFTransform,
    ConditionalMAFTransform,
    IAFTransform,
    MAFTransform,
    PermuteTransform,
    conditional_iaf_transform,
    conditional_maf_transform,
    iaf_transform,
    maf_transform,
)

__version__ = "0.1.0"
"""The version of madeflow (read by the packaging and printed by ``madeflow --version``)."""

__all__ = [
    "IAF",
    "MADE",
    "MAF",
    "AutoIAF",
    "AutoRegressiveNN",
    "AutoregressiveError",
    "BatchNormTransform",
    "BernoulliMADE",
    "CheckpointError",
    "ConditionalAutoRegressiveNN",
    "ConditionalIAFTransform",
    "ConditionalMAFTransform",
    "EpochEnd",
    "GaussianMADE",
    "GaussianMixtureMADE",
    "History",
    "IAFTransform",
    "MADEDensity",
    "MADEDistribution",
    "MAFTransform",
    "MaskedLinear",
    "NonFiniteLossError",
    "NumericalError",
    "PermuteTransform",
    "autoregressive_solve",
    "build_model",
    "check_autoregressive",
    "conditional_iaf_transform",
    "conditional_maf_transform",
    "covering_orderings",
    "evaluate_log_prob",
    "fit",
    "iaf_transform",
    "impute",
    "load_run",
    "maf_transform",
    "naive_autoregressive_solve",
]
