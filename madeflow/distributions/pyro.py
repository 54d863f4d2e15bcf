"""A MADE density estimator (with its context) as a Pyro distribution."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from madeflow.distributions.base import DensityModel

__all__ = ["MADEDistribution"]


class MADEDistribution(TorchDistribution):
    """Pyro distribution view of a :class:`~madeflow.distributions.made.MADEDensity`.

    Holds the estimator (not a copy: its parameters stay trainable) and an optional context.
    Usually made by calling the estimator: ``est(context)``. Works with ``pyro.sample`` (with or
    without ``obs``, inside plates) and as the base of
    :class:`pyro.distributions.TransformedDistribution`.

    Args:
        estimator: The density estimator.
        context: ``(*batch, context_dim)`` when the estimator is conditional, else ``None``.
        batch_shape: Defaults to the context's batch shape (``()`` without context); may be
            larger (see :meth:`expand`), in which case the context is broadcast to it.
        validate_args: Passed to :class:`torch.distributions.Distribution`. Data are always
            validated by the estimator.

    Example:
        >>> from madeflow.distributions import GaussianMADE
        >>> d = GaussianMADE(3, [16], context_dim=2)(torch.randn(4, 2))
        >>> tuple(d.batch_shape), tuple(d.event_shape), tuple(d.sample((5,)).shape)
        ((4,), (3,), (5, 4, 3))
    """

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(
        self,
        estimator: DensityModel,
        context: torch.Tensor | None = None,
        batch_shape: torch.Size | tuple[int, ...] | None = None,
        validate_args: bool | None = None,
    ) -> None:
        context_batch = estimator.checked_context(context)
        if batch_shape is None:
            batch_shape = context_batch
        batch_shape = torch.Size(batch_shape)
        if torch.broadcast_shapes(batch_shape, context_batch) != batch_shape:
            raise ValueError(
                f"batch_shape {tuple(batch_shape)} does not contain the context's batch shape "
                f"{tuple(context_batch)}"
            )
        if context is not None:
            context = context.expand(*batch_shape, context.shape[-1])
        self.estimator = estimator
        self.context = context
        super().__init__(
            batch_shape, torch.Size((estimator.input_dim,)), validate_args=validate_args
        )

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """Independent booleans for binary models, independent reals otherwise."""
        return self.estimator.support

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        """Whether :meth:`rsample` is available (``GaussianMADE`` only)."""
        return self.estimator.has_rsample

    def _extra_shape(self) -> torch.Size:
        # Without a context the batch shape is carried by the sample shape.
        return self.batch_shape if self.context is None else torch.Size()

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Draw ``(*sample_shape, *batch_shape, D)`` samples without gradient."""
        shape = torch.Size(sample_shape) + self._extra_shape()
        return self.estimator.sample(shape, self.context)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Reparameterized ``(*sample_shape, *batch_shape, D)`` samples."""
        shape = torch.Size(sample_shape) + self._extra_shape()
        return self.estimator.rsample(shape, self.context)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact log-density of ``value`` ``(*shape, D)``; returns the broadcast batch shape."""
        lp = self.estimator.log_prob(value, self.context)
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))

    def expand(
        self, batch_shape: torch.Size | tuple[int, ...], _instance: object = None
    ) -> MADEDistribution:
        """The same density with a larger batch shape (the context is broadcast)."""
        return MADEDistribution(
            self.estimator,
            self.context,
            batch_shape=batch_shape,
            validate_args=self._validate_args if hasattr(self, "_validate_args") else None,
        )
