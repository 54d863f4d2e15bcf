r"""MADE for binary vectors: every conditional is a Bernoulli (the MADE paper's model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import Bernoulli, Distribution, constraints

from madeflow.distributions.made import MADEDensity
from madeflow.modes import is_eager
from madeflow.nn.made import Params

__all__ = ["BernoulliMADE"]


class BernoulliMADE(MADEDensity):
    r"""Autoregressive density over :math:`\{0, 1\}^D` with Bernoulli conditionals.

    .. math:: \log p(x) = \sum_d x_d \log \sigma(\ell_d) + (1 - x_d) \log \sigma(-\ell_d),
       \qquad \ell = \mathrm{MADE}(x)

    The MADE outputs one logit per dimension (``param_dims=(1,)``). Scoring costs one pass;
    sampling draws uniforms ``u`` and sets ``x_d = [u_d < \sigma(\ell_d)]`` through
    :func:`madeflow.solve.autoregressive_solve`.

    Integer or boolean ``x`` is converted to the module's dtype (binary data are naturally stored
    that way); any value other than 0 or 1 raises ``ValueError``.

    Args:
        input_dim: ``D``.
        hidden_dims: Hidden widths of the MADE.
        context_dim: Size of the conditioning vector (``0``: unconditional).
        **made_kwargs: Passed to :class:`madeflow.MADE` (``permutation``, ``skip_connections``,
            ``hidden_degrees``, ``activation``, ``residual``, ``num_masks``, ``seed``).

    Example:
        >>> est = BernoulliMADE(4, [16])
        >>> x = est.sample((3,))
        >>> tuple(x.shape), tuple(est.log_prob(x).shape)
        ((3, 4), (3,))

    References:
        Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution Estimation.
        ICML 2015.
    """

    support = constraints.independent(constraints.boolean, 1)

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        context_dim: int = 0,
        **made_kwargs: Any,
    ) -> None:
        super().__init__(input_dim, hidden_dims, (1,), context_dim, **made_kwargs)

    continuous = False

    def checked_points(self, x: torch.Tensor) -> torch.Tensor:
        """Check points as every model does, then require every finite entry to be 0 or 1.

        Args:
            x: ``(*batch, D)``, any numeric or boolean dtype.

        Returns:
            ``x`` in the model's dtype.

        Raises:
            ValueError: If an entry is neither 0 nor 1 (NaN/Inf rows get their own message).
        """
        x = super().checked_points(x)
        if is_eager():
            bad = ~((x == 0) | (x == 1)) & torch.isfinite(x)
            if bool(bad.any()):
                values = torch.unique(x[bad])[:5].tolist()
                raise ValueError(
                    f"BernoulliMADE needs binary x (0 or 1); got values such as {values}"
                )
        return x

    def conditionals_from_params(self, params: Params) -> Distribution:
        """Bernoulli conditionals with the MADE's logits.

        Args:
            params: Logits ``(*batch, n)``.

        Returns:
            ``Bernoulli`` with batch shape ``(*batch, n)``.
        """
        return Bernoulli(logits=params, validate_args=False)

    def step(self, params: Params, noise: torch.Tensor) -> torch.Tensor:
        """``x = [u < sigmoid(logit)]``.

        Args:
            params: Logits ``(*batch, n)``.
            noise: Uniforms ``(*batch, n)``.

        Returns:
            ``(*batch, n)`` zeros and ones in the noise's dtype.
        """
        return (noise < torch.sigmoid(params)).to(noise.dtype)

    def draw_noise(self, shape: torch.Size) -> torch.Tensor:
        """Uniforms on ``[0, 1)``.

        Args:
            shape: ``(*batch, D)``.

        Returns:
            ``shape`` uniforms on the module's device and dtype.
        """
        ref = self._reference()
        return torch.rand(shape, dtype=ref.dtype, device=ref.device)
