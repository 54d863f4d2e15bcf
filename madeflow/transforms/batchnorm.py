r"""Batch normalization as a bijection, as used between the layers of a MAF."""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn

__all__ = ["BatchNormTransform"]


class BatchNormTransform(TransformModule):
    r"""Batch normalization from the MAF paper, as a transform from noise ``u`` to data ``x``.

    In the density direction (data ``x`` to noise ``u``):

    .. math::
        u = \frac{x - \mu}{\sqrt{v + \epsilon}}\, e^{\gamma} + \beta, \qquad
        \log\Big|\det\frac{\partial x}{\partial u}\Big| =
        \sum_d \Big(\tfrac12 \log(v_d + \epsilon) - \gamma_d\Big),

    with learned ``log_gamma`` (:math:`\gamma`) and ``beta``. In training mode :math:`\mu, v` are
    the statistics of the batch being scored (over every batch dimension; at least two rows) and
    the running averages are updated with ``momentum``; in eval mode they are the running
    averages, so the map is a fixed affine bijection and its inverse is exact.

    The log-det is exact in both modes for the map actually applied (in training mode the batch
    statistics count as constants per row, as in the paper). Sampling (``u -> x``) always uses the
    running averages: put the module in eval mode to sample from, or score, a trained flow.

    Args:
        input_dim: ``D``.
        momentum: Weight of the newest batch in the running averages.
        eps: Added to the variance.

    Example:
        >>> bn = BatchNormTransform(3).eval()
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(bn(bn.inv(x)), x)
        True

    References:
        Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation.
        NeurIPS 2017, section 3.4.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, input_dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(cache_size=0)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.input_dim = input_dim
        self.momentum = momentum
        self.eps = eps
        self.log_gamma = nn.Parameter(torch.zeros(input_dim))
        self.beta = nn.Parameter(torch.zeros(input_dim))
        self.register_buffer("running_mean", torch.zeros(input_dim))
        self.register_buffer("running_var", torch.ones(input_dim))

    def _statistics(self, x: torch.Tensor, update: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, var)``: of the batch ``x`` in training mode, else the running ones."""
        if not self.training:
            return self.running_mean, self.running_var
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] < 2:
            raise ValueError(
                f"BatchNormTransform in training mode needs a batch of at least 2 rows, got "
                f"{rows.shape[0]}: train on batches of 2 or more rows (or, to score with the "
                "running averages instead, call .eval())"
            )
        mean, var = rows.mean(0), rows.var(0, unbiased=False)
        if update:
            with torch.no_grad():
                unbiased = var * rows.shape[0] / (rows.shape[0] - 1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        return mean, var

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        """Sampling direction ``u -> x`` with the running averages.

        Args:
            u: ``(*batch, D)``.

        Returns:
            ``(*batch, D)``.
        """
        std = torch.sqrt(self.running_var + self.eps)
        return (u - self.beta) * torch.exp(-self.log_gamma) * std + self.running_mean

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Density direction ``x -> u`` (updates the running averages in training mode).

        Args:
            x: ``(*batch, D)``.

        Returns:
            ``(*batch, D)``.
        """
        mean, var = self._statistics(x, update=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * torch.exp(self.log_gamma) + self.beta

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log |det d y / d x|`` of the sampling map, with the statistics of ``y``'s mode.

        Args:
            x: Noise, ``(*batch, D)``.
            y: Data, ``(*batch, D)``.

        Returns:
            ``(*batch,)``.
        """
        _, var = self._statistics(y, update=False)
        per_dim = 0.5 * torch.log(var + self.eps) - self.log_gamma
        return per_dim.sum(-1).expand(y.shape[:-1])
