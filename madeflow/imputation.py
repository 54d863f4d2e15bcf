r"""Impute missing values (NaN) with exact conditional draws from a MADE density estimator.

Rows are grouped by their pattern of observed entries; each group is one call of
:meth:`~madeflow.distributions.made.MADEDensity.conditional_sample`, which draws the missing
entries from :math:`p_O(x_{\text{missing}} \mid x_O)` exactly (for the mixture of the masks whose
ordering starts with the observed inputs :math:`O`; see :mod:`madeflow.distributions.conditionals`).
Rows with nothing missing come back unchanged; rows with everything missing are plain draws from
the mask ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from madeflow.distributions.made import MADEDensity
from madeflow.nn.orderings import covering_masks, uncovered_message
from madeflow.validation import check_context, check_points

__all__ = ["check_imputable", "impute", "missing_patterns"]


def missing_patterns(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct patterns of observed (non-NaN) entries of ``x`` and each row's pattern.

    Args:
        x: ``(*batch, D)`` with NaN where a value is missing.

    Returns:
        ``(patterns, which)``: ``(P, D)`` bool, ``True`` where observed, one row per distinct
        pattern; and ``(*batch,)`` int64, the pattern of each row.

    Example:
        >>> nan = float("nan")
        >>> patterns, which = missing_patterns(torch.tensor([[1.0, nan], [nan, nan], [2.0, nan]]))
        >>> patterns.tolist(), which.tolist()
        ([[False, False], [True, False]], [1, 0, 1])
    """
    observed = ~torch.isnan(x) if x.dtype.is_floating_point else torch.ones_like(x, dtype=bool)
    flat = observed.reshape(-1, x.shape[-1])
    if flat.shape[0] == 0:
        return flat[:0], torch.zeros(x.shape[:-1], dtype=torch.int64, device=x.device)
    patterns, which = torch.unique(flat, dim=0, return_inverse=True)
    return patterns, which.reshape(x.shape[:-1])


def _row_names(flat_rows: torch.Tensor, batch: torch.Size, limit: int = 10) -> str:
    shown = flat_rows[:limit]
    if len(batch) == 1:
        names = [str(int(i)) for i in shown]
    else:
        coords = torch.stack(torch.unravel_index(shown, batch), -1).tolist()
        names = [str(tuple(c)) for c in coords]
    more = f" and {flat_rows.numel() - limit} more" if flat_rows.numel() > limit else ""
    return ", ".join(names) + more


def impute(
    model: MADEDensity,
    x: torch.Tensor,
    sample_shape: torch.Size | Sequence[int] = (),
    context: torch.Tensor | None = None,
    reduce: str | None = None,
) -> torch.Tensor:
    r"""Fill the NaN entries of ``x`` with exact draws given each row's observed entries.

    Rows may miss different entries: they are grouped by pattern and each group is sampled with
    :meth:`~madeflow.distributions.made.MADEDensity.conditional_sample` (about one network pass
    per group and covering mask). A pattern is imputable when some mask's ordering starts with
    its observed inputs; train masks for the patterns of a data set with
    ``permutation=madeflow.covering_orderings(D, ~torch.isnan(x))``.

    Args:
        model: A MADE density estimator.
        x: ``(*batch, D)`` floating, NaN where missing (Inf is refused, not treated as missing).
        sample_shape: Leading shape of the draws (multiple imputation).
        context: ``(*batch, context_dim)`` when the model is conditional, else ``None``.
        reduce: ``None`` to return the draws, or ``"mean"`` for a point estimate: the mean over
            the ``sample_shape`` draws (for binary data, the estimated probability of a 1).

    Returns:
        ``(*sample_shape, *batch, D)`` draws, or ``(*batch, D)`` with ``reduce="mean"``, in the
        model's dtype; observed entries are ``x``'s.

    Raises:
        ValueError: Naming the rows and their observed inputs when no mask's ordering starts
            with them (before anything is drawn); for Inf entries, a wrong shape, a bad context
            or an unknown ``reduce``.
        TypeError: If ``x`` is not a tensor.

    Example:
        >>> from madeflow.distributions import GaussianMADE
        >>> est = GaussianMADE(3, [8], permutation=[[0, 1, 2], [2, 1, 0]])
        >>> nan = float("nan")
        >>> x = torch.tensor([[0.3, nan, nan], [nan, nan, 1.2], [0.1, 0.2, 0.3]])
        >>> filled = impute(est, x, (50,), reduce="mean")
        >>> bool(filled.isfinite().all()), filled[2].tolist() == x[2].tolist()
        (True, True)
    """
    if reduce not in (None, "mean"):
        raise ValueError(f"reduce must be None or 'mean', got {reduce!r}")
    sample_shape = torch.Size(sample_shape)
    name = type(model).__name__
    x = _checked_rows(model, x)
    ctx_batch = check_context(context, model.context_dim, name)
    try:
        batch = torch.broadcast_shapes(x.shape[:-1], ctx_batch)
    except RuntimeError:
        raise ValueError(
            f"context batch shape {tuple(ctx_batch)} does not match (broadcast with) x "
            f"batch shape {tuple(x.shape[:-1])}"
        ) from None
    d = model.input_dim
    x = x.to(model.model_dtype()).expand(*batch, d)
    patterns, which = missing_patterns(x)
    flat_which = which.reshape(-1)
    _refuse_uncovered(model, patterns, flat_which, batch)  # before anything is drawn

    flat_x = x.reshape(-1, d)
    flat_ctx = None if context is None else context.expand(*batch, context.shape[-1]).flatten(0, -2)
    out = flat_x.expand(*sample_shape, *flat_x.shape).clone()
    for p, observed in enumerate(patterns):
        if bool(observed.all()):
            continue  # nothing missing: the rows stay as they are
        rows = torch.nonzero(flat_which == p).flatten()
        ctx = None if flat_ctx is None else flat_ctx[rows]
        out[..., rows, :] = model.conditional_sample(flat_x[rows], observed, sample_shape, ctx)
    out = out.reshape(*sample_shape, *batch, d)
    if reduce == "mean" and sample_shape:
        # Observed entries stay exactly x's (a float mean of equal values may round).
        return torch.where(torch.isnan(x), out.flatten(0, len(sample_shape) - 1).mean(0), x)
    return out


