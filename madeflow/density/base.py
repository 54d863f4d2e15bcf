r"""The shared machinery of the MADE density estimators.

A MADE density estimator factorizes a density autoregressively,

.. math:: \log p(x \mid c) = \sum_d \log p(x_d \mid \theta_d(x_{<d}, c)),

with every conditional's parameters :math:`\theta_d` read off one pass of a :class:`madeflow.MADE`.
Subclasses only say which conditional family :math:`\theta_d` parametrizes
(:meth:`MADEDensity.conditionals`) and how to turn pre-drawn noise into a draw from it
(:meth:`MADEDensity.step`); scoring, sampling, mask ensembles, validation and the
:class:`~madeflow.density.distribution.MADEDistribution` wrapper live here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from madeflow.modes import is_eager
from madeflow.nn.made import MADE, Params
from madeflow.solve import autoregressive_solve

__all__ = ["MADEDensity", "soft_clamp"]


def soft_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    r"""Smoothly squash ``x`` into ``(-bound, bound)``: :math:`b \tanh(x / b)`.

    Near zero it is the identity (slope 1), so it does not disturb a network at initialisation, and
    its gradient never explodes (it vanishes far out instead).

    Args:
        x: Any shape.
        bound: ``b > 0``.

    Returns:
        Same shape as ``x``, entries in ``(-bound, bound)``.

    Example:
        >>> float(soft_clamp(torch.tensor(1e9), 5.0))
        5.0
    """
    return bound * torch.tanh(x / bound)


class MADEDensity(nn.Module):
    """Base class of the MADE density estimators (one MADE pass per density evaluation).

    Subclasses implement :meth:`conditionals_from_params` (the per-dimension distributions),
    :meth:`step` (one elementwise sampling step driven by pre-drawn noise) and
    :meth:`draw_noise`. Everything else is shared.

    Args:
        input_dim: ``D``.
        hidden_dims: Hidden widths of the MADE.
        param_dims: Parameters per dimension, as in :class:`madeflow.MADE`.
        context_dim: Size of the conditioning vector, ``0`` for an unconditional density.
        **made_kwargs: Passed to :class:`madeflow.MADE` (``permutation``, ``skip_connections``,
            ``hidden_degrees``, ``activation``, ``residual``, ``num_masks``, ``seed``).

    Attributes:
        made: The :class:`madeflow.MADE` conditioner.

    Example:
        >>> from madeflow.density import BernoulliMADE
        >>> est = BernoulliMADE(3, [8], context_dim=2, num_masks=4, permutation="random")
        >>> context = torch.randn(5, 2)
        >>> x = est.sample((), context)
        >>> tuple(est.log_prob(x, context).shape), tuple(est.ensemble_log_prob(x, context).shape)
        ((5,), (5,))
    """

    has_rsample: bool = False
    support: constraints.Constraint = constraints.independent(constraints.real, 1)

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int],
        context_dim: int = 0,
        **made_kwargs: Any,
    ) -> None:
        super().__init__()
        if "param_dims" in made_kwargs:
            raise TypeError(f"{type(self).__name__} fixes param_dims itself; do not pass it")
        self.made = MADE(
            input_dim, hidden_dims, param_dims=param_dims, context_dim=context_dim, **made_kwargs
        )

    # ------------------------------------------------------------- properties
    @property
    def input_dim(self) -> int:
        """``D``, the dimension of the modelled vector."""
        return self.made.input_dim

    @property
    def context_dim(self) -> int:
        """Size of the conditioning vector (``0`` when unconditional)."""
        return self.made.context_dim

    def _reference(self) -> torch.Tensor:
        return next(self.made.parameters())

    # -------------------------------------------------- subclass interface
    def conditionals_from_params(self, params: Params) -> Distribution:
        """Per-dimension conditionals from the MADE's output.

        Args:
            params: What ``self.made(x, context)`` returns, last dimension ``n``.

        Returns:
            A distribution with batch shape ``(*batch, n)`` and event shape ``()``.
        """
        raise NotImplementedError

    def step(self, params: Params, noise: torch.Tensor) -> torch.Tensor:
        """Turn pre-drawn noise into draws from the conditionals, elementwise over dims.

        Args:
            params: The MADE's output restricted to ``n`` dims (last dimension ``n``).
            noise: ``(*batch, n)`` noise as made by :meth:`draw_noise`.

        Returns:
            ``(*batch, n)`` values.
        """
        raise NotImplementedError

    def draw_noise(self, shape: torch.Size) -> torch.Tensor:
        """Draw the noise that drives :meth:`step`, on the module's device and dtype.

        Args:
            shape: ``(*batch, D)``.

        Returns:
            Noise of shape ``shape``.
        """
        raise NotImplementedError

    # --------------------------------------------------------------- checks
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        """Validate data to be scored and return it in the module's dtype."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"x must be a torch.Tensor, got {type(x).__name__}; convert it with "
                "torch.as_tensor(x)"
            )
        if x.dim() == 0 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"x must have last dimension input_dim={self.input_dim}, got shape {tuple(x.shape)}"
            )
        x = self._convert_dtype(x)
        if not is_eager():  # value checks need a branch on data (see madeflow.modes)
            return x
        finite = torch.isfinite(x).all(-1)
        if not bool(finite.all()):
            rows = torch.nonzero(~finite)[:5].tolist()
            shown = ", ".join(str(tuple(r)) for r in rows)
            count = int((~finite).sum())
            raise ValueError(
                f"x contains NaN or Inf in {count} row(s); first batch indices: {shown}"
            )
        return x

    def _convert_dtype(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous models refuse integer data (it would need dequantization first)."""
        if not x.dtype.is_floating_point:
            raise TypeError(
                f"{type(self).__name__} is a continuous density but x has dtype {x.dtype}; "
                "integer data need dequantization (e.g. x + torch.rand_like(x, dtype=...)) or an "
                "explicit conversion with x.to(dtype) before scoring"
            )
        return x.to(self._reference().dtype)

    def _check_context(self, context: torch.Tensor | None) -> torch.Size:
        """Validate a context and return its batch shape."""
        if context is not None and not isinstance(context, torch.Tensor):
            raise TypeError(
                f"context must be a torch.Tensor, got {type(context).__name__}; convert it with "
                "torch.as_tensor(context)"
            )
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"this {type(self).__name__} is conditional (context_dim={self.context_dim}): "
                    "pass context"
                )
            if context.dim() == 0 or context.shape[-1] != self.context_dim:
                raise ValueError(
                    f"context must have last dimension context_dim={self.context_dim}, "
                    f"got shape {tuple(context.shape)}"
                )
            _check_finite_context(context)
            return context.shape[:-1]
        if context is not None:
            raise ValueError(f"this {type(self).__name__} has context_dim=0 but got a context")
        return torch.Size()

    # -------------------------------------------------------------- density
    def conditionals(self, x: torch.Tensor, context: torch.Tensor | None = None) -> Distribution:
        """The distributions of ``x_d`` given ``x_<d`` (and the context), for every ``d``.

        Args:
            x: ``(*batch, D)``; only ``x_<d`` enters conditional ``d``.
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            A distribution with batch shape ``(*batch, D)``.
        """
        x = self._check_x(x)
        return self.conditionals_from_params(self.made(x, context))

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Exact, normalized log-density under the current mask (one network pass).

        Args:
            x: ``(*batch, D)``.
            context: ``(*batch, context_dim)`` (broadcastable against ``x``'s batch) when
                conditional, else ``None``.

        Returns:
            ``(*batch,)``.

        Raises:
            ValueError: On a wrong last dimension, NaN/Inf entries (the message names the rows),
                out-of-support values, or a missing/unexpected context.
        """
        x = self._check_x(x)
        batch = self._check_context(context)
        try:
            torch.broadcast_shapes(x.shape[:-1], batch)
        except RuntimeError:
            raise ValueError(
                f"context batch shape {tuple(batch)} does not match (broadcast with) x batch "
                f"shape {tuple(x.shape[:-1])}"
            ) from None
        return self.conditionals_from_params(self.made(x, context)).log_prob(x).sum(-1)

    def ensemble_log_prob(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""Log of the density averaged over all ``num_masks`` masks.

        .. math:: \log \frac{1}{K} \sum_k p_k(x) = \operatorname{logsumexp}_k \log p_k(x) - \log K

        (an average of densities, hence a density; averaging logits would not be). The mask that
        was current before the call is restored.

        Args:
            x: ``(*batch, D)``.
            context: As in :meth:`log_prob`.

        Returns:
            ``(*batch,)``.
        """
        made = self.made
        current = int(made.mask_index)
        try:
            terms = []
            for k in range(made.num_masks):
                made.set_mask(k)
                terms.append(self.log_prob(x, context))
        finally:
            made.set_mask(current)
        return torch.logsumexp(torch.stack(terms), 0) - math.log(made.num_masks)

    # ------------------------------------------------------------- sampling
    def sample_from_noise(
        self, noise: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Deterministic sample given pre-drawn noise, through the autoregressive solver.

        Args:
            noise: ``(*sample_shape, *batch, D)`` as made by :meth:`draw_noise`.
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            ``(*sample_shape, *batch, D)``.
        """
        self._check_context(context)
        return autoregressive_solve(self.made, self.step, noise, context)

    def _noise_for(
        self, sample_shape: torch.Size | Sequence[int], context: torch.Tensor | None
    ) -> torch.Tensor:
        batch = self._check_context(context)
        shape = torch.Size(sample_shape) + batch + torch.Size((self.input_dim,))
        return self.draw_noise(shape)

    def sample(
        self,
        sample_shape: torch.Size | Sequence[int] = (),
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw samples (no gradient), with ``D`` autoregressive steps via the solver.

        Args:
            sample_shape: Leading shape of the draw.
            context: ``(*batch, context_dim)`` when conditional, else ``None`` (batch ``()``).

        Returns:
            ``(*sample_shape, *batch, D)`` on the module's device and dtype.
        """
        with torch.no_grad():
            return self.sample_from_noise(self._noise_for(sample_shape, context), context)

    def rsample(
        self,
        sample_shape: torch.Size | Sequence[int] = (),
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reparameterized sample (only where :attr:`has_rsample`).

        Args:
            sample_shape: Leading shape of the draw.
            context: As in :meth:`sample`.

        Returns:
            ``(*sample_shape, *batch, D)``, differentiable in the parameters.
        """
        if not self.has_rsample:
            raise NotImplementedError(f"{type(self).__name__} has no reparameterized sampler")
        return self.sample_from_noise(self._noise_for(sample_shape, context), context)

    def forward(self, context: torch.Tensor | None = None) -> Distribution:
        """The density as a Pyro distribution, optionally conditioned on ``context``.

        Args:
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            A :class:`~madeflow.density.distribution.MADEDistribution` with batch shape ``batch``
            and event shape ``(D,)``.
        """
        from madeflow.density.distribution import MADEDistribution

        return MADEDistribution(self, context)


def _check_finite_context(context: torch.Tensor) -> None:
    """Refuse NaN/Inf contexts (they would silently give NaN densities), naming the rows."""
    if not is_eager():
        return
    bad = ~torch.isfinite(context).all(-1)
    if bool(bad.any()):
        rows = [tuple(r) for r in torch.nonzero(bad)[:5].tolist()]
        raise ValueError(f"context contains NaN or Inf in {int(bad.sum())} row(s): {rows}")
