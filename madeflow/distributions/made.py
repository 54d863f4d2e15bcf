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

from madeflow.distributions import conditionals
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

    # ------------------------------------------------ marginals and conditionals
    def covering_masks(self, observed: torch.Tensor) -> list[int]:
        """The masks that can condition exactly on ``observed``: their ordering starts with it.

        Args:
            observed: ``(D,)`` bool, ``True`` for the inputs to condition on.

        Returns:
            Mask indices, ascending.

        Raises:
            ValueError: If no mask's ordering starts with the observed inputs; the message names
                them and says which orderings would work and how to train them.

        Example:
            >>> from madeflow.distributions import GaussianMADE
            >>> est = GaussianMADE(3, [8], permutation=[[0, 1, 2], [2, 1, 0]])
            >>> est.covering_masks(torch.tensor([False, False, True]))
            [1]
        """
        return conditionals.covering(self, observed)

    def marginal_log_prob(
        self,
        x: torch.Tensor,
        observed: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""Exact log-density of the observed entries, :math:`\log p_O(x_O)`.

        Under a mask whose ordering starts with the observed inputs :math:`O`, the first
        :math:`|O|` conditionals multiply to the marginal. With several such masks :math:`C_O`,
        the result is the log of the mean of their marginals, the marginal of their equal-weight
        mixture :math:`p_O = \frac{1}{|C_O|} \sum_{k \in C_O} p_k`
        (:mod:`madeflow.distributions.conditionals`). For all inputs observed it equals
        :meth:`ensemble_log_prob` (:meth:`log_prob` with one mask); for none it is 0.

        Cost: one network pass per covering mask. Differentiable in the parameters, ``x`` and
        ``context``.

        Args:
            x: ``(*batch, D)``; entries outside ``observed`` are ignored and may be NaN.
            observed: ``(D,)`` bool, ``True`` for the observed inputs.
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            ``(*batch,)`` (the broadcast batch shape of ``x`` and ``context``).

        Raises:
            ValueError: If no mask's ordering starts with the observed inputs (the message says
                which orderings would work), on NaN/Inf observed entries (rows named), or on
                the inputs :meth:`log_prob` refuses.
            TypeError: If ``observed`` is not a boolean tensor, or as :meth:`log_prob`.
            NumericalError: If the model's values overflow on these finite entries, as
                :meth:`log_prob`.

        Example:
            >>> from madeflow.distributions import GaussianMADE
            >>> est = GaussianMADE(3, [8])
            >>> x = torch.tensor([[0.5, float("nan"), float("nan")]])
            >>> est.marginal_log_prob(x, torch.tensor([True, False, False])).shape
            torch.Size([1])
        """
        return conditionals.marginal_log_prob(self, x, observed, context)

    def conditional_log_prob(
        self,
        x: torch.Tensor,
        observed: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""Exact log-density of the unobserved entries given the observed ones.

        .. math:: \log p_O(x_{\bar O} \mid x_O) = \log p_O(x) - \log p_O(x_O),

        for the mixture :math:`p_O` of the masks whose ordering starts with :math:`O` (one
        mask: that mask's density). Both terms come from the same pass per covering mask.
        Differentiable.

        Args:
            x: ``(*batch, D)``, every entry given (finite).
            observed: ``(D,)`` bool, ``True`` for the inputs conditioned on.
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            ``(*batch,)``.

        Raises:
            ValueError: As :meth:`marginal_log_prob`, and for NaN/Inf entries anywhere.
            TypeError: As :meth:`marginal_log_prob`.
            NumericalError: As :meth:`marginal_log_prob`.

        Example:
            >>> from madeflow.distributions import BernoulliMADE
            >>> est = BernoulliMADE(3, [8])
            >>> x = torch.tensor([1.0, 0.0, 1.0])
            >>> observed = torch.tensor([True, False, False])
            >>> lhs = est.conditional_log_prob(x, observed)
            >>> bool(torch.isclose(lhs, est.log_prob(x) - est.marginal_log_prob(x, observed)))
            True
        """
        return conditionals.conditional_log_prob(self, x, observed, context)

    def conditional_sample(
        self,
        x: torch.Tensor,
        observed: torch.Tensor,
        sample_shape: torch.Size | Sequence[int] = (),
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""Exact draws of the unobserved entries given the observed ones, without gradient.

        Under a mask whose ordering starts with the observed inputs :math:`O`, the draw is the
        sequential solve started after them (:func:`madeflow.solve.autoregressive_solve` with
        ``observed``), at the cost of about one network pass. With several covering masks each
        draw first picks a mask :math:`k` with probability :math:`w_k \propto p_k(x_O)` (one
        more pass per covering mask), which samples the conditional of their mixture exactly
        (:mod:`madeflow.distributions.conditionals`). With nothing observed this is plain
        sampling from the mask ensemble; with everything observed, copies of ``x``.

        Args:
            x: ``(*batch, D)``; entries outside ``observed`` are ignored and may be NaN.
            observed: ``(D,)`` bool, ``True`` for the inputs to condition on.
            sample_shape: Leading shape of the draw.
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            ``(*sample_shape, *batch, D)``; its observed entries equal ``x``'s (in the model's
            dtype).

        Raises:
            ValueError: As :meth:`marginal_log_prob`.
            TypeError: As :meth:`marginal_log_prob`.

        Example:
            >>> from madeflow.distributions import GaussianMADE
            >>> est = GaussianMADE(3, [8])
            >>> x = torch.tensor([0.5, float("nan"), float("nan")])
            >>> draws = est.conditional_sample(x, torch.tensor([True, False, False]), (4,))
            >>> tuple(draws.shape), draws[:, 0].tolist()
            ((4, 3), [0.5, 0.5, 0.5, 0.5])
        """
        return conditionals.conditional_sample(self, x, observed, torch.Size(sample_shape), context)

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
