"""sbi's builder options in madeflow's terms: checked batches, widths, activation, z-scoring."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from sbi.utils import standardizing_net, z_score_parser
from torch import Tensor, nn

import madeflow

__all__ = [
    "activation_module",
    "check_batches",
    "hidden_dims",
    "made_kwargs",
    "use_activation",
    "z_score_condition",
    "z_score_input",
]

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


def check_batches(batch_x: Any, batch_y: Any) -> None:
    """Refuse batches that are not paired ``(N, *event)`` floating tensors on one device.

    Raises:
        TypeError: On non-tensors or integer batches.
        ValueError: On missing batch dimensions, unpaired or non-finite simulations (rows
            named), or two devices.
    """
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


def made_kwargs(kwargs: dict[str, Any], model: str) -> dict[str, Any]:
    """The options that reach every MADE; sbi's options for other estimators are dropped.

    Raises:
        ValueError: On dropout or (MADE MoG) batch norm, which madeflow does not offer.
    """
    chosen = {}
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
            chosen[key] = value
            continue
        warnings.warn(f"madeflow.sbi: ignoring unknown option {key}={value!r}", stacklevel=4)
    return chosen


def hidden_dims(hidden_features: int | Sequence[int], num_blocks: int) -> list[int]:
    """Hidden widths: ``num_blocks`` layers of ``hidden_features``, or the widths given."""
    if isinstance(hidden_features, int) and not isinstance(hidden_features, bool):
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive integer, got {num_blocks!r}")
        return [hidden_features] * num_blocks
    return list(hidden_features)


def activation_module(activation: str | nn.Module | type[nn.Module]) -> nn.Module:
    """An activation module from a name (``tanh``, ``relu``, ...), a class or a module."""
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)} or a module, got {activation!r}"
            )
        return _ACTIVATIONS[activation]()
    return activation() if isinstance(activation, type) else activation


def use_activation(density: nn.Module | None, act: nn.Module) -> None:
    """Give the MoG base of a MAF the builder's activation (MAF builds it with its default)."""
    made = getattr(density, "made", None)
    if isinstance(made, madeflow.MADE):
        made.activation = act


def z_score_condition(
    z_score_y: str | None, batch_y: Tensor, embedding_net: nn.Module
) -> nn.Module:
    """The embedding with sbi's standardizing net in front when ``z_score_y`` asks for it."""
    if z_score_y == "transform_to_unconstrained":
        raise ValueError(
            "z_score_y='transform_to_unconstrained' is not supported for the condition; use "
            "'independent', 'structured' or 'none'"
        )
    z_score, structured = z_score_parser(z_score_y)
    if z_score:
        return nn.Sequential(standardizing_net(batch_y, structured), embedding_net)
    return embedding_net


def z_score_input(
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
