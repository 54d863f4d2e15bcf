"""Builders in sbi's convention, ``build(batch_x, batch_y, **options) -> estimator``.

``batch_x`` is what the estimator models (``theta`` for NPE, ``x`` for NLE) and ``batch_y`` what
it conditions on; both are batches of simulations, used for shapes and z-scoring only.
:func:`posterior_nn` and :func:`likelihood_nn` return ``build_fn(batch_theta, batch_x)`` closures
with sbi's user-facing option names, as ``sbi.neural_nets.posterior_nn`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import madeflow
from madeflow.sbi.estimator import MadeflowDensityEstimator
from madeflow.sbi.options import (
    activation_module,
    check_batches,
    hidden_dims,
    made_kwargs,
    use_activation,
    z_score_condition,
    z_score_input,
)

__all__ = [
    "DEFAULTS",
    "build_made_mog",
    "build_maf",
    "build_maf_mog",
    "likelihood_nn",
    "posterior_nn",
]

DEFAULTS: dict[str, Any] = {
    "hidden_features": 50,
    "num_transforms": 5,
    "num_blocks": 2,
    "activation": "tanh",
    "num_components": 10,
}
"""Default options of the builders (measurements behind them: ``docs/sbi.md``)."""


def build_maf(
    batch_x: Tensor,
    batch_y: Tensor,
    z_score_x: str | None = "independent",
    z_score_y: str | None = "independent",
    hidden_features: int | Sequence[int] = DEFAULTS["hidden_features"],
    num_transforms: int = DEFAULTS["num_transforms"],
    embedding_net: nn.Module | None = None,
    num_blocks: int = DEFAULTS["num_blocks"],
    activation: str | nn.Module | type[nn.Module] = DEFAULTS["activation"],
    use_batch_norm: bool = False,
    x_dist: Any = None,
    **kwargs: Any,
) -> MadeflowDensityEstimator:
    """A conditional MAF ``p(x | y)`` on a standard-normal base (:class:`madeflow.MAF`).

    Every MADE sees the condition at every output, the first one included, and sampling solves
    each layer in about one network pass (instead of ``D``).

    Args:
        batch_x: Batch of the modelled variable, ``(N, *x_shape)``: shapes and z-scoring.
        batch_y: Batch of the condition, ``(N, *y_shape)``: shapes and z-scoring.
        z_score_x: ``"independent"`` (per dimension), ``"structured"`` (one mean and std for
            all), ``"none"``/``None``, or ``"transform_to_unconstrained"`` (sbi's bijection to
            unbounded space from ``x_dist``'s support). The map's log-determinant is part of the
            density.
        z_score_y: ``"independent"``, ``"structured"`` or ``"none"``/``None``: z-scoring of the
            condition before ``embedding_net``.
        hidden_features: Width of each hidden layer, or the list of widths.
        num_transforms: Number of MAF layers (orderings alternate between layers).
        embedding_net: Network applied to the (z-scored) condition; identity if ``None``.
        num_blocks: Hidden layers per MADE when ``hidden_features`` is an int.
        activation: ``"tanh"``, ``"relu"``, ``"elu"``, ``"gelu"``, ``"silu"`` or a module.
        use_batch_norm: Batch norm between MAF layers (the MAF paper's); off by default, as in
            sbi, because it couples the samples of a batch.
        x_dist: The prior (NPE) for ``z_score_x="transform_to_unconstrained"``.
        **kwargs: Options of other sbi builders (``num_bins``, ...) are ignored;
            ``dropout_probability`` must be 0; other MADE options (``residual``,
            ``skip_connections``, ``seed``) go to every :class:`madeflow.MADE`.

    Returns:
        A :class:`~madeflow.sbi.MadeflowDensityEstimator`.
    """
    return _build("maf", **_locals(locals()))


def build_maf_mog(
    batch_x: Tensor,
    batch_y: Tensor,
    z_score_x: str | None = "independent",
    z_score_y: str | None = "independent",
    hidden_features: int | Sequence[int] = DEFAULTS["hidden_features"],
    num_transforms: int = DEFAULTS["num_transforms"],
    embedding_net: nn.Module | None = None,
    num_blocks: int = DEFAULTS["num_blocks"],
    activation: str | nn.Module | type[nn.Module] = DEFAULTS["activation"],
    use_batch_norm: bool = False,
    x_dist: Any = None,
    num_components: int = DEFAULTS["num_components"],
    **kwargs: Any,
) -> MadeflowDensityEstimator:
    """A conditional MAF whose base is a conditional MADE mixture of Gaussians (MAF MoG).

    Options as :func:`build_maf`, plus:

    Args:
        batch_x: Batch of the modelled variable.
        batch_y: Batch of the condition.
        z_score_x: As in :func:`build_maf`.
        z_score_y: As in :func:`build_maf`.
        hidden_features: As in :func:`build_maf`.
        num_transforms: As in :func:`build_maf`.
        embedding_net: As in :func:`build_maf`.
        num_blocks: As in :func:`build_maf`.
        activation: As in :func:`build_maf` (the MoG base uses it too).
        use_batch_norm: As in :func:`build_maf`.
        x_dist: As in :func:`build_maf`.
        num_components: Gaussians per conditional of the base.
        **kwargs: As in :func:`build_maf`.

    Returns:
        A :class:`~madeflow.sbi.MadeflowDensityEstimator`.
    """
    return _build("maf_mog", **_locals(locals()))


def build_made_mog(
    batch_x: Tensor,
    batch_y: Tensor,
    z_score_x: str | None = "independent",
    z_score_y: str | None = "independent",
    hidden_features: int | Sequence[int] = DEFAULTS["hidden_features"],
    embedding_net: nn.Module | None = None,
    num_blocks: int = DEFAULTS["num_blocks"],
    activation: str | nn.Module | type[nn.Module] = DEFAULTS["activation"],
    x_dist: Any = None,
    num_components: int = DEFAULTS["num_components"],
    **kwargs: Any,
) -> MadeflowDensityEstimator:
    """A conditional MADE with mixture-of-Gaussians conditionals (sbi's ``made``).

    Args:
        batch_x: Batch of the modelled variable.
        batch_y: Batch of the condition.
        z_score_x: As in :func:`build_maf`.
        z_score_y: As in :func:`build_maf`.
        hidden_features: As in :func:`build_maf`.
        embedding_net: As in :func:`build_maf`.
        num_blocks: As in :func:`build_maf`.
        activation: As in :func:`build_maf`.
        x_dist: As in :func:`build_maf`.
        num_components: Gaussians per conditional (sbi's ``num_mixture_components``, which is
            accepted too).
        **kwargs: As in :func:`build_maf` (``num_transforms`` is ignored).

    Returns:
        A :class:`~madeflow.sbi.MadeflowDensityEstimator`.
    """
    return _build("made_mog", **_locals(locals()))


BUILDERS: dict[str, Callable[..., MadeflowDensityEstimator]] = {
    "maf": build_maf,
    "maf_mog": build_maf_mog,
    "made_mog": build_made_mog,
}


def posterior_nn(
    model: str = "maf",
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    embedding_net: nn.Module | None = None,
    **kwargs: Any,
) -> Callable[[Tensor, Tensor], MadeflowDensityEstimator]:
    """A builder of ``p(theta | x)`` for NPE, with sbi's option names.

    Example: ``NPE(prior, density_estimator=madeflow.sbi.posterior_nn("maf", hidden_features=64))``.

    Args:
        model: ``"maf"``, ``"maf_mog"`` or ``"made_mog"``.
        z_score_theta: z-scoring of ``theta`` (the modelled variable).
        z_score_x: z-scoring of ``x`` (the condition).
        embedding_net: Network applied to ``x``.
        **kwargs: Options of the builder (see :func:`build_maf`).

    Returns:
        ``build_fn(batch_theta, batch_x)``, as sbi's inference classes call it.
    """
    builder = _builder(model)
    _check_options(builder, kwargs)

    def build_fn(batch_theta: Tensor, batch_x: Tensor) -> MadeflowDensityEstimator:
        return builder(
            batch_theta,
            batch_x,
            z_score_x=z_score_theta,
            z_score_y=z_score_x,
            embedding_net=embedding_net,
            **kwargs,
        )

    return build_fn


def likelihood_nn(
    model: str = "maf",
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    embedding_net: nn.Module | None = None,
    **kwargs: Any,
) -> Callable[[Tensor, Tensor], MadeflowDensityEstimator]:
    """A builder of ``p(x | theta)`` for NLE, with sbi's option names.

    sbi's NLE calls its builder with ``(theta, x)``; passing :func:`build_maf` itself would model
    ``theta`` given ``x``, so NLE needs this wrapper (as with sbi's own builders).

    Args:
        model: ``"maf"``, ``"maf_mog"`` or ``"made_mog"``.
        z_score_theta: z-scoring of ``theta`` (the condition).
        z_score_x: z-scoring of ``x`` (the modelled variable).
        embedding_net: Network applied to ``theta``.
        **kwargs: Options of the builder (see :func:`build_maf`).

    Returns:
        ``build_fn(batch_theta, batch_x)``, as sbi's inference classes call it.
    """
    builder = _builder(model)
    _check_options(builder, kwargs)

    def build_fn(batch_theta: Tensor, batch_x: Tensor) -> MadeflowDensityEstimator:
        return builder(
            batch_x,
            batch_theta,
            z_score_x=z_score_x,
            z_score_y=z_score_theta,
            embedding_net=embedding_net,
            **kwargs,
        )

    return build_fn


# ------------------------------------------------------------------------------ internals
def _locals(values: dict[str, Any]) -> dict[str, Any]:
    options = dict(values)
    options.update(options.pop("kwargs"))
    return options


def _builder(model: str) -> Callable[..., MadeflowDensityEstimator]:
    if model not in BUILDERS:
        raise ValueError(f"model must be one of {sorted(BUILDERS)}, got {model!r}")
    return BUILDERS[model]


def _check_options(builder: Callable[..., Any], options: dict[str, Any]) -> None:
    """Refuse the arguments the closures set themselves."""
    taken = {"batch_x", "batch_y", "z_score_x", "z_score_y", "embedding_net"} & set(options)
    if taken:
        raise TypeError(
            f"{sorted(taken)} are set by posterior_nn/likelihood_nn itself; use z_score_theta, "
            "z_score_x and embedding_net"
        )


def _build(
    model: str,
    batch_x: Tensor,
    batch_y: Tensor,
    z_score_x: str | None,
    z_score_y: str | None,
    hidden_features: int | Sequence[int],
    embedding_net: nn.Module | None,
    num_blocks: int,
    activation: str | nn.Module | type[nn.Module],
    x_dist: Any,
    num_transforms: int = 1,
    use_batch_norm: bool = False,
    num_components: int = 10,
    **kwargs: Any,
) -> MadeflowDensityEstimator:
    check_batches(batch_x, batch_y)
    if model == "made_mog" and "num_mixture_components" in kwargs:
        num_components = kwargs["num_mixture_components"]
    per_made = made_kwargs(kwargs, model)
    embedding_net = nn.Identity() if embedding_net is None else embedding_net
    # Shapes come from the raw condition; its z-scoring is prepended to the embedding, as sbi does.
    with torch.no_grad():
        context_dim = int(embedding_net(batch_y[:1]).numel())
    embedding_net = z_score_condition(z_score_y, batch_y, embedding_net)
    input_dim = int(batch_x[0].numel())
    hidden = hidden_dims(hidden_features, num_blocks)
    act = activation_module(activation)
    if model == "made_mog":
        net: nn.Module = madeflow.GaussianMixtureMADE(
            input_dim,
            hidden,
            num_components=num_components,
            context_dim=context_dim,
            activation=act,
            **per_made,
        )
    else:
        net = madeflow.MAF(
            input_dim,
            num_transforms,
            hidden,
            context_dim=context_dim,
            base="mog" if model == "maf_mog" else "normal",
            batch_norm=use_batch_norm,
            num_components=num_components,
            activation=act,
            **per_made,
        )
        if model == "maf_mog":
            use_activation(net.base_density, act)
    shift, scale, dist = z_score_input(z_score_x, batch_x, x_dist)
    estimator = MadeflowDensityEstimator(
        net,
        input_shape=batch_x[0].shape,
        condition_shape=batch_y[0].shape,
        embedding_net=embedding_net,
        input_shift=shift,
        input_scale=scale,
        x_dist=dist,
    )
    return estimator.to(batch_x.device)
