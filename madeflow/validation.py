"""Input checks of every model, written once, with one set of messages.

Networks (:class:`madeflow.MADE`), transforms and density models check what users hand them here.
Every message names the argument, what was expected and what was given; the row messages name the
offending batch indices. Checks of shapes and types run everywhere; checks that read tensor values
(NaN rows) run in eager mode only (:func:`madeflow.modes.is_eager`), since a Python branch on
data would break ``torch.compile`` and ``torch.func``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from madeflow.modes import is_eager

__all__ = [
    "NumericalError",
    "broadcast_batch",
    "check_context",
    "check_int",
    "check_log_density",
    "check_observed",
    "check_partial_points",
    "check_points",
    "check_positive_ints",
    "check_tensor",
    "nonfinite_rows",
]


class NumericalError(FloatingPointError):
    """A model's values became NaN or infinite although its inputs were finite.

    Args:
        message: What happened and what to do.
        rows: The first rows (0-based) on which it happened, when known.
    """

    def __init__(self, message: str, rows: list[int] | None = None) -> None:
        super().__init__(message)
        self.rows = list(rows or [])


def check_int(value: Any, name: str, minimum: int) -> int:
    """Refuse anything but an ``int`` (``bool`` excluded) of at least ``minimum``.

    Args:
        value: What the caller passed.
        name: The argument's name, for the message.
        minimum: The smallest allowed value.

    Returns:
        ``value``.

    Raises:
        ValueError: Otherwise.

    Example:
        >>> check_int(3, "input_dim", minimum=1)
        3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive_ints(values: int | Sequence[int], name: str) -> list[int]:
    """A non-empty list of integers ``>= 1`` (a single int counts as a list of one).

    Args:
        values: An int or a sequence of ints.
        name: The argument's name, for the message.

    Returns:
        The values as a list.

    Raises:
        ValueError: If empty or any entry is not an integer ``>= 1``.
    """
    if isinstance(values, int):
        values = [values]
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        check_int(v, name, minimum=1)
    return values


