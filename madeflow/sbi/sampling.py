"""Sampling with log-densities from a madeflow MAF or MADE density, one sequential pass each.

A MAF layer draws ``x_d = u_d e^{a_d} + m_d`` dimension by dimension, and its log-determinant is
``sum_d a_d``, the very log-scales the solve computes on the way; a MADE density draws each
``x_d`` from a conditional whose parameters the solve computes too. So the log-density of a
sample can be summed *during* the solve, instead of by a second (density-direction) pass over
the finished samples. The step functions below do that: every call of a step adds the log-scales
(or conditional log-densities) of the dimensions it fills to a running total, which is order-free.
If a layer is not a plain MAF layer over a :class:`madeflow.MADE`, or the solver did not call the
step exactly once per dimension, that layer falls back to the usual density pass, so the result
is always exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import madeflow

__all__ = ["sample_and_log_prob"]


def sample_and_log_prob(
    net: nn.Module, sample_shape: torch.Size, context: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw samples and their exact log-densities from a madeflow flow or MADE density.

    Without gradients (``torch.no_grad()``, or parameters that do not require them) the
    log-densities are summed during the sequential solve: no second network pass. When a
    gradient is wanted, the samples are drawn without one and scored by a differentiable
    density pass (one pass per layer), so the log-densities carry gradients in the parameters.

    Args:
        net: A :class:`madeflow.MAF` or a :class:`madeflow.MADEDensity` with ``context_dim > 0``.
        sample_shape: Leading sample shape.
        context: ``(*batch, context_dim)``.

    Returns:
        ``(*sample_shape, *batch, D)`` samples and ``(*sample_shape, *batch)`` log-densities.
    """
    sample_shape = torch.Size(sample_shape)
    wants_grad = torch.is_grad_enabled() and any(p.requires_grad for p in net.parameters())
    if not wants_grad:
        with torch.no_grad():
            if isinstance(net, madeflow.MAF):
                return _maf(net, sample_shape, context)
            if isinstance(net, madeflow.MADEDensity):
                return _made_density(net, sample_shape, context)
    samples = net.sample(sample_shape, context)
    return samples, net.log_prob(samples, context)


def _made_density(
    est: Any, sample_shape: torch.Size, context: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a MADE density and sum each conditional's log-density inside the solve."""
    batch = context.shape[:-1]
    noise = est.draw_noise(sample_shape + batch + torch.Size((est.input_dim,)))
    total = _Total()

    def step(params: Any, u: torch.Tensor) -> torch.Tensor:
        x = est.step(params, u)
        total.add(est.conditionals_from_params(params).log_prob(x), u.shape[-1])
        return x

    x = madeflow.autoregressive_solve(est.made, step, noise, context)
    if not total.complete(est.input_dim, x):
        return x, est.log_prob(x, context)
    return x, total.value(x)


def _maf(
    net: Any, sample_shape: torch.Size, context: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Push base noise through each layer, summing log-determinants inside the solves."""
    flow = net(context)  # a Pyro TransformedDistribution; checks the context
    base_density = getattr(net, "base_density", None)
    if isinstance(base_density, madeflow.MADEDensity):
        u, log_prob = _made_density(base_density, sample_shape, context)
    else:
        u = flow.base_dist.sample(sample_shape)
        log_prob = flow.base_dist.log_prob(u)
    for transform in flow.transforms:
        solved = _solve_maf_layer(transform, u)
        if solved is None:
            x = transform(u)
            log_det = transform.log_abs_det_jacobian(u, x)
        else:
            x, log_det = solved
        log_prob = log_prob - log_det
        u = x
    return u, log_prob


def _solve_maf_layer(transform: Any, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(x, log|dx/du|)`` of a MAF layer in one solve, or ``None`` if it is not a plain one."""
    if type(transform) is not madeflow.MAFTransform or not isinstance(transform.nn, madeflow.MADE):
        return None
    lo, hi = transform.log_scale_min_clip, transform.log_scale_max_clip
    clamp: Callable[[torch.Tensor], torch.Tensor] = (
        (lambda a: a) if lo is None and hi is None else (lambda a: a.clamp(lo, hi))
    )
    total = _Total()

    def step(params: Any, noise: torch.Tensor) -> torch.Tensor:
        mean, log_scale = params
        log_scale = clamp(log_scale)
        total.add(log_scale, noise.shape[-1])
        return noise * torch.exp(log_scale) + mean

    x = madeflow.autoregressive_solve(transform.nn, step, u, transform.context)
    if not total.complete(transform.nn.input_dim, x):
        return None
    return x, total.value(x)


class _Total:
    """A running sum over dimensions of per-dimension terms, and a count of the dims seen."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.dims = 0

    def add(self, terms: torch.Tensor, dims: int) -> None:
        part = terms.sum(-1)
        self.sum = part if self.sum is None else self.sum + part
        self.dims += dims

    def complete(self, input_dim: int, x: torch.Tensor) -> bool:
        """Whether every dimension was seen once and the total fits ``x``'s batch."""
        return (
            self.sum is not None
            and self.dims == input_dim
            and self.sum.numel() == x.shape[:-1].numel()
        )

    def value(self, x: torch.Tensor) -> torch.Tensor:
        assert self.sum is not None
        return self.sum.reshape(x.shape[:-1])
