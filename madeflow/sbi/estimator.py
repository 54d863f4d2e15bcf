"""sbi's density-estimator contract around a madeflow MAF or MADE mixture of Gaussians."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from torch import Tensor, nn

from madeflow.sbi.sampling import sample_and_log_prob

__all__ = ["MadeflowDensityEstimator"]


class MadeflowDensityEstimator(ConditionalDensityEstimator):
    r"""A madeflow density as an sbi ``ConditionalDensityEstimator``.

    Models :math:`p(\text{input} \mid \text{condition})`: :math:`\theta` given :math:`x` for
    NPE, :math:`x` given :math:`\theta` for NLE. The input is flattened, standardized (the
    ``z_score_x`` option of the builders: an affine map whose log-determinant enters
    :meth:`log_prob`, exactly as in sbi's own flows) or mapped to unbounded space
    (``"transform_to_unconstrained"``), and modelled by ``net``, whose context is
    ``embedding_net(condition)`` (with sbi's z-scoring of the condition inside the embedding).

    Shapes follow sbi's sample-first convention: inputs ``(sample, batch, *input_shape)`` or
    ``(batch, *input_shape)``, conditions ``(batch, *condition_shape)`` or
    ``(sample, batch, *condition_shape)``; samples ``(*sample_shape, batch, *input_shape)``.

    Build it with :func:`madeflow.sbi.build_maf`, :func:`madeflow.sbi.build_maf_mog` or
    :func:`madeflow.sbi.build_made_mog` rather than by hand.

    Args:
        net: A conditional :class:`madeflow.MAF` or :class:`madeflow.MADEDensity` whose
            ``input_dim`` is the number of input elements and ``context_dim`` the embedding's
            output size.
        input_shape: Event shape of the input.
        condition_shape: Event shape of the condition.
        embedding_net: Maps ``(n, *condition_shape)`` to ``(n, context_dim)``; identity if
            ``None``.
        input_shift: Mean subtracted from the flattened input (scalar or ``(D,)``).
        input_scale: Standard deviation the centred input is divided by (scalar or ``(D,)``).
        x_dist: A distribution whose support defines sbi's ``mcmc_transform`` to unbounded space
            (``z_score_x="transform_to_unconstrained"``); excludes ``input_shift``/``input_scale``.
    """

    _input_shift: Tensor
    _input_scale: Tensor

    def __init__(
        self,
        net: nn.Module,
        input_shape: Sequence[int],
        condition_shape: Sequence[int],
        embedding_net: nn.Module | None = None,
        input_shift: Tensor | float | None = None,
        input_scale: Tensor | float | None = None,
        x_dist: Any = None,
    ) -> None:
        super().__init__(net, torch.Size(input_shape), torch.Size(condition_shape))
        numel = self.input_shape.numel()
        if getattr(net, "input_dim", numel) != numel:
            raise ValueError(
                f"net models {net.input_dim} dimensions but input_shape {tuple(input_shape)} has "
                f"{numel} elements"
            )
        if x_dist is not None and (input_shift is not None or input_scale is not None):
            raise ValueError("pass either x_dist or input_shift/input_scale, not both")
        ref = next(net.parameters())
        shift = torch.zeros(()) if input_shift is None else torch.as_tensor(input_shift)
        scale = torch.ones(()) if input_scale is None else torch.as_tensor(input_scale)
        if not bool((scale > 0).all()):
            raise ValueError("input_scale must be positive")
        # Buffers, so the standardization follows .to(device) with the rest of the module.
        self.register_buffer("_input_shift", shift.to(ref).reshape(-1).expand(numel).clone())
        self.register_buffer("_input_scale", scale.to(ref).reshape(-1).expand(numel).clone())
        self._embedding_net = nn.Identity() if embedding_net is None else embedding_net
        self.x_dist = x_dist
        self._bijection: tuple[Any, Any] | None = None  # (key, transform), rebuilt per device

    @property
    def embedding_net(self) -> nn.Module:
        """The network applied to the condition (it holds sbi's z-scoring of the condition)."""
        return self._embedding_net

    # ------------------------------------------------------------------ input space
    def _unconstrain(self) -> Any:
        """The ``mcmc_transform`` of ``x_dist`` (bounded -> unbounded) on this device, from sbi."""
        from sbi.utils import mcmc_transform

        key = (self._input_shift.device, self._input_shift.dtype)
        if self._bijection is None or self._bijection[0] != key:
            self._bijection = (key, mcmc_transform(self.x_dist, device=key[0]))
        return self._bijection[1]

    def _to_latent(self, value: Tensor) -> tuple[Tensor, Tensor]:
        """Flattened input ``(..., D)`` -> the flow's space and ``log|d latent / d input|``."""
        if self.x_dist is not None:
            bijection = self._unconstrain()
            latent = bijection(value)
            return latent, bijection.log_abs_det_jacobian(value, latent)
        latent = (value - self._input_shift) / self._input_scale
        log_det = -torch.log(self._input_scale).sum()
        return latent, log_det.expand(value.shape[:-1])

    def _from_latent(self, latent: Tensor) -> Tensor:
        if self.x_dist is not None:
            return self._unconstrain().inv(latent)
        return latent * self._input_scale + self._input_shift

    # -------------------------------------------------------------------- checks
    def _check_input(self, input: Tensor, role: str = "input") -> None:
        if not isinstance(input, Tensor):
            raise TypeError(f"{role} must be a torch.Tensor, got {type(input).__name__}")
        n = len(self.input_shape)
        if input.dim() < n + 1 or input.shape[input.dim() - n :] != self.input_shape:
            hint = ""
            if input.shape[-len(self.condition_shape) :] == self.condition_shape:
                hint = (
                    " It has the condition's shape: are input and condition swapped? For NLE "
                    "build the estimator with madeflow.sbi.likelihood_nn(...), which models x "
                    "given theta."
                )
            raise ValueError(
                f"{role} of shape {tuple(input.shape)} does not end in the estimator's input "
                f"shape {tuple(self.input_shape)} (expected (batch, *input_shape) or "
                f"(sample, batch, *input_shape)).{hint}"
            )
        _check_finite(input, role)

    def _check_condition(self, condition: Tensor) -> torch.Size:
        """Validate a condition and return its batch shape."""
        if not isinstance(condition, Tensor):
            raise TypeError(f"condition must be a torch.Tensor, got {type(condition).__name__}")
        n = len(self.condition_shape)
        if condition.dim() < n + 1 or condition.shape[condition.dim() - n :] != (
            self.condition_shape
        ):
            raise ValueError(
                f"condition of shape {tuple(condition.shape)} does not end in the estimator's "
                f"condition shape {tuple(self.condition_shape)} (expected "
                "(batch, *condition_shape)); the builder fixed this shape from the simulations "
                "it was given."
            )
        _check_finite(condition, "condition")
        return condition.shape[: condition.dim() - n]

    def _embed(self, condition: Tensor) -> Tensor:
        """``(*batch, *condition_shape)`` -> ``(*batch, context_dim)``."""
        n = len(self.condition_shape)
        batch = condition.shape[: condition.dim() - n]
        flat = condition.reshape(-1, *self.condition_shape)
        return self._embedding_net(flat).reshape(*batch, -1)

    # ------------------------------------------------------------------ contract
    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """Exact log-density of the inputs given the conditions.

        Args:
            input: ``(sample, batch, *input_shape)`` or ``(batch, *input_shape)``.
            condition: ``(batch, *condition_shape)`` or ``(sample, batch, *condition_shape)``;
                batch sizes broadcast.
            **kwargs: Ignored (sbi passes none).

        Returns:
            ``(sample, batch)``.
        """
        self._check_input(input)
        self._check_condition(condition)
        has_sample_dim = condition.dim() > len(self.condition_shape) + 1
        input, condition, batch = self._broadcast_and_align(input, condition)
        samples = input.shape[0]
        value = input.reshape(samples, batch, -1)
        if has_sample_dim:
            context = self._embed(condition)
        else:  # one embedding per condition, broadcast over the samples
            context = self._embed(condition[0])
        latent, log_det = self._to_latent(value)
        return self.net.log_prob(latent, context) + log_det

    def loss(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """Negative log-density, sbi's maximum-likelihood loss.

        Args:
            input: ``(batch, *input_shape)``.
            condition: ``(batch, *condition_shape)``.
            **kwargs: Ignored.

        Returns:
            ``(batch,)``.
        """
        return -self.log_prob(input.unsqueeze(0), condition)[0]

    def sample(self, sample_shape: Sequence[int], condition: Tensor, **kwargs: Any) -> Tensor:
        """Draw samples (no gradient); MAF sampling costs about one network pass per layer.

        Args:
            sample_shape: Leading shape of the draw.
            condition: ``(batch, *condition_shape)``.
            **kwargs: Ignored.

        Returns:
            ``(*sample_shape, batch, *input_shape)``.
        """
        sample_shape = torch.Size(sample_shape)
        batch = self._check_condition(condition)
        with torch.no_grad():
            latent = self.net.sample(sample_shape, self._embed(condition))
            value = self._from_latent(latent)
        return value.reshape(*sample_shape, *batch, *self.input_shape)

    def sample_and_log_prob(
        self, sample_shape: Sequence[int], condition: Tensor, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log-densities, summed during sampling where the model allows it.

        Under ``torch.no_grad()`` (or with frozen parameters) the log-densities come out of the
        sequential solve itself, with no second pass over the samples; otherwise the samples are
        scored by one differentiable density pass, so the log-densities carry gradients.

        Args:
            sample_shape: Leading shape of the draw.
            condition: ``(batch, *condition_shape)``.
            **kwargs: Ignored.

        Returns:
            ``(*sample_shape, batch, *input_shape)`` samples and ``(*sample_shape, batch)``
            log-densities.
        """
        sample_shape = torch.Size(sample_shape)
        batch = self._check_condition(condition)
        latent, log_prob = sample_and_log_prob(self.net, sample_shape, self._embed(condition))
        with torch.no_grad():
            value = self._from_latent(latent)
        _, log_det = self._to_latent(value)
        shape = (*sample_shape, *batch)
        return (
            value.reshape(*shape, *self.input_shape),
            (log_prob + log_det).reshape(shape),
        )

    def inverse_transform(self, input: Tensor, condition: Tensor) -> Tensor:
        """Map inputs to standard-normal noise (the flow's base space), as sbi's flows do.

        For a MAF on a normal base this inverts every layer; a mixture-of-Gaussians base or a
        MADE density is inverted by its Rosenblatt transform (each conditional's CDF, then the
        normal quantile), so the noise of exact samples is standard normal in every case. sbi's
        LC2ST-NF diagnostic uses it.

        Args:
            input: ``(*batch, *input_shape)``.
            condition: ``(*batch, *condition_shape)``, broadcastable against the input's batch.

        Returns:
            ``(*batch, D)`` noise.
        """
        self._check_input(input)
        self._check_condition(condition)
        n = len(self.input_shape)
        value = input.reshape(*input.shape[: input.dim() - n], -1)
        latent, _ = self._to_latent(value)
        return _to_noise(self.net, latent, self._embed(condition))


def _to_noise(net: nn.Module, latent: Tensor, context: Tensor) -> Tensor:
    """Invert a madeflow MAF or MADE density to standard-normal noise."""
    import madeflow

    if isinstance(net, madeflow.MADEDensity):
        return _rosenblatt(net, latent, context)
    flow = net(context)
    u = latent
    for transform in reversed(flow.transforms):
        u = transform.inv(u)
    base_density = getattr(net, "base_density", None)
    if isinstance(base_density, madeflow.MADEDensity):
        return _rosenblatt(base_density, u, context)
    return u


def _rosenblatt(est: Any, x: Tensor, context: Tensor) -> Tensor:
    """``Phi^-1(F_d(x_d | x_<d))`` for every dimension of a MADE density."""
    batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    x = x.expand(*batch, x.shape[-1])
    conditionals = est.conditionals_from_params(est.made(x, context.expand(*batch, -1)))
    eps = torch.finfo(x.dtype).eps
    cdf = conditionals.cdf(x).clamp(eps, 1 - eps)
    return torch.special.ndtri(cdf)


def _check_finite(value: Tensor, role: str) -> None:
    if not value.dtype.is_floating_point:
        return
    flat = value.reshape(-1, value.shape[-1]) if value.dim() else value.reshape(1, 1)
    bad = ~torch.isfinite(flat).all(-1)
    if bool(bad.any()):
        raise ValueError(
            f"{role} contains NaN or Inf in {int(bad.sum())} of {flat.shape[0]} rows. Simulations "
            "that failed should not reach the estimator: sbi drops them with "
            "append_simulations(theta, x, exclude_invalid_x=True)."
        )
