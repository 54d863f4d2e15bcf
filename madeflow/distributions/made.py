r"""The shared machinery of the MADE density estimators.

A MADE density estimator factorizes a density autoregressively,

.. math:: \log p(x \mid c) = \sum_d \log p(x_d \mid \theta_d(x_{<d}, c)),

with every conditional's parameters :math:`\theta_d` read off one pass of a :class:`madeflow.MADE`.
Subclasses only say which conditional family :math:`\theta_d` parametrizes
(:meth:`MADEDensity.conditionals`) and how to turn pre-drawn noise into a draw from it
(:meth:`MADEDensity.step`); scoring, sampling and mask ensembles live here, and the checks of
the density contract in :class:`madeflow.distributions.base.DensityModel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import Distribution, constraints

from madeflow.distributions.base import DensityModel
from madeflow.distributions.pyro import MADEDistribution
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


class MADEDensity(DensityModel):
    """Base class of the MADE density estimators (one MADE pass per density evaluation).

    Subclasses implement :meth:`conditionals_from_params` (the per-dimension distributions),
    :meth:`step` (one elementwise sampling step driven by pre-drawn noise) and
    :meth:`draw_noise`. Everything else is shared; the contract (checked ``log_prob``,
    ``sample``, ``rsample``, ``forward``) comes from
    :class:`~madeflow.distributions.base.DensityModel`.

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
        >>> from madeflow.distributions import BernoulliMADE
        >>> est = BernoulliMADE(3, [8], context_dim=2, num_masks=4, permutation="random")
        >>> context = torch.randn(5, 2)
        >>> x = est.sample((), context)
        >>> tuple(est.log_prob(x, context).shape), tuple(est.ensemble_log_prob(x, context).shape)
        ((5,), (5,))
    """

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
        return self.made.output_layer.weight

    def model_dtype(self) -> torch.dtype:
        """The dtype of the MADE's parameters."""
        return self._reference().dtype

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

    # -------------------------------------------------------------- density
    def conditionals(self, x: torch.Tensor, context: torch.Tensor | None = None) -> Distribution:
        """The distributions of ``x_d`` given ``x_<d`` (and the context), for every ``d``.

        Args:
            x: ``(*batch, D)``; only ``x_<d`` enters conditional ``d``.
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            A distribution with batch shape ``(*batch, D)``.
        """
        x = self.checked_points(x)
        self.checked_context(context)
        return self.conditionals_from_params(self.made(x, context))

    def score(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Exact log-density under the current mask, one network pass: ``(*batch,)``."""
        return self.conditionals_from_params(self.made(x, context)).log_prob(x).sum(-1)

    def ensemble_log_prob(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""Log of the density averaged over all ``num_masks`` masks.

        .. math:: \log \frac{1}{K} \sum_k p_k(x) = \operatorname{logsumexp}_k \log p_k(x) - \log K

        (an average of densities, hence a density; averaging logits would not be). The mask that
        was current before the call is restored. Costs ``K`` passes.

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

        Costs about one network pass (:func:`madeflow.solve.autoregressive_solve`).

        Args:
            noise: ``(*sample_shape, *batch, D)`` as made by :meth:`draw_noise`.
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            ``(*sample_shape, *batch, D)``.
        """
        self.checked_context(context)
        return autoregressive_solve(self.made, self.step, noise, context)

    def draw(self, sample_shape: torch.Size, context: torch.Tensor | None) -> torch.Tensor:
        """Samples ``(*sample_shape, *batch, D)``: pre-drawn noise through the solver."""
        return self.sample_from_noise(self._noise(sample_shape, context), context)

    def draw_and_score(
        self, sample_shape: torch.Size, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their log-density, the conditionals read off the solve's by-products."""
        noise = self._noise(sample_shape, context)
        x, params = autoregressive_solve(self.made, self.step, noise, context, return_params=True)
        return x, self.conditionals_from_params(params).log_prob(x).sum(-1)

    def _noise(self, sample_shape: torch.Size, context: torch.Tensor | None) -> torch.Tensor:
        batch = self.checked_context(context)
        return self.draw_noise(sample_shape + batch + torch.Size((self.input_dim,)))

    def forward(self, context: torch.Tensor | None = None) -> Distribution:
        """The density as a Pyro distribution, optionally conditioned on ``context``.

        Args:
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            A :class:`~madeflow.distributions.pyro.MADEDistribution` with batch shape ``batch``
            and event shape ``(D,)``.
        """
        return MADEDistribution(self, context)
