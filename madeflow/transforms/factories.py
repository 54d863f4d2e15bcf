"""Pyro-style factories: build the MADE and wrap it in a transform in one call.

Default hidden widths follow Pyro so these are drop-ins for ``affine_autoregressive`` and
``conditional_affine_autoregressive``: ``[3 * input_dim + 1]`` unconditional,
``[10 * input_dim]`` conditional.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from madeflow.nn.made import MADE
from madeflow.transforms.iaf import ConditionalIAFTransform, IAFTransform
from madeflow.transforms.maf import ConditionalMAFTransform, MAFTransform

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


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    made = {k: kwargs.pop(k) for k in _MADE_KEYS if k in kwargs}
    return made, kwargs


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
    made_kw, kw = _split(kwargs)
    hidden = [3 * input_dim + 1] if hidden_dims is None else hidden_dims
    return MAFTransform(MADE(input_dim, hidden, **made_kw), **kw)


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
    made_kw, kw = _split(kwargs)
    hidden = [3 * input_dim + 1] if hidden_dims is None else hidden_dims
    return IAFTransform(MADE(input_dim, hidden, **made_kw), **kw)


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
    made_kw, kw = _split(kwargs)
    hidden = [10 * input_dim] if hidden_dims is None else hidden_dims
    return ConditionalMAFTransform(
        MADE(input_dim, hidden, context_dim=context_dim, **made_kw), **kw
    )


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
    made_kw, kw = _split(kwargs)
    hidden = [10 * input_dim] if hidden_dims is None else hidden_dims
    return ConditionalIAFTransform(
        MADE(input_dim, hidden, context_dim=context_dim, **made_kw), **kw
    )
