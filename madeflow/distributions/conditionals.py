r"""Exact marginals and conditionals of a MADE density estimator, from the masks that allow them.

A MADE density under mask :math:`k` factorizes in that mask's ordering :math:`\pi_k`,

.. math:: p_k(x) = \prod_{j=1}^{D} p_k(x_{\pi_k(j)} \mid x_{\pi_k(<j)}).

When the observed inputs :math:`O` are the first :math:`m = |O|` entries of :math:`\pi_k` (the mask
*covers* :math:`O`), the first :math:`m` factors multiply to the exact marginal
:math:`p_k(x_O)`, read off the same single pass as :math:`p_k(x)`, and the remaining factors are
the exact conditional :math:`p_k(x_{\bar O} \mid x_O)`, sampled by the sequential solve started at
step :math:`m + 1` (:func:`madeflow.solve.autoregressive_solve` with ``observed``: about one pass).

With several masks the model is their equal-weight mixture (:meth:`MADEDensity.ensemble_log_prob`).
For a subset :math:`O`, the masks :math:`C_O` that cover it define the density

.. math:: p_O(x) = \frac{1}{|C_O|} \sum_{k \in C_O} p_k(x),

whose marginal is the mean of theirs, :math:`p_O(x_O) = \frac{1}{|C_O|} \sum_k p_k(x_O)`, and whose
conditional is the mixture of theirs weighted by each mask's marginal likelihood of the observed
values,

.. math:: p_O(x_{\bar O} \mid x_O) = \sum_{k \in C_O} w_k(x_O)\, p_k(x_{\bar O} \mid x_O),
   \qquad w_k(x_O) = \frac{p_k(x_O)}{\sum_{l \in C_O} p_l(x_O)}.

Every quantity here is exact for :math:`p_O`. When every mask covers :math:`O` (a single mask, the
empty set, all inputs) :math:`p_O` is the mask ensemble itself; otherwise it is the mixture of the
covering masks only, a different (but equally valid, normalized) density.

The functions take a :class:`~madeflow.distributions.made.MADEDensity`; its methods
``marginal_log_prob``, ``conditional_log_prob``, ``conditional_sample`` and ``covering_masks``
call them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch.distributions import Categorical

from madeflow.modes import is_eager
from madeflow.nn.made import MADE
from madeflow.nn.orderings import covering_masks as _covers
from madeflow.nn.orderings import uncovered_message
from madeflow.solve import autoregressive_solve
from madeflow.validation import (
    broadcast_batch,
    check_log_density,
    check_observed,
    check_partial_points,
)

if TYPE_CHECKING:  # pragma: no cover
    from madeflow.distributions.made import MADEDensity

__all__ = [
    "conditional_log_prob",
    "conditional_sample",
    "covering",
    "marginal_log_prob",
    "partial_points",
]


def covering(model: MADEDensity, observed: torch.Tensor) -> list[int]:
    """Indices of the masks whose ordering starts with the observed inputs.

    Args:
        model: The estimator.
        observed: ``(D,)`` bool.

    Returns:
        The covering masks' indices, ascending (all masks for the empty set and the full set).

    Raises:
        TypeError: If ``observed`` is not a boolean tensor.
        ValueError: If its shape is wrong, or no mask covers it (the message says which
            orderings would, and how to train them).
    """
    observed = check_observed(observed, model.input_dim)
    perms = model.made.permutations
    found = torch.nonzero(_covers(perms, observed)).flatten().tolist()
    if not found:
        raise ValueError(uncovered_message(type(model).__name__, perms, observed))
    return found


@contextmanager
def _restoring_mask(made: MADE) -> Iterator[None]:
    current = int(made.mask_index)
    try:
        yield
    finally:
        if int(made.mask_index) != current:
            made.set_mask(current)


def _use_mask(made: MADE, index: int) -> None:
    if int(made.mask_index) != index:  # switching rebuilds the masks; skip it when it is a no-op
        made.set_mask(index)


def partial_points(model: MADEDensity, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Check partially observed points; unobserved entries become 0, in the model's dtype.

    Args:
        model: The estimator.
        x: ``(*batch, D)``; entries outside ``observed`` are ignored (NaN allowed).
        observed: ``(D,)`` bool.

    Returns:
        ``(*batch, D)`` in the model's dtype, zero outside ``observed``.
    """
    filled = check_partial_points(x, observed, model.input_dim, type(model).__name__)
    return model.checked_points(filled)  # dtype rules and the family's value checks


