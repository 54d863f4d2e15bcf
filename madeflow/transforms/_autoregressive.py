"""Shared machinery of the affine autoregressive transforms (MAF and IAF).

Private: the public classes live in :mod:`madeflow.transforms.maf` and
:mod:`madeflow.transforms.iaf`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule

from madeflow.nn.made import MADE, Params
from madeflow.solve import Step, autoregressive_solve, ordered_loop

__all__ = [
    "ConditionalAutoregressive",
    "TransientCache",
    "call_conditioner",
    "check_context",
    "check_network",
    "clamp_log_scale",
    "solve",
]


def clamp_log_scale(
    log_scale: torch.Tensor, min_clip: float | None, max_clip: float | None
) -> torch.Tensor:
    """Clamp the value of a log-scale but let its gradient pass (Pyro's convention).

    The forward value is ``clamp(log_scale, min_clip, max_clip)``; the gradient is that of the
    identity, so units pushed past a bound keep learning. ``None`` bounds disable clamping.

    Args:
        log_scale: ``(*batch, D)``.
        min_clip: Lower bound or ``None``.
        max_clip: Upper bound or ``None``.

    Returns:
        ``(*batch, D)``.
    """
    if min_clip is None and max_clip is None:
        return log_scale
    return log_scale + (log_scale.clamp(min_clip, max_clip) - log_scale).detach()


def call_conditioner(
    net: Callable[..., Params], x: torch.Tensor, context: torch.Tensor | None
) -> Params:
    """Run the conditioner with or without a context.

    Args:
        net: A MADE, an ``AutoRegressiveNN`` or any callable with the same outputs.
        x: ``(*batch, D)``.
        context: ``(*batch, C)`` or ``None``.

    Returns:
        What ``net`` returns.
    """
    return net(x) if context is None else net(x, context)


def solve(
    net: Callable[..., Params],
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None,
) -> torch.Tensor:
    """Solve ``x_d = step(theta_d(x_<d), noise_d)``: the sequential direction.

    A :class:`~madeflow.MADE` goes through :func:`madeflow.solve.autoregressive_solve` (the
    fast engine). Any other conditioner (e.g. Pyro's ``AutoRegressiveNN``) gets a plain loop of
    ``D`` network passes over its ``get_permutation()`` (or ``permutation``) order.

    Args:
        net: The conditioner.
        step: Elementwise ``step(params, noise) -> x`` on a subset of dims.
        noise: ``(*batch, D)``.
        context: ``(*batch, C)`` or ``None``.

    Returns:
        ``(*batch, D)``.
    """
    if isinstance(net, MADE):
        return autoregressive_solve(net, step, noise, context)
    get = getattr(net, "get_permutation", None)
    order = get() if get is not None else net.permutation
    return ordered_loop(net, order, step, noise, context)


def check_network(net: Any, context: torch.Tensor | None, owner: str) -> None:
    """Refuse a conditioner an affine transform cannot use.

    Args:
        net: The conditioner handed to ``owner``.
        context: The fixed context (set by ``.condition``) or ``None``.
        owner: The transform's class name, for messages (``"MAFTransform"``).

    Raises:
        ValueError: For a MADE whose ``param_dims`` is not ``(1, 1)`` (shift and log-scale), or
            a conditional network used without a context.
    """
    if isinstance(net, MADE) and tuple(net.param_dims) != (1, 1):
        raise ValueError(f"{owner} needs a MADE with param_dims=(1, 1), got {net.param_dims}")
    if context is None and getattr(net, "context_dim", 0):
        raise ValueError(
            f"the network is conditional (context_dim > 0): use Conditional{owner} and "
            ".condition(context)"
        )


def check_context(net: Any, context: Any, owner: str) -> torch.Tensor:
    """Validate a context passed to ``condition`` before it reaches the network.

    Args:
        net: The conditioner (its ``context_dim`` is checked when it has one).
        context: The context, ``(*batch, context_dim)``.
        owner: Class name used in error messages.

    Returns:
        The context.

    Raises:
        ValueError: If the context is missing or its last dimension is wrong.
    """
    if context is None:
        raise ValueError(f"{owner}.condition needs a context tensor, got None")
    if not isinstance(context, torch.Tensor):
        raise ValueError(f"{owner}: context must be a torch.Tensor, got {type(context).__name__}")
    context_dim = getattr(net, "context_dim", None)
    if context_dim is not None and (context.dim() == 0 or context.shape[-1] != context_dim):
        raise ValueError(
            f"{owner}: context must have last dimension context_dim={context_dim}, "
            f"got shape {tuple(context.shape)}"
        )
    return context


class TransientCache:
    """Mixin for transforms that keep tensors of their last call: never pickle or copy them.

    The kept tensors (``_cached``, and torch's ``_cached_x_y``) may be a whole batch with its
    autograd graph; ``pickle``, ``torch.save`` and ``copy.deepcopy`` of the module get ``None``
    in their place (a non-leaf tensor cannot even be deep-copied).
    """

    _transient: tuple[str, ...] = ("_cached",)

    def __getstate__(self) -> dict:
        """The module's state without the tensors of the last call."""
        state = super().__getstate__()  # type: ignore[misc]
        for name in self._transient:
            state[name] = None
        if "_cached_x_y" in state:
            state["_cached_x_y"] = (None, None)
        return state


class ConditionalAutoregressive(ConditionalTransformModule):
    """Shared body of the conditional MAF and IAF layers: hold a network, build on ``condition``.

    Subclasses set :attr:`transform_class`; ``condition(c)`` returns
    ``transform_class(nn, context=c, **kwargs)``, which shares this module's network.

    Args:
        autoregressive_nn: A conditional :class:`~madeflow.MADE` (``context_dim > 0``,
            ``param_dims=(1, 1)``) or Pyro's ``ConditionalAutoRegressiveNN``.
        **kwargs: Passed to :attr:`transform_class`.
    """

    transform_class: type
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, autoregressive_nn: Callable[..., Params], **kwargs: Any) -> None:
        super().__init__()
        self.nn = autoregressive_nn
        self.kwargs = kwargs

    def condition(self, context: torch.Tensor) -> Any:
        """Fix the context.

        Args:
            context: ``(*batch, context_dim)``.

        Returns:
            A :attr:`transform_class` instance sharing the network.

        Raises:
            ValueError: If ``context`` is missing or has the wrong last dimension.
        """
        check_context(self.nn, context, type(self).__name__)
        return self.transform_class(self.nn, context=context, **self.kwargs)
