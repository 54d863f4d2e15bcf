"""MAF and IAF flows: density models whose ``forward(context)`` returns a Pyro distribution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch import nn

from madeflow.distributions import GaussianMixtureMADE
from madeflow.distributions.base import DensityModel
from madeflow.modes import validate_args
from madeflow.nn.stacks import made_stack
from madeflow.transforms.affine import AffineAutoregressive, IAFTransform, MAFTransform
from madeflow.transforms.batchnorm import BatchNormTransform
from madeflow.transforms.conditional import ConditionalIAFTransform, ConditionalMAFTransform
from madeflow.validation import check_int

__all__ = ["IAF", "MAF"]


class _Flow(DensityModel):
    """A stack of transforms on a base distribution, as a :class:`DensityModel`."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, input_dim: int, context_dim: int) -> None:
        super().__init__()
        self.input_dim = check_int(input_dim, "input_dim", minimum=1)
        self.context_dim = check_int(context_dim, "context_dim", minimum=0)
        # Buffers, so the base follows .to(device, dtype) and stays out of the parameters.
        self.register_buffer("loc", torch.zeros(input_dim))
        self.register_buffer("scale", torch.ones(input_dim))
        self.transforms = nn.ModuleList()
        self.base_density: nn.Module | None = None

    def model_dtype(self) -> torch.dtype:
        """The flow's dtype, read off the base's buffers (no module traversal: compile-safe)."""
        return self.loc.dtype

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        """Whether samples are reparameterized: through every layer, unless the base is not.

        A mixture base draws its component discretely, so a MAF-MoG has no ``rsample``.
        """
        return self.base_density is None or self.base_density.has_rsample

    def _base(self, context: torch.Tensor | None) -> dist.TorchDistribution:
        if self.base_density is not None:
            return self.base_density(context)
        base = dist.Normal(self.loc, self.scale, validate_args=validate_args()).to_event(1)
        return base if context is None else base.expand(context.shape[:-1])

    def forward(self, context: torch.Tensor | None = None) -> dist.TorchDistribution:
        """The flow as a Pyro distribution.

        Args:
            context: ``(*batch, context_dim)`` when conditional; the distribution then has batch
                shape ``batch``.

        Returns:
            A :class:`pyro.distributions.TransformedDistribution` with event shape ``(D,)``.
        """
        self.checked_context(context)
        transforms = [
            t.condition(context) if isinstance(t, ConditionalTransformModule) else t
            for t in self.transforms
        ]
        return dist.TransformedDistribution(
            self._base(context), transforms, validate_args=validate_args()
        )

    def score(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Log-density of checked points: the base's at the noise, minus each layer's log-det.

        What ``self(context).log_prob(x)`` computes, without building the distribution objects
        and without checking internal values as if they were data (a NaN arising inside the flow
        is reported by :meth:`log_prob` as a numerical failure).
        """
        log_det = x.new_zeros(())
        for t in reversed(self.transforms):
            if isinstance(t, ConditionalTransformModule):
                t = t.condition(context)
            u = t._inverse(x)
            log_det = log_det + t.log_abs_det_jacobian(u, x)
            x = u
        if self.base_density is not None:
            base = self.base_density.score(x, context)
        else:
            base = dist.Normal(self.loc, self.scale, validate_args=False).log_prob(x).sum(-1)
        return base - log_det

    def draw(self, sample_shape: torch.Size, context: torch.Tensor | None) -> torch.Tensor:
        """Samples through the layers (reparameterized where :attr:`has_rsample`)."""
        q = self(context)
        return q.rsample(sample_shape) if self.has_rsample else q.sample(sample_shape)

    def draw_and_score(
        self, sample_shape: torch.Size, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their log-density: each layer's log-det from its own sampling pass."""
        if self.base_density is not None:
            u, log_p = self.base_density.draw_and_score(sample_shape, context)
        else:
            base = self._base(context)
            u = base.rsample(sample_shape)
            log_p = base.log_prob(u)
        for t in self.transforms:
            if isinstance(t, ConditionalTransformModule):
                t = t.condition(context)
            if isinstance(t, AffineAutoregressive):
                x, log_det = t.call_and_log_det(u)
            else:
                x = t(u)
                log_det = t.log_abs_det_jacobian(u, x)
            log_p, u = log_p - log_det, x
        return u, log_p


class MAF(_Flow):
    r"""Masked Autoregressive Flow: a stack of MAF layers on a standard normal (or MoG) base.

    Scoring is one pass per layer; sampling solves each layer with the fast engine (about one
    pass), and :meth:`rsample` differentiates through it at about two more. The MADE
    ordering is reversed every other layer (as in the paper) unless ``permutation`` is given in
    ``made_kwargs``; with ``batch_norm=True`` a :class:`~madeflow.transforms.BatchNormTransform`
    sits between consecutive MAF layers.

    Args:
        input_dim: ``D``.
        num_transforms: Number of MAF layers.
        hidden_dims: MADE widths; default ``[3 * D + 1]`` (Pyro's default).
        context_dim: Size of the context (0: unconditional).
        base: ``"normal"`` (standard normal) or ``"mog"`` (MAF MoG: a MADE mixture of
            ``num_components`` Gaussians per conditional,
            :class:`madeflow.distributions.GaussianMixtureMADE`).
        batch_norm: Insert batch norm between layers.
        num_components: Mixture components of the ``"mog"`` base (10 in the MAF paper).
        **made_kwargs: Passed to every :class:`~madeflow.MADE` (``skip_connections``,
            ``residual``, ``hidden_degrees``, ``activation``, ``permutation``, ``seed``...).

    Example:
        >>> flow = MAF(3, num_transforms=2, hidden_dims=[16])
        >>> tuple(flow.log_prob(torch.randn(5, 3)).shape)
        (5,)
        >>> tuple(flow.sample((4,)).shape)
        (4, 3)

    References:
        Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation.
        NeurIPS 2017.
    """

    def __init__(
        self,
        input_dim: int,
        num_transforms: int = 5,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        base: str = "normal",
        batch_norm: bool = False,
        num_components: int = 10,
        **made_kwargs: Any,
    ) -> None:
        super().__init__(input_dim, context_dim)
        mades = made_stack(input_dim, num_transforms, hidden_dims, context_dim, **made_kwargs)
        layers: list[nn.Module] = []
        for i, made in enumerate(mades):
            if batch_norm and i > 0:
                layers.append(BatchNormTransform(input_dim))
            layers.append(ConditionalMAFTransform(made) if context_dim else MAFTransform(made))
        self.transforms = nn.ModuleList(layers)
        if base == "mog":
            self.base_density = GaussianMixtureMADE(
                input_dim,
                list(mades[0].hidden_dims),
                num_components=num_components,
                context_dim=context_dim,
            )
        elif base != "normal":
            raise ValueError(f"base must be 'normal' or 'mog', got {base!r}")


class IAF(_Flow):
    r"""Inverse Autoregressive Flow: a stack of IAF layers on a standard normal base.

    Sampling, :meth:`rsample` (reparameterized: differentiable in the parameters) and scoring
    the flow's own samples cost one pass per layer;
    scoring an outside point solves each layer with the fast engine. Orderings are reversed
    every other layer unless ``permutation`` is given in ``made_kwargs``.

    Args:
        input_dim: ``D``.
        num_transforms: Number of IAF layers.
        hidden_dims: MADE widths; default ``[3 * D + 1]`` (Pyro's default).
        context_dim: Size of the context (0: unconditional).
        stable: Use the gated update of :class:`~madeflow.transforms.IAFTransform`.
        **made_kwargs: Passed to every :class:`~madeflow.MADE`.

    Example:
        >>> flow = IAF(3, num_transforms=2, hidden_dims=[16])
        >>> q = flow()
        >>> z = q.rsample((4,))
        >>> tuple(q.log_prob(z).shape)
        (4,)

    References:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improving Variational Inference
        with Inverse Autoregressive Flow. NeurIPS 2016.
    """

    def __init__(
        self,
        input_dim: int,
        num_transforms: int = 5,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        stable: bool = False,
        **made_kwargs: Any,
    ) -> None:
        super().__init__(input_dim, context_dim)
        mades = made_stack(input_dim, num_transforms, hidden_dims, context_dim, **made_kwargs)
        self.transforms = nn.ModuleList(
            ConditionalIAFTransform(m, stable=stable)
            if context_dim
            else IAFTransform(m, stable=stable)
            for m in mades
        )