def _scores(
    model: MADEDensity,
    x: torch.Tensor,
    observed: torch.Tensor,
    context: torch.Tensor | None,
    masks: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p_k(x)`` and ``log p_k(x_O)`` for each mask ``k`` in ``masks``: ``(C, *batch)`` each.

    One network pass per mask; both come from the same per-dimension log-densities.
    """
    made, joints, marginals = model.made, [], []
    observed = observed.to(x.device)
    with _restoring_mask(made):
        for k in masks:
            _use_mask(made, k)
            terms = model.conditionals_from_params(made(x, context)).log_prob(x)
            joints.append(terms.sum(-1))
            marginals.append(torch.where(observed, terms, terms.new_zeros(())).sum(-1))
    return torch.stack(joints), torch.stack(marginals)


def marginal_log_prob(
    model: MADEDensity,
    x: torch.Tensor,
    observed: torch.Tensor,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log p_O(x_O)``: see :meth:`MADEDensity.marginal_log_prob`."""
    observed = check_observed(observed, model.input_dim)
    x = partial_points(model, x, observed)
    batch = broadcast_batch(x, model.checked_context(context))
    masks = covering(model, observed)
    if batch.numel() == 0 or not bool(observed.any()):  # the marginal of nothing is 1
        return x.new_zeros(batch)
    _, marginals = _scores(model, x, observed, context, masks)
    return _checked(torch.logsumexp(marginals, 0) - math.log(len(masks)), model, x)


def conditional_log_prob(
    model: MADEDensity,
    x: torch.Tensor,
    observed: torch.Tensor,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log p_O(x_rest | x_O)``: see :meth:`MADEDensity.conditional_log_prob`."""
    observed = check_observed(observed, model.input_dim)
    x = model.checked_points(x)
    batch = broadcast_batch(x, model.checked_context(context))
    masks = covering(model, observed)
    if batch.numel() == 0:
        return x.new_zeros(batch)
    joints, marginals = _scores(model, x, observed, context, masks)
    # log mean_k p_k(x) - log mean_k p_k(x_O): the 1/|C| factors cancel.
    return _checked(torch.logsumexp(joints, 0) - torch.logsumexp(marginals, 0), model, x)


def _checked(log_p: torch.Tensor, model: MADEDensity, x: torch.Tensor) -> torch.Tensor:
    """Refuse a NaN or +inf result on finite inputs, as ``log_prob`` does (eager mode)."""
    if is_eager():
        check_log_density(log_p, type(model).__name__, x)
    return log_p


def conditional_sample(
    model: MADEDensity,
    x: torch.Tensor,
    observed: torch.Tensor,
    sample_shape: torch.Size,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draws from ``p_O(x_rest | x_O)``: see :meth:`MADEDensity.conditional_sample`."""
    observed = check_observed(observed, model.input_dim)
    x = partial_points(model, x, observed)
    batch = broadcast_batch(x, model.checked_context(context))
    masks = covering(model, observed)
    d = model.input_dim
    shape = sample_shape + batch + torch.Size((d,))
    given = x.expand(*batch, d)
    observed = observed.to(x.device)
    if shape.numel() == 0 or bool(observed.all()):
        return given.detach().expand(shape).clone()
    made = model.made
    with torch.no_grad(), _restoring_mask(made):
        # Observed entries drive nothing: the solve copies them from the noise.
        noise = torch.where(observed, given, model.draw_noise(shape))
        if len(masks) == 1:
            _use_mask(made, masks[0])
            out = autoregressive_solve(made, model.step, noise, context, observed=observed)
        else:
            out = _mixture_solve(model, given, observed, noise, context, masks, sample_shape)
    # The solve already copies them; this makes "observed entries equal x's" hold by construction.
    return torch.where(observed, given, out)


def _mixture_solve(
    model: MADEDensity,
    given: torch.Tensor,
    observed: torch.Tensor,
    noise: torch.Tensor,
    context: torch.Tensor | None,
    masks: list[int],
    sample_shape: torch.Size,
) -> torch.Tensor:
    """One mask per draw, with weights ``p_k(x_O)``, then each mask's rows through its solve."""
    made, shape = model.made, noise.shape
    batch = given.shape[:-1]
    if bool(observed.any()):
        _, marginals = _scores(model, given, observed, context, masks)
        logits = marginals.movedim(0, -1)  # (*batch, C)
    else:  # every mask's marginal of nothing is 1: uniform weights, no pass needed
        logits = given.new_zeros(*batch, len(masks))
    choice = Categorical(logits=logits, validate_args=False).sample(sample_shape).reshape(-1)
    flat_noise = noise.reshape(-1, shape[-1])
    flat_context = (
        None if context is None else context.expand(*shape[:-1], context.shape[-1]).flatten(0, -2)
    )
    out = flat_noise.clone()
    for j, k in enumerate(masks):
        rows = torch.nonzero(choice == j).flatten()
        if rows.numel() == 0:
            continue
        _use_mask(made, k)
        ctx = None if flat_context is None else flat_context[rows]
        out[rows] = autoregressive_solve(made, model.step, flat_noise[rows], ctx, observed=observed)
    return out.reshape(shape)
