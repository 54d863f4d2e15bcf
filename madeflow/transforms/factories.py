"""Pyro-style factories: build the MADE and wrap it in a transform in one call.

Default hidden widths follow Pyro so these are drop-ins for ``affine_autoregressive`` and
``conditional_affine_autoregressive``: ``[3 * input_dim + 1]`` unconditional,
``[10 * input_dim]`` conditional.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from madeflow.nn.made import MADE
from madeflow.nn.stacks import default_hidden_dims
from madeflow.transforms.affine import IAFTransform, MAFTransform
from madeflow.transforms.conditional import ConditionalIAFTransform, ConditionalMAFTransform

__all__ = [
    "conditional_iaf_transform",
    "conditional_maf_transform",
    "iaf_transform",
    "maf_transform",
]

_MADE_KEYS = (
    "permutation",
    "skip_connections",
    "hidden_degrees",
    "activation",
    "residual",
    "num_masks",
    "seed",
)


def _build(
    cls: type,
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None,
    kwargs: dict[str, Any],
) -> Any:
    """``cls(MADE(...), **transform kwargs)``: MADE options split from the transform's."""
    made_kw = {k: kwargs.pop(k) for k in _MADE_KEYS if k in kwargs}
    if hidden_dims is None:
        hidden_dims = default_hidden_dims(input_dim, conditional=context_dim > 0)
    return cls(MADE(input_dim, hidden_dims, context_dim=context_dim, **made_kw), **kwargs)


def maf_transform(
    input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
) -> MAFTransform:
    """A :class:`MAFTransform` on a fresh :class:`~madeflow.MADE`.

    Args:
        input_dim: ``D``.
        hidden_dims: MADE widths; default ``[3 * D + 1]``.
        **kwargs: MADE options (``permutation``, ``skip_connections``, ``hidden_degrees``,
            ``activation``, ``residual``, ``num_masks``, ``seed``); the rest go to the transform.

    Returns:
        The transform.

    Example:
        >>> tuple(maf_transform(4).nn.hidden_dims)
        (13,)
    """
    return _build(MAFTransform, input_dim, 0, hidden_dims, kwargs)


def iaf_transform(
    input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
) -> IAFTransform:
    """An :class:`IAFTransform` on a fresh :class:`~madeflow.MADE`.

    Args:
        input_dim: ``D``.
        hidden_dims: MADE widths; default ``[3 * D + 1]``.
        **kwargs: MADE options as in :func:`maf_transform`; the rest (``stable``, clamps,
            ``sigmoid_bias``) go to the transform.

    Returns:
        The transform.

    Example:
        >>> iaf_transform(4, stable=True).stable
        True
    """
    return _build(IAFTransform, input_dim, 0, hidden_dims, kwargs)


def conditional_maf_transform(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
) -> ConditionalMAFTransform:
    """A :class:`ConditionalMAFTransform` on a fresh conditional :class:`~madeflow.MADE`.

    Args:
        input_dim: ``D``.
        context_dim: Size of the context.
        hidden_dims: MADE widths; default ``[10 * D]``.
        **kwargs: MADE options as in :func:`maf_transform`; the rest go to the transform.

    Returns:
        The conditional transform.

    Example:
        >>> conditional_maf_transform(3, 2).nn.context_dim
        2
    """
    return _build(ConditionalMAFTransform, input_dim, context_dim, hidden_dims, kwargs)


def conditional_iaf_transform(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
) -> ConditionalIAFTransform:
    """A :class:`ConditionalIAFTransform` on a fresh conditional :class:`~madeflow.MADE`.

    Args:
        input_dim: ``D``.
        context_dim: Size of the context.
        hidden_dims: MADE widths; default ``[10 * D]``.
        **kwargs: MADE options as in :func:`maf_transform`; the rest go to the transform.

    Returns:
        The conditional transform.

    Example:
        >>> conditional_iaf_transform(3, 2).nn.context_dim
        2
    """
    return _build(ConditionalIAFTransform, input_dim, context_dim, hidden_dims, kwargs)
