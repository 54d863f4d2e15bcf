"""Training: :func:`fit` in small named pieces, evaluation, resumable state, data-parallel runs.

* :mod:`~madeflow.train.loop`: :func:`fit`, one epoch at a time;
* :mod:`~madeflow.train.step`: the mini-batches, one optimizer step, divergence checks;
* :mod:`~madeflow.train.state`: :class:`History`, :class:`EpochEnd`, early stopping, and the
  state a run resumes from (snapshot, restore, checks);
* :mod:`~madeflow.train.checks`: what :func:`fit` refuses before it trains;
* :mod:`~madeflow.train.evaluation`: log-likelihoods in batches, means and standard errors;
* :mod:`~madeflow.train.distributed`: the process group and data-parallel training.
"""

from madeflow.train.evaluation import (
    NumericalError,
    evaluate_log_prob,
    mean_and_stderr,
    mean_log_prob,
)
from madeflow.train.loop import fit
from madeflow.train.state import EpochEnd, History, TrainingStateError
from madeflow.train.step import NonFiniteLossError

__all__ = [
    "EpochEnd",
    "History",
    "NonFiniteLossError",
    "NumericalError",
    "TrainingStateError",
    "evaluate_log_prob",
    "fit",
    "mean_and_stderr",
    "mean_log_prob",
]
