"""How stacks of MADEs are laid out: default widths and alternating orderings, written once.

Flows, the autoguide and the transform factories build one MADE per layer. The MAF and IAF papers
reverse the ordering between consecutive layers, so that every variable is conditioned on every
other one somewhere in the stack; Pyro's default width for an autoregressive network is
``3 * D + 1`` hidden units (``10 * D`` for its conditional factories).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from madeflow.nn.made import MADE
from madeflow.validation import check_int

__all__ = ["alternating_order", "default_hidden_dims", "made_stack"]


def default_hidden_dims(input_dim: int, conditional: bool = False) -> list[int]:
    """Pyro's default hidden widths for a network over ``D`` inputs.

    Args:
        input_dim: ``D``.
        conditional: Pyro's conditional factories' default (``10 * D``) instead of ``3 * D + 1``.

    Returns:
        One hidden layer's width, as a list.

    Example:
        >>> default_hidden_dims(4), default_hidden_dims(4, conditional=True)
        ([13], [40])
    """
    return [10 * input_dim] if conditional else [3 * input_dim + 1]


def alternating_order(input_dim: int, layer: int) -> list[int]:
    """The ordering of layer ``layer`` of a stack: the identity, reversed every other layer.

    Args:
        input_dim: ``D``.
        layer: 0-based index of the layer in the stack.

    Returns:
        ``permutation[k]``, the input that comes ``k``-th.

    Example:
        >>> alternating_order(3, 0), alternating_order(3, 1)
        ([0, 1, 2], [2, 1, 0])
    """
    order = list(range(input_dim))
    return order[::-1] if layer % 2 else order


def made_stack(
    input_dim: int,
    num_layers: int,
    hidden_dims: Sequence[int] | None = None,
    context_dim: int = 0,
    **made_kwargs: Any,
) -> list[MADE]:
    """One MADE per layer of a flow, orderings alternating unless ``permutation`` is given.

    Args:
        input_dim: ``D``.
        num_layers: How many MADEs.
        hidden_dims: Their widths; default :func:`default_hidden_dims` (``3 * D + 1``).
        context_dim: Size of the context every MADE reads (``0``: none).
        **made_kwargs: Passed to every :class:`~madeflow.MADE`; a ``seed`` is offset by the
            layer index so the layers differ.

    Returns:
        The MADEs, first layer first.
    """
    check_int(num_layers, "num_transforms", minimum=1)
    hidden = default_hidden_dims(input_dim) if hidden_dims is None else list(hidden_dims)
    mades = []
    for i in range(num_layers):
        kw = dict(made_kwargs)
        kw.setdefault("permutation", alternating_order(input_dim, i))
        if kw.get("seed") is not None:
            kw["seed"] = kw["seed"] + i
        mades.append(MADE(input_dim, hidden, context_dim=context_dim, **kw))
    return mades
