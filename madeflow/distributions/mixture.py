r"""MADE with mixture-of-Gaussians conditionals (MADE MoG of the MAF paper)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import Categorical, Distribution, MixtureSameFamily, Normal

from madeflow.distributions.made import MADEDensity, soft_clamp
from madeflow.nn.made import Params

__all__ = ["GaussianMixtureMADE"]


class GaussianMixtureMADE(MADEDensity):
    r"""Autoregressive density whose conditionals are mixtures of ``K`` Gaussians.

    .. math:: p(x_d \mid x_{<d}) = \sum_{k=1}^K \pi_{dk}\,
       \mathcal{N}(x_d; \mu_{dk}, e^{2 s_{dk}}), \qquad \pi_d = \operatorname{softmax}(\alpha_d)

    The MADE has ``param_dims=(K, K, K)``: per dimension ``K`` means, ``K`` raw log-scales and
    ``K`` mixing logits. Log-scales are soft-clamped to ``(-b, b)`` as in
    :class:`~madeflow.distributions.GaussianMADE`; the mixture's log-density uses
    ``MixtureSameFamily`` (a stable log-sum-exp).

    Sampling uses one uniform ``u_d`` per dimension, exactly: the component is the inverse CDF of
    the mixing weights at ``u_d`` (``k`` with ``F_{k-1} <= u_d < F_k``), and the rescaled remainder
    ``v = (u_d - F_{k-1}) / \pi_{dk}``, which given ``k`` is again ``U(0, 1)``, gives the normal
    ``\Phi^{-1}(v)``. So the sample is a deterministic function of the noise, as
    :func:`madeflow.solve.autoregressive_solve` requires. The remainder has fewer random bits
    than ``u`` (about ``log2(1/\pi_{dk})`` fewer), which in float32 truncates the normal's tails at
    roughly 5 standard deviations; float64 is exact for all practical purposes.

    Integer ``x`` raises ``TypeError`` (a continuous density needs dequantized data).

    Args:
        input_dim: ``D``.
        hidden_dims: Hidden widths of the MADE.
        num_components: ``K >= 1``.
        context_dim: Size of the conditioning vector (``0``: unconditional).
        log_scale_bound: ``b > 0``, the bound of the soft clamp on log-scales.
        **made_kwargs: Passed to :class:`madeflow.MADE`.

    Example:
        >>> est = GaussianMixtureMADE(3, [16], num_components=4)
        >>> x = est.sample((5,))
        >>> tuple(est.log_prob(x).shape)
        (5,)

    References:
        Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation.
        NeurIPS 2017.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        num_components: int = 10,
        context_dim: int = 0,
        log_scale_bound: float = 10.0,
        **made_kwargs: Any,
    ) -> None:
        if (
            isinstance(num_components, bool)
            or not isinstance(num_components, int)
            or num_components < 1
        ):
            raise ValueError(f"num_components must be an integer >= 1, got {num_components!r}")
        if not log_scale_bound > 0:
            raise ValueError(f"log_scale_bound must be > 0, got {log_scale_bound!r}")
        k = num_components
        super().__init__(input_dim, hidden_dims, (k, k, k), context_dim, **made_kwargs)
        self.num_components = k
        self.log_scale_bound = float(log_scale_bound)

    def _components(self, params: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loc, scale, logits)``, each ``(*batch, n, K)``."""
        if self.num_components == 1:  # MADE returns (*batch, n) tensors when all param dims are 1
            params = tuple(p.unsqueeze(-2) for p in params)
        loc, log_scale, logits = (p.transpose(-1, -2) for p in params)
        return loc, soft_clamp(log_scale, self.log_scale_bound).exp(), logits

    def conditionals_from_params(self, params: Params) -> Distribution:
        """Mixture-of-Gaussians conditionals.

        Args:
            params: ``(loc, raw_log_scale, logits)``, each ``(*batch, K, n)``.

        Returns:
            ``MixtureSameFamily`` with batch shape ``(*batch, n)``.
        """
        loc, scale, logits = self._components(params)
        return MixtureSameFamily(
            Categorical(logits=logits, validate_args=False),
            Normal(loc, scale, validate_args=False),
            validate_args=False,
        )

    def step(self, params: Params, noise: torch.Tensor) -> torch.Tensor:
        """Component by inverse CDF of ``u``, then a normal from the remainder of ``u``.

        Args:
            params: ``(loc, raw_log_scale, logits)``, each ``(*batch, K, n)``.
            noise: Uniforms ``(*batch, n)``.

        Returns:
            ``(*batch, n)``, in the noise's dtype. Half-precision noise is solved in float32
            (``ndtri`` has no half-precision kernel, and 10 bits cannot hold the remainder).
        """
        if noise.dtype in (torch.float16, torch.bfloat16):
            wide = tuple(p.float() for p in params)
            return self.step(wide, noise.float()).to(noise.dtype)
        loc, scale, logits = self._components(params)
        weights = torch.softmax(logits, -1)
        cdf = weights.cumsum(-1)
        u = noise.unsqueeze(-1)
        k = (cdf <= u).sum(-1, keepdim=True).clamp(max=self.num_components - 1)
        lower = (cdf - weights).gather(-1, k)
        tiny = torch.finfo(noise.dtype).tiny
        width = weights.gather(-1, k).clamp(min=tiny)
        eps = torch.finfo(noise.dtype).eps
        v = ((u - lower) / width).clamp(tiny, 1 - eps)
        z = torch.special.ndtri(v)
        return (loc.gather(-1, k) + scale.gather(-1, k) * z).squeeze(-1)

    def draw_noise(self, shape: torch.Size) -> torch.Tensor:
        """Uniforms on ``[0, 1)``.

        Args:
            shape: ``(*batch, D)``.

        Returns:
            ``shape`` uniforms on the module's device and dtype.
        """
        ref = self._reference()
        return torch.rand(shape, dtype=ref.dtype, device=ref.device)
