r"""Inverse Autoregressive Flow layer: one pass to sample and score its own samples."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule

from madeflow.modes import is_eager
from madeflow.nn.made import Params
from madeflow.transforms._autoregressive import (
    ConditionalAutoregressive,
    TransientCache,
    call_conditioner,
    check_network,
    clamp_log_scale,
    solve,
)

__all__ = ["ConditionalIAFTransform", "IAFTransform"]


class IAFTransform(TransientCache, TransformModule):
    r"""An IAF layer as a Pyro transform from noise ``u`` to ``x``.

    With ``(m, s) = made(u)`` (autoregressive in the MADE's ordering), the default update is

    .. math:: x = m(u) + e^{s(u)} \odot u, \qquad \log|\det J| = \textstyle\sum_d s_d(u),

    and ``stable=True`` gives the paper's gated update

    .. math::
        g = \sigma(s(u) + b), \quad x = g \odot u + (1 - g) \odot m(u), \quad
        \log|\det J| = \textstyle\sum_d \log g_d,

    where ``b = sigmoid_bias`` (default 2, so ``g`` starts near ``sigmoid(2) = 0.88`` and the layer
    starts near the identity, as the paper recommends).

    Pseudo-code and cost::

        _call(u):     m, s = made(u); x = ...; remember (u, x)         # 1 pass
        _inverse(x):  if x is the remembered x and made(u) still maps u to x:
                          return u                                     # 1 pass, log-det kept
                      autoregressive_solve(made, step, noise=x)      # sequential otherwise
        log_abs_det_jacobian(u, x): kept from _inverse, else 1 pass on u

    Scoring the transform's own samples costs one pass, never a sequential solve: the layer
    remembers the last ``(u, x)`` it produced and, when asked to invert that very ``x``, checks
    with one pass that the current weights still map ``u`` to ``x`` (the same pass gives the
    log-det). The check makes the shortcut safe against every change of the weights (optimizer
    steps, ``load_state_dict``, edits through ``.data``): a changed layer solves instead. Results
    of the sequential inverse are not kept, so scoring the same outside point twice (with a
    ``backward`` in between) builds a fresh graph each time.

    ``s`` is clamped in value to ``[log_scale_min_clip, log_scale_max_clip]`` (default
    ``(-5, 3)``), gradients passing through (Pyro's convention); the stable update needs no clamp.

    Args:
        autoregressive_nn: A :class:`~madeflow.MADE` with ``param_dims=(1, 1)`` or any
            conditioner returning ``(mean, log_scale)``.
        stable: Use the gated update.
        log_scale_min_clip: Lower clamp of ``s`` (``None``: none); unused when ``stable``.
        log_scale_max_clip: Upper clamp of ``s`` (``None``: none); unused when ``stable``.
        sigmoid_bias: The constant ``b`` added to ``s`` by the gated update.
        context: Fixed context, ``(*batch, context_dim)``; set by
            :meth:`ConditionalIAFTransform.condition`.

    Example:
        >>> import pyro.distributions as dist
        >>> from madeflow import MADE
        >>> t = IAFTransform(MADE(3, [16]))
        >>> base = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
        >>> q = dist.TransformedDistribution(base, [t])
        >>> z = q.rsample((5,))
        >>> tuple(q.log_prob(z).shape)
        (5,)

    References:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improving Variational Inference
        with Inverse Autoregressive Flow. NeurIPS 2016.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1
    autoregressive = True

    def __init__(
        self,
        autoregressive_nn: Callable[..., Params],
        stable: bool = False,
        log_scale_min_clip: float | None = -5.0,
        log_scale_max_clip: float | None = 3.0,
        sigmoid_bias: float = 2.0,
        context: torch.Tensor | None = None,
    ) -> None:
        super().__init__(cache_size=0)
        check_network(autoregressive_nn, context, "IAFTransform")
        self.nn = autoregressive_nn
        self.stable = stable
        self.log_scale_min_clip = log_scale_min_clip
        self.log_scale_max_clip = log_scale_max_clip
        self.sigmoid_bias = sigmoid_bias
        self.context = context
        # (u, x) of the last forward pass: the shortcut for inverting the layer's own samples.
        self._drawn: tuple[torch.Tensor, torch.Tensor] | None = None
        # (u, x, log|dx/du| per dim) of a verified shortcut, used once by log_abs_det_jacobian.
        self._cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    _transient = ("_cached", "_drawn")

    # --------------------------------------------------------------- the map
    def _gate(self, params: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(shift, scale, log_scale)`` such that ``x = shift + scale * u``."""
        mean, s = params
        if self.stable:
            # Bound the gate below like the log-scale of the plain form (a gate that underflows
            # to 0 makes the layer non-invertible and its inverse divide by zero).
            logit = clamp_log_scale(s + self.sigmoid_bias, self.log_scale_min_clip, None)
            gate = torch.sigmoid(logit)
            # log(sigmoid(t)) = -softplus(-t); F.logsigmoid is ~10 ms per call on CPU in torch 2.13.
            return (1 - gate) * mean, gate, -F.softplus(-logit)
        log_scale = clamp_log_scale(s, self.log_scale_min_clip, self.log_scale_max_clip)
        return mean, torch.exp(log_scale), log_scale

    def _step(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        shift, scale, _ = self._gate(params)
        return (x - shift) / scale

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        """Sample direction ``u -> x``: one pass.

        Args:
            u: ``(*batch, D)``.

        Returns:
            ``(*batch, D)``.
        """
        shift, scale, _ = self._gate(call_conditioner(self.nn, u, self.context))
        x = shift + scale * u
        self._drawn = (u, x)
        return x

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse ``x -> u``: one checked pass for the layer's own last sample, else a solve.

        Args:
            x: ``(*batch, D)``.

        Returns:
            ``(*batch, D)``.
        """
        drawn = self._drawn
        # The check branches on data, which compile/trace/func cannot follow: they solve.
        if drawn is not None and drawn[1] is x and is_eager():
            u = drawn[0]
            shift, scale, log_scale = self._gate(call_conditioner(self.nn, u, self.context))
            if _reproduces(shift + scale * u, x):
                self._cached = (u, x, log_scale)
                return u
        return solve(self.nn, self._step, x, self.context)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log |det d y / d x|``, ``sum_d log scale_d(x)``.

        Args:
            x: The input ``u``, ``(*batch, D)``.
            y: The output, ``(*batch, D)``.

        Returns:
            ``(*batch,)``.
        """
        cached, self._cached = self._cached, None
        if cached is not None and cached[0] is x and cached[1] is y:
            log_scale = cached[2]
        else:
            log_scale = self._gate(call_conditioner(self.nn, x, self.context))[2]
        return log_scale.sum(-1)


def _reproduces(x_new: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether a recomputed sample equals the remembered one up to rounding."""
    if x_new.shape != x.shape:
        return False
    tol = 64 * torch.finfo(x.dtype).eps
    with torch.no_grad():
        return bool(((x_new - x).abs() <= tol * (1 + x.abs())).all())


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
