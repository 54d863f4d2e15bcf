"""The contract every density model in madeflow keeps, written once.

A density model is an ``nn.Module`` over vectors of size ``input_dim``, optionally conditioned on
a context of size ``context_dim``:

* ``log_prob(x, context=None)``: exact log-density, ``(*batch, D) -> (*batch,)``;
* ``sample(sample_shape=(), context=None)``: draws without gradient,
  ``(*sample_shape, *batch, D)``; ``rsample`` the same with gradients where the model has them;
* ``sample_and_log_prob`` (and ``rsample_and_log_prob``): draws and their log-density from one
  computation;
* ``forward(context=None)``: the model as a distribution object (Pyro's conventions), so
  conditioning costs no extra classes (zuko's ``LazyDistribution`` idea).

:class:`DensityModel` implements the checks and the shape logic of these methods once, through
:mod:`madeflow.validation`; subclasses say how to score (:meth:`DensityModel.score`) and how to
draw (:meth:`DensityModel.draw`). :class:`madeflow.MAF`, :class:`madeflow.IAF` and the MADE
density estimators are its subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from madeflow.modes import is_eager
from madeflow.validation import (
    broadcast_batch,
    check_context,
    check_log_density,
    check_points,
)

__all__ = ["DensityModel"]


class DensityModel(nn.Module):
    """Base of every density model: checked ``log_prob``, ``sample``, ``rsample``, ``forward``.

    Subclasses set ``input_dim`` and ``context_dim`` and implement :meth:`score`, :meth:`draw`,
    :meth:`forward` and :meth:`model_dtype`; they may refine :meth:`checked_points` (e.g. to
    require binary data).

    Attributes:
        continuous: Whether the model is a density over reals (integer data are then refused
            and must be dequantized first).
        has_rsample: Whether :meth:`rsample` is differentiable in the parameters.
    """

    input_dim: int
    context_dim: int
    continuous: bool = True
    has_rsample: bool = False

    # --------------------------------------------------------------- subclass interface
    def model_dtype(self) -> torch.dtype:
        """The dtype of the model's parameters: scored data are converted to it."""
        raise NotImplementedError

    def score(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Log-density of checked points, ``(*batch, D) -> (*batch,)``."""
        raise NotImplementedError

    def draw(self, sample_shape: torch.Size, context: torch.Tensor | None) -> torch.Tensor:
        """Samples ``(*sample_shape, *batch, D)`` for a checked context, with autograd on."""
        raise NotImplementedError

    def forward(self, context: torch.Tensor | None = None) -> Distribution:
        """The model as a distribution, batch shape ``batch`` of ``context`` and event ``(D,)``."""
        raise NotImplementedError

    def draw_and_score(
        self, sample_shape: torch.Size, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their log-density; subclasses take both from one computation.

        This fallback scores the samples in a second pass.
        """
        x = self.draw(sample_shape, context)
        return x, self.score(x, context)

    # ------------------------------------------------------------------------- checks
    def checked_points(self, x: torch.Tensor) -> torch.Tensor:
        """Check points to score and return them in the model's dtype.

        Args:
            x: ``(*batch, D)``.

        Returns:
            ``x`` in :meth:`model_dtype`.

        Raises:
            TypeError: If ``x`` is not a tensor, or holds integers for a continuous model.
            ValueError: On a wrong last dimension or NaN/Inf rows (they are named).
        """
        return check_points(
            x, self.input_dim, self.model_dtype(), type(self).__name__, self.continuous
        )

    def checked_context(self, context: torch.Tensor | None) -> torch.Size:
        """Check a context and return its batch shape (``()`` without one).

        Args:
            context: ``(*batch, context_dim)`` when the model is conditional, else ``None``.

        Returns:
            The batch shape.

        Raises:
            ValueError: If the context is missing, unexpected, of the wrong size or not finite.
        """
        return check_context(context, self.context_dim, type(self).__name__)

    # ------------------------------------------------------------------------ contract
    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Exact, normalized log-density.

        Args:
            x: ``(*batch, D)``.
            context: ``(*batch, context_dim)`` (broadcastable against ``x``'s batch) when
                conditional, else ``None``.

        Returns:
            ``(*batch,)``, the broadcast batch shape of ``x`` and ``context``.

        Raises:
            ValueError: On a wrong last dimension, NaN/Inf entries (the rows are named), a
                missing or unexpected context, or batch shapes that do not broadcast.
            TypeError: On non-tensor inputs, or integer data for a continuous model.
            NumericalError: If the model's values overflow on these finite points (NaN or
                ``+inf`` log-density; ``-inf``, a density that underflows, is returned).
        """
        x = self.checked_points(x)
        batch = broadcast_batch(x, self.checked_context(context))
        if batch.numel() == 0:  # nothing to score (and torch's reshapes of empty batches fail)
            return x.new_zeros(batch)
        log_p = self.score(x, context)
        if is_eager():
            check_log_density(log_p, type(self).__name__, x)
        return log_p

    def sample(
        self,
        sample_shape: torch.Size | Sequence[int] = (),
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw samples without gradient.

        Args:
            sample_shape: Leading shape of the draw.
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            ``(*sample_shape, *batch, D)`` on the model's device and dtype.
        """
        self.checked_context(context)
        with torch.no_grad():
            return self.draw(torch.Size(sample_shape), context)

    def sample_and_log_prob(
        self,
        sample_shape: torch.Size | Sequence[int] = (),
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their exact log-density, without gradient, from one computation.

        Args:
            sample_shape: Leading shape of the draw.
            context: ``(*batch, context_dim)`` when conditional, else ``None``.

        Returns:
            ``(x, log_prob)``: ``(*sample_shape, *batch, D)`` and ``(*sample_shape, *batch)``.
        """
        self.checked_context(context)
        with torch.no_grad():
            return self.draw_and_score(torch.Size(sample_shape), context)

    def rsample_and_log_prob(
        self,
        sample_shape: torch.Size | Sequence[int] = (),
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sample_and_log_prob` with gradients (where :attr:`has_rsample`).

        Args:
            sample_shape: Leading shape of the draw.
            context: As in :meth:`sample`.

        Returns:
            ``(x, log_prob)``, both differentiable in the parameters.

        Raises:
            NotImplementedError: For a model without a reparameterized sampler.
        """
        if not self.has_rsample:
            raise NotImplementedError(f"{type(self).__name__} has no reparameterized sampler")
        self.checked_context(context)
        return self.draw_and_score(torch.Size(sample_shape), context)

    def rsample(
        self,
        sample_shape: torch.Size | Sequence[int] = (),
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reparameterized samples, differentiable in the parameters (where :attr:`has_rsample`).

        Args:
            sample_shape: Leading shape of the draw.
            context: As in :meth:`sample`.

        Returns:
            ``(*sample_shape, *batch, D)``.

        Raises:
            NotImplementedError: For a model without a reparameterized sampler.
        """
        if not self.has_rsample:
            raise NotImplementedError(f"{type(self).__name__} has no reparameterized sampler")
        self.checked_context(context)
        return self.draw(torch.Size(sample_shape), context)
