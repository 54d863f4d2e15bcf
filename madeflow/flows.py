"""MAF and IAF flows: ``nn.Module``s whose ``forward(context)`` returns a Pyro distribution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch import nn

from madeflow.density import GaussianMixtureMADE
from madeflow.density.base import _check_finite_context
from madeflow.modes import is_eager, validate_args
from madeflow.nn.made import MADE
from madeflow.transforms.batchnorm import BatchNormTransform
from madeflow.transforms.iaf import ConditionalIAFTransform, IAFTransform
from madeflow.transforms.maf import ConditionalMAFTransform, MAFTransform

__all__ = ["IAF", "MAF"]


class _Flow(nn.Module):
    """Shared plumbing: base distribution, orderings, input checks, log_prob and sample."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, input_dim: int, context_dim: int) -> None:
        super().__init__()
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}")
        self.input_dim = input_dim
        self.context_dim = context_dim
        # Buffers, so the base follows .to(device, dtype) and stays out of the parameters.
        self.register_buffer("loc", torch.zeros(input_dim))
        self.register_buffer("scale", torch.ones(input_dim))
        self.transforms = nn.ModuleList()
        self.base_density: nn.Module | None = None

    @staticmethod
    def _mades(
        input_dim: int,
        num_transforms: int,
        hidden_dims: Sequence[int] | None,
        context_dim: int,
        made_kwargs: dict[str, Any],
    ) -> list[MADE]:
        """One MADE per layer; the ordering is reversed every other layer unless given."""
        if isinstance(num_transforms, bool) or not isinstance(num_transforms, int):
            raise ValueError(f"num_transforms must be a positive integer, got {num_transforms!r}")
        if num_transforms < 1:
            raise ValueError(f"num_transforms must be a positive integer, got {num_transforms!r}")
        hidden = [3 * input_dim + 1] if hidden_dims is None else list(hidden_dims)
        mades = []
        for i in range(num_transforms):
            kw = dict(made_kwargs)
            if "permutation" not in kw:
                kw["permutation"] = list(range(input_dim))[:: -1 if i % 2 else 1]
            if kw.get("seed") is not None:
                kw["seed"] = kw["seed"] + i
            mades.append(MADE(input_dim, hidden, context_dim=context_dim, **kw))
        return mades

    def _base(self, context: torch.Tensor | None) -> dist.TorchDistribution:
        if self.base_density is not None:
            return self.base_density(context)
        base = dist.Normal(self.loc, self.scale, validate_args=validate_args()).to_event(1)
        return base if context is None else base.expand(context.shape[:-1])

    def _check_context(self, context: torch.Tensor | None) -> None:
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"{type(self).__name__} is conditional (context_dim={self.context_dim}): "
                    "pass context"
                )
            if not isinstance(context, torch.Tensor) or context.dim() == 0:
                raise ValueError("context must be a tensor of shape (*batch, context_dim)")
            if context.shape[-1] != self.context_dim:
                raise ValueError(
                    f"context must have last dimension context_dim={self.context_dim}, "
                    f"got shape {tuple(context.shape)}"
                )
            _check_finite_context(context)
        elif context is not None:
            raise ValueError(f"{type(self).__name__} has context_dim=0 but a context was given")

    def forward(self, context: torch.Tensor | None = None) -> dist.TorchDistribution:
        """The flow as a Pyro distribution.

        Args:
            context: ``(*batch, context_dim)`` when conditional; the distribution then has batch
                shape ``batch``.

        Returns:
            A :class:`pyro.distributions.TransformedDistribution` with event shape ``(D,)``.
        """
        self._check_context(context)
        transforms = [
            t.condition(context) if isinstance(t, ConditionalTransformModule) else t
            for t in self.transforms
        ]
        return dist.TransformedDistribution(
            self._base(context), transforms, validate_args=validate_args()
        )

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-density.

        Args:
            x: ``(*batch, D)``, finite.
            context: ``(*batch, context_dim)`` when conditional.

        Returns:
            ``(*batch,)``.

        Raises:
            ValueError: On a wrong last dimension or NaN/Inf entries (the rows are named).
        """
        # The base's buffers carry the flow's dtype (module traversal would break compile graphs).
        x = _check_points(x, self.input_dim, self.loc.dtype)
        self._check_context(context)
        batch = _check_batch(x, context)
        if batch.numel() == 0:  # torch's support check cannot reshape an empty batch
            return x.new_zeros(batch)
        return self(context).log_prob(x)

    @torch.no_grad()
    def sample(
        self, sample_shape: Sequence[int] = (), context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Draw samples (no gradient).

        Args:
            sample_shape: Leading sample shape.
            context: ``(*batch, context_dim)`` when conditional.

        Returns:
            ``(*sample_shape, *batch, D)``.
        """
        return self(context).sample(torch.Size(sample_shape))


def _check_batch(x: torch.Tensor, context: torch.Tensor | None) -> torch.Size:
    """The broadcast batch shape of ``x`` and ``context``, or a ValueError naming both."""
    if context is None:
        return x.shape[:-1]
    try:
        return torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"context batch shape {tuple(context.shape[:-1])} does not match (broadcast with) "
            f"x batch shape {tuple(x.shape[:-1])}"
        ) from None


def _check_points(x: Any, input_dim: int, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != input_dim:
        raise ValueError(
            f"x must have last dimension input_dim={input_dim}, got shape {tuple(x.shape)}"
        )
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"flows are continuous densities but x has dtype {x.dtype}; dequantize integer data "
            "or convert it explicitly with x.to(dtype) before scoring"
        )
    x = x.to(dtype)
    if not is_eager():  # value checks need a branch on data (see madeflow.modes)
        return x
    bad = ~torch.isfinite(x).all(-1)
    if bad.any():
        rows = torch.nonzero(bad).tolist()
        shown = ", ".join(str(tuple(r)) if len(r) > 1 else str(r[0]) for r in rows[:10])
        more = f" (and {len(rows) - 10} more)" if len(rows) > 10 else ""
        raise ValueError(f"x contains NaN or Inf in rows {shown}{more}")
    return x


class MAF(_Flow):
    r"""Masked Autoregressive Flow: a stack of MAF layers on a standard normal (or MoG) base.

    Scoring is one pass per layer; sampling solves each layer with the fast engine. The MADE
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
            :class:`madeflow.density.GaussianMixtureMADE`).
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
        mades = self._mades(input_dim, num_transforms, hidden_dims, context_dim, made_kwargs)
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

    Sampling, :meth:`rsample` and scoring the flow's own samples cost one pass per layer;
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
        mades = self._mades(input_dim, num_transforms, hidden_dims, context_dim, made_kwargs)
        self.transforms = nn.ModuleList(
            ConditionalIAFTransform(m, stable=stable)
            if context_dim
            else IAFTransform(m, stable=stable)
            for m in mades
        )

    def rsample(
        self, sample_shape: Sequence[int] = (), context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reparameterized samples (differentiable in the parameters).

        Args:
            sample_shape: Leading sample shape.
            context: ``(*batch, context_dim)`` when conditional.

        Returns:
            ``(*sample_shape, *batch, D)``.
        """
        return self(context).rsample(torch.Size(sample_shape))
