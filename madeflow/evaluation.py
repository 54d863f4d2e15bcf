"""Score a density model on data: per-example log-likelihoods in batches, and their mean.

:func:`evaluate_log_prob` runs a model in evaluation mode without gradients over a tensor or a
row source (:mod:`madeflow.data.rows`), a batch at a time; a multi-mask MADE is scored by its mask
ensemble. :func:`mean_log_prob` is what :func:`madeflow.fit` validates with, on one rank or
sharded over several.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from madeflow.data.rows import Rows, take

if TYPE_CHECKING:
    from madeflow.distributed import DataParallel

__all__ = ["evaluate_log_prob", "mean_log_prob"]


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
    """
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
            with torch.no_grad():
                out.append(score(x) if c is None else score(x, context=c))
        if not out:
            if isinstance(data, torch.Tensor):
                return data.new_zeros(0)
            return torch.zeros(0, dtype=getattr(data, "dtype", None), device=device)
        return torch.cat(out)
    finally:
        model.train(was_training)


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
        par: How training is spread (:class:`madeflow.distributed.DataParallel`).
        model: Any module with ``log_prob(x, context=None)``.
        data: ``(N, D)`` tensor or row source.
        context: ``(N, C)`` contexts, or ``None``.
        batch_size: Examples per forward pass.

    Returns:
        The mean log-likelihood (NaN or infinite if any example's is).
    """
    if par.world == 1:
        return evaluate_log_prob(model, data, context, batch_size=batch_size).mean().item()
    ll = evaluate_log_prob(model, par.shard(data), par.shard(context), batch_size=batch_size)
    total, count = par.sum([ll.double().sum(), ll.numel()])
    return total / count
