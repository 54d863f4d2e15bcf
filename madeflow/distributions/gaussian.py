r"""MADE with Gaussian conditionals (the MAF paper's "MADE" baseline, a one-layer MAF)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import Distribution, Normal

from madeflow.distributions.made import MADEDensity, soft_clamp
from madeflow.nn.made import Params

__all__ = ["GaussianMADE"]


class GaussianMADE(MADEDensity):
    r"""Autoregressive density over :math:`\mathbb{R}^D` with Gaussian conditionals.

    .. math:: p(x_d \mid x_{<d}) = \mathcal{N}(x_d; \mu_d, e^{2 s_d}), \qquad
       s_d = b \tanh(\tilde s_d / b), \quad (\mu, \tilde s) = \mathrm{MADE}(x)

    The soft clamp keeps log-scales in ``(-b, b)`` (``b = log_scale_bound``, default 10, i.e.
    scales between about ``4.5e-5`` and ``2.2e4``), so data as large as ``1e6`` still give finite
    log-densities and gradients in float32. Sampling is ``x_d = \mu_d + e^{s_d} \varepsilon_d``
    with pre-drawn standard normals, solved by :func:`madeflow.solve.autoregressive_solve`;
    it is reparameterized (:meth:`rsample`).

    Integer ``x`` raises ``TypeError`` (a continuous density needs dequantized data).

    Args:
        input_dim: ``D``.
        hidden_dims: Hidden widths of the MADE.
        context_dim: Size of the conditioning vector (``0``: unconditional).
        log_scale_bound: ``b > 0``, the bound of the soft clamp on log-scales.
        **made_kwargs: Passed to :class:`madeflow.MADE`.

    Example:
        >>> est = GaussianMADE(3, [16])
        >>> x = est.rsample((5,))
        >>> tuple(est.log_prob(x).shape)
        (5,)

    References:
        Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation.
        NeurIPS 2017.
    """

    has_rsample = True

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        context_dim: int = 0,
        log_scale_bound: float = 10.0,
        **made_kwargs: Any,
    ) -> None:
        if not log_scale_bound > 0:
            raise ValueError(f"log_scale_bound must be > 0, got {log_scale_bound!r}")
        super().__init__(input_dim, hidden_dims, (1, 1), context_dim, **made_kwargs)
        self.log_scale_bound = float(log_scale_bound)

    def _loc_scale(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = params
        return loc, soft_clamp(log_scale, self.log_scale_bound).exp()

    def conditionals_from_params(self, params: Params) -> Distribution:
        """Normal conditionals.

        Args:
            params: ``(loc, raw_log_scale)``, each ``(*batch, n)``.

        Returns:
            ``Normal`` with batch shape ``(*batch, n)``.
        """
        loc, scale = self._loc_scale(params)
        return Normal(loc, scale, validate_args=False)

    def step(self, params: Params, noise: torch.Tensor) -> torch.Tensor:
        """``x = loc + scale * eps``.

        Args:
            params: ``(loc, raw_log_scale)``, each ``(*batch, n)``.
            noise: Standard normals ``(*batch, n)``.

        Returns:
            ``(*batch, n)``.
        """
        loc, scale = self._loc_scale(params)
        return loc + scale * noise

    def draw_noise(self, shape: torch.Size) -> torch.Tensor:
        """Standard normals.

        Args:
            shape: ``(*batch, D)``.

        Returns:
            ``shape`` normals on the module's device and dtype.
        """
        ref = self._reference()
        return torch.randn(shape, dtype=ref.dtype, device=ref.device)
