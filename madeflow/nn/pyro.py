r"""Exact drop-ins for Pyro's ``AutoRegressiveNN`` and ``ConditionalAutoRegressiveNN``.

Same signatures, argument order and defaults as :mod:`pyro.nn.auto_reg_nn`, so a Pyro user
changes only the import line::

    from madeflow import AutoRegressiveNN                # was: from pyro.nn import ...
    arn = AutoRegressiveNN(10, [50], param_dims=[1, 1])  # a random ordering, as in Pyro
    flow = AffineAutoregressive(arn)                     # Pyro's transform, madeflow's network

Both are :class:`madeflow.MADE` subclasses: the outputs have Pyro's shapes, and madeflow's
transforms solve them with the one-pass-cost engine. Where they differ from Pyro (see
``docs/pyro.md``): hidden widths below ``input_dim`` are allowed with a warning (Pyro raises);
hidden degrees are spread evenly by madeflow's rule, so the parameter layout differs and Pyro
state dicts do not load; the context enters through its own weight matrix
(``context_layer``) instead of being concatenated to the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from madeflow.nn.made import MADE

__all__ = ["AutoRegressiveNN", "ConditionalAutoRegressiveNN"]


class _PyroMADE(MADE):
    """A MADE built from Pyro's arguments: a random ordering by default, ``nonlinearity``."""

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int],
        permutation: torch.Tensor | Sequence[int] | None,
        skip_connections: bool,
        nonlinearity: nn.Module | None,
    ) -> None:
        super().__init__(
            input_dim,
            hidden_dims,
            param_dims=param_dims,
            context_dim=context_dim,
            permutation="random" if permutation is None else permutation,
            skip_connections=skip_connections,
            activation=nn.ReLU() if nonlinearity is None else nonlinearity,
        )

    @property
    def f(self) -> nn.Module:
        """The nonlinearity, under Pyro's attribute name."""
        return self.activation


class ConditionalAutoRegressiveNN(_PyroMADE):
    """Pyro's ``ConditionalAutoRegressiveNN``, signature for signature, on madeflow's MADE.

    ``forward(x, context)`` is :meth:`madeflow.MADE.forward`; the context is required.

    Args:
        input_dim: ``D``.
        context_dim: Size of the context ``C`` (every output, the first included, sees it).
        hidden_dims: Hidden widths.
        param_dims: Parameters per input: ``p == 1`` gives a ``(*batch, D)`` output, ``p > 1`` a
            ``(*batch, p, D)`` one (default two, e.g. shift and log-scale).
        permutation: The ordering (``permutation[k]`` is the input that comes ``k``-th);
            ``None`` draws a random one from torch's global generator, as Pyro does.
        skip_connections: Add masked direct input-to-output connections.
        nonlinearity: The activation module between layers (default ``nn.ReLU()``).

    Example:
        >>> arn = ConditionalAutoRegressiveNN(10, 5, [50], param_dims=[1, 5, 3])
        >>> a, b, c = arn(torch.randn(100, 10), context=torch.randn(100, 5))
        >>> tuple(a.shape), tuple(b.shape), tuple(c.shape)
        ((100, 1, 10), (100, 5, 10), (100, 3, 10))
    """

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int] = (1, 1),
        permutation: torch.Tensor | Sequence[int] | None = None,
        skip_connections: bool = False,
        nonlinearity: nn.Module | None = None,
    ) -> None:
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 1:
            raise ValueError(
                f"context_dim must be a positive integer, got {context_dim!r}; Pyro's order is "
                "ConditionalAutoRegressiveNN(input_dim, context_dim, hidden_dims, ...), and an "
                "unconditional network is AutoRegressiveNN(input_dim, hidden_dims, ...)"
            )
        super().__init__(
            input_dim,
            context_dim,
            hidden_dims,
            param_dims,
            permutation,
            skip_connections,
            nonlinearity,
        )


class AutoRegressiveNN(_PyroMADE):
    """Pyro's ``AutoRegressiveNN``, signature for signature, on madeflow's MADE.

    Args:
        input_dim: ``D``.
        hidden_dims: Hidden widths.
        param_dims: Parameters per input: ``p == 1`` gives a ``(*batch, D)`` output, ``p > 1`` a
            ``(*batch, p, D)`` one (default two, e.g. shift and log-scale).
        permutation: The ordering (``permutation[k]`` is the input that comes ``k``-th);
            ``None`` draws a random one from torch's global generator, as Pyro does.
        skip_connections: Add masked direct input-to-output connections.
        nonlinearity: The activation module between layers (default ``nn.ReLU()``).

    Example:
        >>> arn = AutoRegressiveNN(10, [50], param_dims=[1, 1])
        >>> m, s = arn(torch.randn(100, 10))
        >>> tuple(m.shape), tuple(s.shape)
        ((100, 10), (100, 10))
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int] = (1, 1),
        permutation: torch.Tensor | Sequence[int] | None = None,
        skip_connections: bool = False,
        nonlinearity: nn.Module | None = None,
    ) -> None:
        super().__init__(
            input_dim, 0, hidden_dims, param_dims, permutation, skip_connections, nonlinearity
        )
