r"""Solve a MADE's autoregressive recursion: the slow direction of MAF and IAF, and MADE sampling.

Every sequential computation in madeflow goes through :func:`autoregressive_solve`: MAF sampling,
IAF scoring of outside points, and sampling of the MADE density estimators. Each is a recursion

.. math:: x_d = g(\theta_d(x_{<d}), \varepsilon_d)

where :math:`\theta_d` are the MADE's parameters for dimension ``d`` and ``g`` is an elementwise
``step`` (an affine map for flows, a sampler driven by pre-drawn noise for density estimators).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from madeflow.engine import fast_autoregressive_solve
from madeflow.modes import is_eager
from madeflow.nn.made import MADE, Params

__all__ = [
    "Step",
    "autoregressive_solve",
    "naive_autoregressive_solve",
    "ordered_loop",
    "select_dims",
]

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
    made: MADE, step: Step, noise: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference solver: run the whole network once per dimension (``D`` passes).

    Plain differentiable PyTorch with a loop of fixed length and no Python branch on tensor
    values, so it also runs under ``torch.compile``, ``torch.jit.trace`` and ``torch.func``.

    Args:
        made: The conditioner.
        step: Elementwise map from (parameters, noise) of some dims to their values.
        noise: ``(*batch, D)`` noise (or target values) driving ``step``.
        context: Optional context, broadcastable against ``noise``'s batch shape.

    Returns:
        ``x`` of shape ``(*batch, D)`` with ``x[..., d] = step(made(x)[..., d], noise[..., d])``.
    """
    return ordered_loop(made, made.get_permutation(), step, noise, context)


def ordered_loop(
    net: Callable[..., Params],
    order: torch.Tensor,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None,
) -> torch.Tensor:
    """Solve the recursion for any conditioner, one full network pass per dimension.

    Args:
        net: ``net(x)`` or ``net(x, context)`` returning parameters as a MADE does.
        order: ``(D,)`` long: ``order[k]`` is the input that comes ``k``-th.
        step: Elementwise map from (parameters, noise) of some dims to their values.
        noise: ``(*batch, D)``.
        context: Optional context, broadcastable against ``noise``'s batch shape.

    Returns:
        ``(*batch, D)``.
    """
    x = torch.zeros_like(noise)
    dims = torch.arange(noise.shape[-1], device=noise.device)
    order = torch.as_tensor(order).to(noise.device)
    for k in range(noise.shape[-1]):
        index = order[k : k + 1]  # a tensor, not a Python int: no data-dependent trace
        params = net(x) if context is None else net(x, context)
        value = step(select_dims(params, index), noise.index_select(-1, index))
        # Out of place, so the result stays differentiable (rsample through a MAF, say).
        x = torch.where(dims == index, value, x)
    return x


def autoregressive_solve(
    made: MADE, step: Step, noise: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """Solve ``x_d = step(theta_d(x_<d), noise_d)`` in the MADE's ordering.

    Costs about one network pass (:func:`madeflow.engine.fast_autoregressive_solve` computes each
    hidden unit once) plus ``D`` calls of ``step``. When a gradient is needed (grad mode on and the
    MADE's parameters, ``noise`` or ``context`` require grad), and under ``torch.compile``,
    ``torch.jit`` or ``torch.func`` (:func:`madeflow.modes.is_eager`), it runs the differentiable
    :func:`naive_autoregressive_solve` (``D`` passes): wrap sampling in ``torch.no_grad()`` when
    no gradient is wanted.

    Args:
        made: The conditioner.
        step: Elementwise map from (parameters, noise) of some dims to their values. It must treat
            each dimension independently (it may be called with several dims at once).
        noise: ``(*batch, D)``.
        context: Optional context, broadcastable against ``noise``'s batch shape.

    Returns:
        ``(*batch, D)``.
    """
    # A subclass that changes forward() breaks the engine's assumptions: stay exact, go naive.
    fast = is_eager() and type(made).forward is MADE.forward
    if not fast or _needs_grad(made, noise, context):
        return naive_autoregressive_solve(made, step, noise, context)
    return fast_autoregressive_solve(made, step, noise, context)


def _needs_grad(made: MADE, noise: torch.Tensor, context: torch.Tensor | None) -> bool:
    if not torch.is_grad_enabled():
        return False
    if noise.requires_grad or (context is not None and context.requires_grad):
        return True
    return any(p.requires_grad for p in made.parameters())