def check_imputable(model: MADEDensity, x: torch.Tensor) -> None:
    """Check that :func:`impute` can fill every row of ``x``, without drawing anything.

    Use it before imputing a large data set in pieces, so that a row no mask can condition on
    is reported with its index in the whole set before any work.

    Cost: one :func:`torch.unique` over the rows' patterns; no network pass.

    Args:
        model: A MADE density estimator.
        x: ``(*batch, D)``, NaN where missing.

    Raises:
        ValueError: As :func:`impute`: naming the rows whose observed pattern no mask's ordering
            puts first, and the orderings that would work; for Inf entries or a wrong shape.
        TypeError: If ``x`` is not a tensor.

    Example:
        >>> from madeflow.distributions import GaussianMADE
        >>> est = GaussianMADE(2, [8])  # identity ordering: x0 first
        >>> check_imputable(est, torch.tensor([[0.3, float("nan")]]))  # fine
        >>> check_imputable(est, torch.tensor([[float("nan"), 0.3]]))
        Traceback (most recent call last):
        ...
        ValueError: cannot impute 1 row(s) (batch indices 0): ...
    """
    x = _checked_rows(model, x)
    patterns, which = missing_patterns(x)
    _refuse_uncovered(model, patterns, which.reshape(-1), x.shape[:-1])


def _checked_rows(model: MADEDensity, x: torch.Tensor) -> torch.Tensor:
    """``x`` checked for :func:`impute`: a tensor of ``D`` columns, NaN allowed, Inf refused."""
    x = check_points(x, model.input_dim, owner=type(model).__name__, continuous=False, finite=False)
    if x.dtype.is_floating_point and bool(torch.isinf(x).any()):
        raise ValueError(
            "x contains Inf; impute treats NaN as missing and refuses Inf "
            "(replace it with NaN if the value is missing)"
        )
    return x


def _refuse_uncovered(
    model: MADEDensity, patterns: torch.Tensor, which: torch.Tensor, batch: torch.Size
) -> None:
    """Raise one ValueError naming every row whose observed pattern no mask puts first."""
    perms = model.made.permutations
    if len(patterns) == 0:
        return
    covered = torch.stack([covering_masks(perms, p).any() for p in patterns])
    if bool(covered.all()):
        return
    bad = torch.nonzero(~covered).flatten()
    rows = torch.nonzero(torch.isin(which, bad.to(which.device))).flatten()
    first = patterns[int(which[rows[0]])]  # the pattern of the first such row
    raise ValueError(
        f"cannot impute {rows.numel()} row(s) (batch indices {_row_names(rows, batch)}): "
        f"{bad.numel()} observed pattern(s) that no mask's ordering puts first. The first "
        f"row's: {uncovered_message(type(model).__name__, perms, first)}"
    )
