r"""Masked Autoregressive Flow layer: one pass to score data, a sequential solve to sample."""

from __future__ import annotations

from typing import Callable

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule

from madeflow.nn.made import Params
from madeflow.transforms._autoregressive import (
    ConditionalAutoregressive,
    TransientCache,
    call_conditioner,
    check_network,
    clamp_log_scale,
    solve,
)

__all__ = ["ConditionalMAFTransform", "MAFTransform"]


class MAFTransform(TransientCache, TransformModule):
    r"""A MAF layer as a Pyro transform from noise ``u`` to data ``x``.

    With ``(m, a) = made(x)`` (each output sees only earlier inputs in the MADE's ordering):

    .. math::
        u = (x - m(x)) \odot e^{-a(x)} \quad\text{(density: one pass)},\qquad
        x_d = u_d\, e^{a_d(x_{<d})} + m_d(x_{<d}) \quad\text{(sampling: sequential)}.

    Pseudo-code and cost::

        _inverse(x):  m, a = made(x); u = (x - m) * exp(-a)          # 1 pass
        _call(u):     autoregressive_solve(made, step, noise=u)      # the fast engine
        log_abs_det_jacobian(u, x) = sum(a(x), -1)                   # log|dx/du|, 1 pass or cached

    ``a`` is clamped to ``[log_scale_min_clip, log_scale_max_clip]`` in value, with the gradient
    passed through (Pyro's convention); the defaults ``(-5, 3)`` bound each layer's scale to
    ``[0.0067, 20]``, which keeps sampling stable early in training. Both directions and the
    log-det use the same clamped value, so the transform stays an exact bijection.

    Args:
        autoregressive_nn: A :class:`~madeflow.MADE` with ``param_dims=(1, 1)`` (fast sampling),
            or any conditioner returning ``(mean, log_scale)`` like Pyro's ``AutoRegressiveNN``
            (sampling then runs a plain ``D``-pass loop).
        log_scale_min_clip: Lower clamp of ``a`` (``None``: none).
        log_scale_max_clip: Upper clamp of ``a`` (``None``: none).
        context: Fixed context passed to the network, ``(*batch, context_dim)``; set by
            :meth:`ConditionalMAFTransform.condition`.

    Example:
        >>> import pyro.distributions as dist
        >>> from madeflow import MADE
        >>> t = MAFTransform(MADE(3, [16]))
        >>> base = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
        >>> flow = dist.TransformedDistribution(base, [t])
        >>> tuple(flow.log_prob(torch.randn(5, 3)).shape)
        (5,)

    References:
        Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation.
        NeurIPS 2017.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1
    autoregressive = True

    def __init__(
        self,
        autoregressive_nn: Callable[..., Params],
        log_scale_min_clip: float | None = -5.0,
        log_scale_max_clip: float | None = 3.0,
        context: torch.Tensor | None = None,
    ) -> None:
        # No torch cache: scoring is one pass anyway, and a cache keyed on tensor identity would
        # hand back stale results when the same data tensor is scored after an optimizer step.
        super().__init__(cache_size=0)
        check_network(autoregressive_nn, context, "MAFTransform")
        self.nn = autoregressive_nn
        self.log_scale_min_clip = log_scale_min_clip
        self.log_scale_max_clip = log_scale_max_clip
        self.context = context
        # (u, x, log_scale) of the last density pass, used once by the log_abs_det_jacobian call
        # that follows it in TransformedDistribution.log_prob.
        self._cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = call_conditioner(self.nn, x, self.context)
        return mean, clamp_log_scale(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)

    def _step(self, params: Params, noise: torch.Tensor) -> torch.Tensor:
        mean, log_scale = params
        log_scale = clamp_log_scale(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
        return noise * torch.exp(log_scale) + mean

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        """Sample direction ``u -> x``: the sequential solve.

        Args:
            u: Noise, ``(*batch, D)``.

        Returns:
            Data, ``(*batch, D)``.
        """
        return solve(self.nn, self._step, u, self.context)

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Density direction ``x -> u``: one network pass.

        Args:
            x: Data, ``(*batch, D)``.

        Returns:
            Noise, ``(*batch, D)``.
        """
        mean, log_scale = self._params(x)
        u = (x - mean) * torch.exp(-log_scale)
        self._cached = (u, x, log_scale)
        return u

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log |det d y / d x|`` of the sampling map, ``sum_d a_d(y)``.

        Args:
            x: Noise ``u``, ``(*batch, D)``.
            y: Data ``x``, ``(*batch, D)``.

        Returns:
            ``(*batch,)``.
        """
        cached, self._cached = self._cached, None
        if cached is not None and cached[0] is x and cached[1] is y:
            log_scale = cached[2]
        else:
            log_scale = self._params(y)[1]
        return log_scale.sum(-1)


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