def check_tensor(value: Any, name: str) -> torch.Tensor:
    """Refuse anything but a tensor, saying how to convert NumPy arrays and lists.

    Args:
        value: What the caller passed.
        name: The argument's name, for the message.

    Returns:
        ``value``.

    Raises:
        TypeError: For anything that is not a ``torch.Tensor``.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(value).__name__}; convert it with "
            f"torch.as_tensor({name}, dtype=torch.float32)"
        )
    return value


def nonfinite_rows(value: torch.Tensor, name: str) -> ValueError | None:
    """The error for NaN/Inf entries of ``value``, naming the rows (batch indices); or ``None``.

    Args:
        value: ``(*batch, n)``.
        name: The argument's name, for the message.

    Returns:
        A ``ValueError`` to raise, or ``None`` when every entry is finite.
    """
    bad = ~torch.isfinite(value).all(-1)
    if not bool(bad.any()):
        return None
    if bad.dim() == 0:  # a single point: no batch index to name
        return ValueError(f"{name} contains NaN or Inf")
    rows = torch.nonzero(bad)
    shown = ", ".join(str(tuple(r)) if len(r) > 1 else str(r[0]) for r in rows[:10].tolist())
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    return ValueError(
        f"{name} contains NaN or Inf in {len(rows)} row(s) (batch indices {shown}{more})"
    )


def check_points(
    x: Any,
    input_dim: int,
    dtype: torch.dtype | None = None,
    owner: str = "the model",
    continuous: bool = True,
    finite: bool = True,
) -> torch.Tensor:
    """Check points to score, ``(*batch, input_dim)``, and return them in ``dtype``.

    Args:
        x: What the caller passed.
        input_dim: ``D``, the size of the last dimension.
        dtype: The model's dtype; ``None`` keeps ``x``'s.
        owner: The model's name, for messages.
        continuous: Refuse integer and boolean ``x`` (a continuous density needs dequantized
            data).
        finite: Refuse NaN/Inf rows (in eager mode).

    Returns:
        ``x``, converted to ``dtype``.

    Raises:
        TypeError: If ``x`` is not a tensor, or integer data reach a continuous density.
        ValueError: On a wrong last dimension or NaN/Inf rows.
    """
    check_tensor(x, "x")
    if x.dim() == 0 or x.shape[-1] != input_dim:
        raise ValueError(
            f"x must have last dimension input_dim={input_dim}, got shape {tuple(x.shape)}"
        )
    if continuous and not x.dtype.is_floating_point:
        raise TypeError(
            f"{owner} is a continuous density but x has dtype {x.dtype}; integer data need "
            "dequantization (e.g. x + torch.rand_like(x, dtype=...)) or an explicit conversion "
            "with x.to(dtype) before scoring"
        )
    if dtype is not None:
        x = x.to(dtype)
    if finite and is_eager():
        error = nonfinite_rows(x, "x")
        if error is not None:
            raise error
    return x


def check_context(context: Any, context_dim: int, owner: str, finite: bool = True) -> torch.Size:
    """Check a context against a model's ``context_dim`` and return its batch shape.

    Args:
        context: What the caller passed: ``(*batch, context_dim)`` or ``None``.
        context_dim: The model's context size (``0``: unconditional).
        owner: The model's name, for messages.
        finite: Refuse NaN/Inf rows (in eager mode).

    Returns:
        The context's batch shape (``()`` without a context).

    Raises:
        ValueError: If a context is missing, unexpected, of the wrong size or not finite.
        TypeError: If it is not a tensor.
    """
    if not context_dim:
        if context is not None:
            raise ValueError(f"{owner} has context_dim=0 but a context was given")
        return torch.Size()
    if context is None:
        raise ValueError(
            f"{owner} is conditional (context_dim={context_dim}): pass context, a tensor of "
            f"shape (*batch, {context_dim})"
        )
    check_tensor(context, "context")
    if context.dim() == 0 or context.shape[-1] != context_dim:
        raise ValueError(
            f"context must have last dimension context_dim={context_dim}, "
            f"got shape {tuple(context.shape)}"
        )
    if finite and is_eager():
        error = nonfinite_rows(context, "context")
        if error is not None:
            raise error
    return context.shape[:-1]


def broadcast_batch(x: torch.Tensor, context_batch: torch.Size) -> torch.Size:
    """The batch shape of ``x`` broadcast with a context's.

    Args:
        x: ``(*batch, D)``.
        context_batch: The context's batch shape (``()`` without a context).

    Returns:
        The broadcast batch shape.

    Raises:
        ValueError: If the two do not broadcast.
    """
    try:
        return torch.broadcast_shapes(x.shape[:-1], context_batch)
    except RuntimeError:
        raise ValueError(
            f"context batch shape {tuple(context_batch)} does not match (broadcast with) x "
            f"batch shape {tuple(x.shape[:-1])}"
        ) from None


def check_observed(observed: Any, input_dim: int) -> torch.Tensor:
    """Check which inputs are observed: a ``(D,)`` boolean tensor.

    Args:
        observed: What the caller passed.
        input_dim: ``D``.

    Returns:
        ``observed``.

    Raises:
        TypeError: If it is not a boolean tensor.
        ValueError: If its shape is not ``(D,)``.

    Example:
        >>> check_observed(torch.tensor([True, False]), 2).tolist()
        [True, False]
    """
    if not isinstance(observed, torch.Tensor) or observed.dtype != torch.bool:
        got = observed.dtype if isinstance(observed, torch.Tensor) else type(observed).__name__
        raise TypeError(
            f"observed must be a boolean tensor of shape ({input_dim},), True where x is "
            f"observed, got {got}; e.g. torch.tensor([True, False, ...]) or x_mask.bool()"
        )
    if observed.shape != (input_dim,):
        raise ValueError(
            f"observed must have shape ({input_dim},) (one flag per input), "
            f"got {tuple(observed.shape)}"
        )
    return observed


def check_partial_points(
    x: Any, observed: torch.Tensor, input_dim: int, owner: str = "the model"
) -> torch.Tensor:
    """Check partially observed points and zero their unobserved entries.

    Entries outside ``observed`` are ignored (they may be NaN); observed entries must be finite
    (in eager mode). The zeros keep NaN out of the network, whose masks make the result
    independent of them but whose products would still propagate NaN (``0 * NaN``).

    Args:
        x: ``(*batch, D)``, any numeric or boolean dtype.
        observed: ``(D,)`` bool, as checked by :func:`check_observed`.
        input_dim: ``D``.
        owner: The model's name, for messages.

    Returns:
        ``x`` with its unobserved entries set to zero, same dtype.

    Raises:
        TypeError: If ``x`` is not a tensor.
        ValueError: On a wrong last dimension or NaN/Inf observed entries (rows named).
    """
    x = check_points(x, input_dim, owner=owner, continuous=False, finite=False)
    observed = observed.to(x.device)
    if is_eager():
        error = nonfinite_rows(x[..., observed], "x (observed entries)")
        if error is not None:
            raise error
    return torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device))


def check_log_density(log_p: torch.Tensor, owner: str, x: torch.Tensor) -> None:
    """Refuse a NaN or ``+inf`` log-density of finite points, naming the rows.

    ``-inf`` (a density that underflows) passes. Used by every model's scoring methods.

    Args:
        log_p: ``(*batch,)`` log-densities.
        owner: The model's class name, for the message.
        x: The finite points scored, for the message.

    Raises:
        NumericalError: If any entry is NaN or ``+inf``.
    """
    bad = torch.isnan(log_p) | (log_p == float("inf"))
    if not bool(bad.any()):
        return
    rows = torch.nonzero(bad.reshape(-1)).flatten()
    shown = ", ".join(str(r) for r in rows[:10].tolist())
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    raise NumericalError(
        f"{owner}'s log-density is NaN or Inf on finite data in {len(rows)} row(s) (flat batch "
        f"indices {shown}{more}; largest |x| {float(x.abs().max()):.3g}): its values overflow "
        f"{str(x.dtype)[6:]}; rescale the data, or score in float64 (model.double())",
        rows[:10].tolist(),
    )
