"""Builders in sbi's convention, ``build(batch_x, batch_y, **options) -> estimator``.

``batch_x`` is what the estimator models (``theta`` for NPE, ``x`` for NLE) and ``batch_y`` what
it conditions on; both are batches of simulations, used for shapes and z-scoring only.
:func:`posterior_nn` and :func:`likelihood_nn` return ``build_fn(batch_theta, batch_x)`` closures
with sbi's user-facing option names, as ``sbi.neural_nets.posterior_nn`` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from sbi.utils import standardizing_net, z_score_parser
from torch import Tensor, nn

import madeflow
from madeflow.sbi.estimator import MadeflowDensityEstimator

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

# Options that sbi's posterior_nn/likelihood_nn pass to every builder and that do not apply here.
_IGNORED = {
    "num_bins",
    "tail_bound",
    "hidden_layers_spline_context",
    "tails",
    "min_bin_width",
    "min_bin_height",
    "min_derivative",
    "randperm",
    "randmask",
    "signal",
    "degree",
    "polynomials",
    "components",
    "dtype",
    "num_mixture_components",
}

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


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
    _check_batches(batch_x, batch_y)
    if model == "made_mog" and "num_mixture_components" in kwargs:
        num_components = kwargs["num_mixture_components"]
    made_kwargs = _made_kwargs(kwargs, model)
    embedding_net = nn.Identity() if embedding_net is None else embedding_net
    # Shapes come from the raw condition; its z-scoring is prepended to the embedding, as sbi does.
    with torch.no_grad():
        context_dim = int(embedding_net(batch_y[:1]).numel())
    embedding_net = _z_score_condition(z_score_y, batch_y, embedding_net)
    input_dim = int(batch_x[0].numel())
    hidden = _hidden_dims(hidden_features, num_blocks)
    act = _activation(activation)
    if model == "made_mog":
        net: nn.Module = madeflow.GaussianMixtureMADE(
            input_dim,
            hidden,
            num_components=num_components,
            context_dim=context_dim,
            activation=act,
            **made_kwargs,
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
            **made_kwargs,
        )
        if model == "maf_mog":
            _use_activation(net.base_density, act)
    shift, scale, dist = _z_score_input(z_score_x, batch_x, x_dist)
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


def _check_batches(batch_x: Any, batch_y: Any) -> None:
    for name, batch in (("batch_x", batch_x), ("batch_y", batch_y)):
        if not isinstance(batch, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(batch).__name__}")
        if batch.dim() < 2:
            raise ValueError(
                f"{name} must be a batch of simulations of shape (N, *event_shape) with at "
                f"least 2 dimensions, got shape {tuple(batch.shape)}; a single parameter "
                "vector or observation needs .unsqueeze(0), one scalar per simulation "
                ".unsqueeze(-1)"
            )
        if not batch.dtype.is_floating_point:
            raise TypeError(f"{name} must be floating point, got dtype {batch.dtype}")
    if batch_x.shape[0] != batch_y.shape[0]:
        raise ValueError(
            f"batch_x has {batch_x.shape[0]} simulations but batch_y has {batch_y.shape[0]}: "
            "theta and x must come in pairs (one row per simulation)"
        )
    if batch_x.device != batch_y.device:
        raise ValueError(
            f"batch_x is on {batch_x.device} but batch_y on {batch_y.device}; use one device"
        )
    for name, batch in (("batch_x", batch_x), ("batch_y", batch_y)):
        bad = ~torch.isfinite(batch.reshape(batch.shape[0], -1)).all(-1)
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten()[:5].tolist()
            raise ValueError(
                f"{name} contains NaN or Inf in {int(bad.sum())} of {batch.shape[0]} simulations "
                f"(first rows: {rows}). Drop failed simulations before building the estimator; "
                "sbi does it with append_simulations(theta, x, exclude_invalid_x=True)."
            )


def _made_kwargs(kwargs: dict[str, Any], model: str) -> dict[str, Any]:
    made_kwargs = {}
    for key, value in kwargs.items():
        if key in _IGNORED or (key == "num_transforms" and model == "made_mog"):
            continue
        if key == "dropout_probability":
            if value:
                raise ValueError("madeflow's MADE has no dropout: dropout_probability must be 0")
            continue
        if key == "use_batch_norm" and model == "made_mog":
            if value:
                raise ValueError("build_made_mog has no batch norm: use_batch_norm must be False")
            continue
        if key in ("residual", "skip_connections", "seed", "hidden_degrees", "permutation"):
            made_kwargs[key] = value
            continue
        warnings.warn(f"madeflow.sbi: ignoring unknown option {key}={value!r}", stacklevel=4)
    return made_kwargs


def _hidden_dims(hidden_features: int | Sequence[int], num_blocks: int) -> list[int]:
    if isinstance(hidden_features, int) and not isinstance(hidden_features, bool):
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive integer, got {num_blocks!r}")
        return [hidden_features] * num_blocks
    return list(hidden_features)


def _activation(activation: str | nn.Module | type[nn.Module]) -> nn.Module:
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)} or a module, got {activation!r}"
            )
        return _ACTIVATIONS[activation]()
    return activation() if isinstance(activation, type) else activation


def _use_activation(density: nn.Module | None, act: nn.Module) -> None:
    """Give the MoG base of a MAF the builder's activation (MAF builds it with its default)."""
    made = getattr(density, "made", None)
    if isinstance(made, madeflow.MADE):
        made.activation = act


def _z_score_condition(
    z_score_y: str | None, batch_y: Tensor, embedding_net: nn.Module
) -> nn.Module:
    if z_score_y == "transform_to_unconstrained":
        raise ValueError(
            "z_score_y='transform_to_unconstrained' is not supported for the condition; use "
            "'independent', 'structured' or 'none'"
        )
    z_score, structured = z_score_parser(z_score_y)
    if z_score:
        return nn.Sequential(standardizing_net(batch_y, structured), embedding_net)
    return embedding_net


def _z_score_input(
    z_score_x: str | None, batch_x: Tensor, x_dist: Any
) -> tuple[Tensor | None, Tensor | None, Any]:
    """``(shift, scale, bijection source)`` for the modelled variable, as sbi's flows do."""
    if z_score_x == "transform_to_unconstrained":
        if x_dist is None or not hasattr(x_dist, "support"):
            raise ValueError(
                "z_score_x='transform_to_unconstrained' needs x_dist: the prior (NPE), a "
                "distribution with a .support"
            )
        return None, None, x_dist
    z_score, structured = z_score_parser(z_score_x)
    if not z_score:
        return None, None, None
    flat = batch_x.reshape(batch_x.shape[0], -1)
    if structured:
        mean = flat.mean()
        std = flat.std(dim=1).clamp_min(1e-14).mean()
    else:
        mean = flat.mean(0)
        std = flat.std(0).clamp_min(1e-14)
    return mean, std, None
