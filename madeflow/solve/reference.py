"""The reference solve: one full network pass per dimension, plain differentiable PyTorch.

It is the slow loop every fast path is tested against, the path taken when gradients are needed,
and the one that runs under ``torch.compile``, ``torch.jit`` and ``torch.func``: a loop of fixed
length whose indices are tensors, with no Python branch on tensor values. It also solves for any
conditioner with a ``get_permutation()`` (Pyro's ``AutoRegressiveNN``, say).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from madeflow.nn.made import MADE, Params

__all__ = ["Step", "naive_autoregressive_solve", "ordered_loop", "select_dims"]

Step = Callable[[Params, torch.Tensor], torch.Tensor]
"""``step(params, noise) -> x``, params and noise restricted to the same ``n`` dims."""


def select_dims(params: Params, index: torch.Tensor) -> Params:
    """Restrict a MADE's split output to the input dimensions ``index`` (on the last axis).

    Args:
        params: Its output, as returned by ``made(x)``.
        index: ``(n,)`` long tensor of input dimensions.

    Returns:
        The same structure as ``params`` with last dimension ``n``.
    """
    if isinstance(params, (tuple, list)):
        return tuple(p.index_select(-1, index) for p in params)
    return params.index_select(-1, index)


def naive_autoregressive_solve(
    made: MADE,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None = None,
    return_params: bool = False,
    observed: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Params]:
    """Reference solver: run the whole network once per dimension (``D`` passes).

    Plain differentiable PyTorch with a loop of fixed length and no Python branch on tensor
    values, so it also runs under ``torch.compile``, ``torch.jit.trace`` and ``torch.func``.

    Args:
        made: The conditioner.
        step: Elementwise map from (parameters, noise) of some dims to their values.
        noise: ``(*batch, D)`` noise (or target values) driving ``step``.
        context: Optional context, broadcastable against ``noise``'s batch shape.
        return_params: Also return ``made(x)`` at the solution (from the last pass, no extra one).
        observed: ``(D,)`` bool: dimensions set to ``noise``'s entries instead of solved for.

    Returns:
        ``x`` of shape ``(*batch, D)`` with ``x[..., d] = step(made(x)[..., d], noise[..., d])``,
        or ``(x, made(x))``.
    """
    order = made.get_permutation()
    return ordered_loop(made, order, step, noise, context, return_params, observed)


def ordered_loop(
    net: Callable[..., Params],
    order: torch.Tensor,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None,
    return_params: bool = False,
    observed: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Params]:
    """Solve the recursion for any conditioner, one full network pass per dimension.

    Args:
        net: ``net(x)`` or ``net(x, context)`` returning parameters as a MADE does.
        order: ``(D,)`` long: ``order[k]`` is the input that comes ``k``-th.
        step: Elementwise map from (parameters, noise) of some dims to their values.
        noise: ``(*batch, D)``.
        context: Optional context, broadcastable against ``noise``'s batch shape.
        return_params: Also return the network's output at the solution (that of the last pass:
            every dimension's parameters depend only on the dimensions before it, all final by
            then).
        observed: ``(D,)`` bool: these dimensions are not solved for but set to ``noise``'s
            entries (``step`` is not used for them).

    Returns:
        ``(*batch, D)``, or ``(x, params)``.
    """
    x = torch.zeros_like(noise)
    dims = torch.arange(noise.shape[-1], device=noise.device)
    order = torch.as_tensor(order).to(noise.device)
    for k in range(noise.shape[-1]):
        index = order[k : k + 1]  # a tensor, not a Python int: no data-dependent trace
        params = net(x) if context is None else net(x, context)
        driver = noise.index_select(-1, index)
        value = step(select_dims(params, index), driver)
        if observed is not None:
            value = torch.where(observed.index_select(0, index), driver, value)
        # Out of place, so the result stays differentiable (rsample through a MAF, say).
        x = torch.where(dims == index, value, x)
    return (x, params) if return_params else x
