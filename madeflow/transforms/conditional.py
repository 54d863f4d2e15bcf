"""Conditional MAF and IAF layers: a network that also reads a context, fixed by ``condition``."""

from __future__ import annotations

from typing import Any, Callable

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule

from madeflow.nn.made import Params
from madeflow.transforms.affine import AffineAutoregressive, IAFTransform, MAFTransform
from madeflow.validation import check_context

__all__ = ["ConditionalAutoregressive", "ConditionalIAFTransform", "ConditionalMAFTransform"]


class ConditionalAutoregressive(ConditionalTransformModule):
    """Shared body of the conditional layers: hold a network, build a layer on ``condition``.

    Subclasses set :attr:`transform_class`; ``condition(c)`` returns
    ``transform_class(nn, context=c, **kwargs)``, which shares this module's network.

    Args:
        autoregressive_nn: A conditional :class:`~madeflow.MADE` (``context_dim > 0``,
            ``param_dims=(1, 1)``) or Pyro's ``ConditionalAutoRegressiveNN``.
        **kwargs: Passed to :attr:`transform_class`.
    """

    transform_class: type[AffineAutoregressive]
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, autoregressive_nn: Callable[..., Params], **kwargs: Any) -> None:
        super().__init__()
        self.nn = autoregressive_nn
        self.kwargs = kwargs

    def condition(self, context: torch.Tensor) -> AffineAutoregressive:
        """Fix the context.

        Args:
            context: ``(*batch, context_dim)``.

        Returns:
            A :attr:`transform_class` layer sharing the network.

        Raises:
            ValueError: If ``context`` is missing or has the wrong last dimension.
            TypeError: If it is not a tensor.
        """
        context_dim = getattr(self.nn, "context_dim", None)
        if context_dim is None:  # a network that does not say: any tensor will do
            context_dim = context.shape[-1] if isinstance(context, torch.Tensor) else 1
        check_context(context, context_dim, type(self).__name__, finite=False)
        return self.transform_class(self.nn, context=context, **self.kwargs)


class ConditionalMAFTransform(ConditionalAutoregressive):
    """A MAF layer whose network also reads a context; ``condition(c)`` gives a MAFTransform.

    The returned transform shares this module's network (no copy) and holds the context.

    Args:
        autoregressive_nn: A conditional :class:`~madeflow.MADE` (``context_dim > 0``,
            ``param_dims=(1, 1)``) or Pyro's ``ConditionalAutoRegressiveNN``.
        **kwargs: Passed to :class:`MAFTransform` (the clamps).

    Example:
        >>> from madeflow import MADE
        >>> t = ConditionalMAFTransform(MADE(3, [16], context_dim=2)).condition(torch.randn(2))
        >>> tuple(t.inv(torch.randn(4, 3)).shape)
        (4, 3)
    """

    transform_class = MAFTransform


class ConditionalIAFTransform(ConditionalAutoregressive):
    """An IAF layer whose network also reads a context; ``condition(c)`` gives an IAFTransform.

    The returned transform shares this module's network (no copy) and holds the context.

    Args:
        autoregressive_nn: A conditional :class:`~madeflow.MADE` (``context_dim > 0``,
            ``param_dims=(1, 1)``) or Pyro's ``ConditionalAutoRegressiveNN``.
        **kwargs: Passed to :class:`IAFTransform` (``stable``, clamps, ``sigmoid_bias``).

    Example:
        >>> from madeflow import MADE
        >>> t = ConditionalIAFTransform(MADE(3, [16], context_dim=2)).condition(torch.randn(2))
        >>> tuple(t(torch.randn(4, 3)).shape)
        (4, 3)
    """

    transform_class = IAFTransform
