"""Score a density model on data: per-example log-likelihoods in batches, and their mean.

:func:`evaluate_log_prob` runs a model in evaluation mode without gradients over a tensor or a
row source (:mod:`madeflow.data.rows`), a batch at a time; a multi-mask MADE is scored by its mask
ensemble. :func:`mean_log_prob` is what :func:`madeflow.fit` validates with, on one rank or
sharded over several.

Both refuse data that are not tensors or row sources (a NumPy array or a list) with a
``TypeError`` saying how to convert them, and report a model whose log-density overflows on
finite data (values near the dtype's limits, or weights that diverged) as a
:class:`NumericalError` naming the rows, never as a distribution's support error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from madeflow.data.rows import Rows, RowSource, take
from madeflow.train import distributed
from madeflow.train.distributed import DataParallel, shard
from madeflow.validation import NumericalError

__all__ = [
    "NumericalError",
    "evaluate_log_prob",
    "is_numerical_failure",
    "mean_and_stderr",
    "mean_log_prob",
    "require_rows",
]


def require_rows(data: Any, name: str) -> None:
    """Refuse anything but a tensor, a row source or ``None``, saying how to convert it.

    Args:
        data: What the caller passed.
        name: The argument's name, for the message.

    Raises:
        TypeError: For NumPy arrays, lists and other objects.
    """
    if data is None or isinstance(data, torch.Tensor):
        return
    if isinstance(data, (np.ndarray, list, tuple)) or not isinstance(data, RowSource):
        raise TypeError(
            f"{name} must be a torch.Tensor (or a row source), got {type(data).__name__}; "
            f"convert it with torch.as_tensor({name}, dtype=torch.float32)"
        )


def is_numerical_failure(err: BaseException, *inputs: torch.Tensor | None) -> bool:
    """Whether a model's error on these inputs is a numerical failure inside it.

    madeflow's models raise :class:`NumericalError` themselves. Other models (any module with a
    ``log_prob`` can be trained) may surface the same failure as a distribution's support error
    or a refusal of NaN inputs inside them; when the inputs themselves are finite, those NaNs
    arose inside the model (an overflow, or weights that diverged), so the data are not to blame.

    Args:
        err: The error the model raised.
        *inputs: The tensors it was given (``None`` entries are skipped).

    Returns:
        ``True`` for such an error on finite inputs.
    """
    if isinstance(err, NumericalError):
        return True
    if not isinstance(err, ValueError):
        return False
    text = str(err)
    if "within the support" not in text and "NaN or Inf" not in text:
        return False
    return all(t is None or bool(torch.isfinite(t).all()) for t in inputs)


@torch.no_grad()
def evaluate_log_prob(
    model: nn.Module,
    data: Rows,
    context: Rows | None = None,
    batch_size: int = 1000,
) -> torch.Tensor:
    """Per-example log-likelihoods in evaluation mode, without gradients, computed in batches.

    A model trained under several masks (``ensemble_log_prob`` and ``num_masks > 1`` on its MADE)
    is scored by its mask ensemble, the density the MADE paper evaluates.

    Args:
        model: Any module with ``log_prob(x, context=None)``.
        data: ``(N, D)`` examples: a tensor, or a row source read ``batch_size`` rows at a time.
        context: ``(N, C)`` contexts, or ``None``.
        batch_size: Examples per forward pass.

    Returns:
        ``(N,)`` log-likelihoods (on ``data``'s device; on the model's for a row source).

    Raises:
        TypeError: If ``data`` or ``context`` is not a tensor or row source (e.g. NumPy).
        NumericalError: If the log-density overflows on finite rows (they are named).
    """
    require_rows(data, "data")
    require_rows(context, "context")
    made = getattr(model, "made", None)
    use_ensemble = hasattr(model, "ensemble_log_prob") and getattr(made, "num_masks", 1) > 1
    score = model.ensemble_log_prob if use_ensemble else model.log_prob
    was_training = model.training
    model.eval()
    try:
        out = []
        n = len(data)
        param = next(iter(model.parameters()), None)
        device = None if param is None else param.device
        for start in range(0, n, batch_size):
            if isinstance(data, torch.Tensor) and (context is None or torch.is_tensor(context)):
                x = data[start : start + batch_size]
                c = None if context is None else context[start : start + batch_size]
            else:
                rows = torch.arange(start, min(n, start + batch_size))
                x = take(data, rows, device)
                c = None if context is None else take(context, rows, device)
            try:
                out.append(score(x) if c is None else score(x, context=c))
            except (ValueError, NumericalError) as err:
                if not is_numerical_failure(err, x, c):
                    raise
                raise _overflow(model, score, x, c, start) from err
        if not out:
            if isinstance(data, torch.Tensor):
                return data.new_zeros(0)
            return torch.zeros(0, dtype=getattr(data, "dtype", None), device=device)
        return torch.cat(out)
    finally:
        model.train(was_training)


def _overflow(
    model: nn.Module, score: Any, x: torch.Tensor, c: torch.Tensor | None, start: int
) -> NumericalError:
    """The error for a batch the model could not score: broken weights, or its failing rows."""
    broken = next((k for k, p in model.named_parameters() if not p.isfinite().all()), None)
    if broken is not None:
        return NumericalError(
            f"the model's parameter {broken} holds NaN or Inf, so it cannot score any data; "
            "retrain it or load good weights"
        )
    rows = []
    for i in range(len(x)):
        try:
            score(x[i : i + 1]) if c is None else score(x[i : i + 1], context=c[i : i + 1])
        except (ValueError, NumericalError):
            rows.append(start + i)
            if len(rows) == 10:
                break
    where = f"rows {rows}" if rows else f"the batch starting at row {start}"
    param = next(iter(model.parameters()), x)
    return NumericalError(
        f"the model's log-density is NaN or Inf on finite data ({where}; largest |x| "
        f"{float(x.abs().max()):.3g}): its values overflow {str(param.dtype)[6:]}; rescale the "
        "data, or score in float64 (model.double())",
        rows,
    )


def mean_log_prob(
    par: DataParallel,
    model: nn.Module,
    data: Rows,
    context: Rows | None,
    batch_size: int,
) -> float:
    """Mean log-likelihood of ``data``, the same number on every rank.

    In one process, the mean of :func:`evaluate_log_prob`; with several ranks each scores its
    shard (rows ``rank::world``) and the sums and counts are all-reduced in float64.

    Args:
        par: How training is spread (:class:`madeflow.train.distributed.DataParallel`).
        model: Any module with ``log_prob(x, context=None)``.
        data: ``(N, D)`` tensor or row source.
        context: ``(N, C)`` contexts, or ``None``.
        batch_size: Examples per forward pass.

    Returns:
        The mean log-likelihood (NaN or infinite if any example's is).
    """
    if par.world == 1:
        return evaluate_log_prob(model, data, context, batch_size=batch_size).mean().item()
    data, context = (shard(t, par.rank, par.world) for t in (data, context))
    ll = evaluate_log_prob(model, data, context, batch_size=batch_size)
    total, count = par.sum([ll.double().sum(), ll.numel()])
    return total / count


def mean_and_stderr(values: torch.Tensor, all_ranks: bool = False) -> tuple[float, float]:
    """Mean and standard error of a 1-D tensor (``nan`` error for one value).

    Args:
        values: ``(N,)``.
        all_ranks: With several ranks, each passes its share and all get the statistics of all
            the values together (sums all-reduced in float64, two passes).

    Returns:
        ``(mean, standard error)``.

    Example:
        >>> mean_and_stderr(torch.tensor([1.0, 2.0, 3.0]))
        (2.0, 0.5773502691896258)
    """
    if all_ranks and distributed.is_active():
        return _all_ranks_mean_and_stderr(values)
    n = values.numel()
    mean = values.double().mean().item()
    if n < 2:
        return mean, math.nan
    return mean, values.double().std().item() / math.sqrt(n)


def _all_ranks_mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    total, n = distributed.all_sum([v.sum(), v.numel()], v.device)
    mean = total / n
    if n < 2:
        return mean, math.nan
    (sq,) = distributed.all_sum([(v - mean).square().sum()], v.device)
    return mean, math.sqrt(sq / (n - 1)) / math.sqrt(n)
