"""Registry of trainable density models by name, and their JSON configuration.

The command line names models (``made-bernoulli``, ``made-gaussian``, ``made-mog``, ``maf``,
``maf-mog``); :func:`build_model` turns a name and options into a module, and
:func:`model_config` / :func:`model_from_config` round-trip that choice through plain JSON so a
saved run can be rebuilt before its ``state_dict`` is loaded.

:func:`model_config` checks every option before anything is built: types (an integer is not a
bool or ``8.7``, ``batch_norm`` is a bool, not ``"false"``), ranges, and sizes: at most
:data:`MAX_PARAMETERS` parameters, :data:`MAX_LAYERS` masked layers and :data:`MAX_MASKS` masks,
so a tampered ``config.json`` asking for ``10**6`` layers or a ``10**9``-wide layer is refused in
microseconds instead of hanging. Raise these module constants to build larger models.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "DEFAULTS",
    "MAX_LAYERS",
    "MAX_MASKS",
    "MAX_PARAMETERS",
    "MODELS",
    "build_model",
    "count_parameters",
    "model_config",
    "model_from_config",
]

MAX_PARAMETERS = 10**8
"""Largest model :func:`model_config` accepts, in parameters (400 MB of float32 weights)."""

MAX_LAYERS = 10_000
"""Most masked linear layers (over all MADEs of a model) :func:`model_config` accepts."""

MAX_MASKS = 10_000
"""Most masks of an order-agnostic MADE :func:`model_config` accepts."""

_MAX_SEED = 2**63 - 1


def _made_bernoulli(input_dim: int, o: dict[str, Any]) -> nn.Module:
    from madeflow.distributions import BernoulliMADE

    return BernoulliMADE(input_dim, o["hidden_dims"], **_made_kwargs(o))


def _made_gaussian(input_dim: int, o: dict[str, Any]) -> nn.Module:
    from madeflow.distributions import GaussianMADE

    return GaussianMADE(input_dim, o["hidden_dims"], **_made_kwargs(o))


def _made_mog(input_dim: int, o: dict[str, Any]) -> nn.Module:
    from madeflow.distributions import GaussianMixtureMADE

    return GaussianMixtureMADE(
        input_dim, o["hidden_dims"], num_components=o["num_components"], **_made_kwargs(o)
    )


def _maf(base: str) -> Callable[[int, dict[str, Any]], nn.Module]:
    def build(input_dim: int, o: dict[str, Any]) -> nn.Module:
        from madeflow.flows import MAF

        kwargs: dict[str, Any] = {
            "num_transforms": o["num_transforms"],
            "hidden_dims": o["hidden_dims"],
            "base": base,
            "batch_norm": o["batch_norm"],
            **_made_kwargs(o),
        }
        if base == "mog":
            kwargs["num_components"] = o["num_components"]
        return MAF(input_dim, **kwargs)

    return build


def _made_kwargs(o: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"context_dim": o["context_dim"]}
    if o["num_masks"] > 1:
        out["num_masks"] = o["num_masks"]
        out["permutation"] = "random"  # order-agnostic training, as in the MADE paper
    return out


MODELS: dict[str, Callable[[int, dict[str, Any]], nn.Module]] = {
    "made-bernoulli": _made_bernoulli,
    "made-gaussian": _made_gaussian,
    "made-mog": _made_mog,
    "maf": _maf("normal"),
    "maf-mog": _maf("mog"),
}
"""Model name -> builder ``(input_dim, options) -> nn.Module``."""

DEFAULTS: dict[str, Any] = {
    "hidden_dims": [256, 256],
    "num_transforms": 5,
    "num_components": 10,
    "num_masks": 1,
    "context_dim": 0,
    "batch_norm": False,
    "seed": 0,
}
"""Options every model accepts (some are ignored by some models), and their defaults.

The one table of model defaults: :func:`build_model` and ``madeflow fit`` both fill what is not
given from it.
"""


def model_config(name: str, input_dim: int, **options: Any) -> dict[str, Any]:
    """The JSON-serialisable description of a model.

    Args:
        name: A key of :data:`MODELS`.
        input_dim: ``D``.
        **options: Overrides of :data:`DEFAULTS` (``hidden_dims``, ``num_transforms``,
            ``num_components``, ``num_masks``, ``context_dim``, ``batch_norm``, ``seed``).

    Returns:
        ``{"name": ..., "input_dim": ..., "options": {...}}``.

    Raises:
        ValueError: For an unknown name or option.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    hidden = merged["hidden_dims"]
    if not isinstance(hidden, (list, tuple)):
        hidden = [hidden]
    if not hidden:
        raise ValueError("hidden_dims must not be empty")
    if len(hidden) > MAX_LAYERS:
        raise ValueError(f"hidden_dims has {len(hidden)} layers; the most is {MAX_LAYERS}")
    merged["hidden_dims"] = [_integer(h, "hidden_dims", 1) for h in hidden]
    input_dim = _integer(input_dim, "input_dim", 1)
    for key in ("num_transforms", "num_components", "num_masks"):
        merged[key] = _integer(merged[key], key, 1)
    merged["context_dim"] = _integer(merged["context_dim"], "context_dim", 0)
    merged["seed"] = _integer(merged["seed"], "seed", -_MAX_SEED, _MAX_SEED)
    if not isinstance(merged["batch_norm"], bool):
        raise ValueError(f"batch_norm must be true or false, got {merged['batch_norm']!r}")
    if merged["num_masks"] > MAX_MASKS:
        raise ValueError(f"num_masks must be at most {MAX_MASKS}, got {merged['num_masks']}")
    layers, params = count_parameters(name, input_dim, merged)
    if layers > MAX_LAYERS:
        raise ValueError(
            f"this {name} would have {layers} masked layers, more than the cap of {MAX_LAYERS} "
            "(madeflow.models.MAX_LAYERS): use fewer transforms or hidden layers"
        )
    if params > MAX_PARAMETERS:
        raise ValueError(
            f"this {name} would have about {params:.2e} parameters, more than the cap of "
            f"{MAX_PARAMETERS:.0e} (madeflow.models.MAX_PARAMETERS): use narrower layers or "
            "fewer transforms or components"
        )
    return {"name": name, "input_dim": input_dim, "options": merged}


def _integer(value: Any, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool, not ``8.7``) in range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be an integer <= {high}, got {value!r}")
    return int(value)


def count_parameters(name: str, input_dim: int, options: dict[str, Any]) -> tuple[int, int]:
    """Masked layers and parameters of a model, computed from its options without building it.

    Args:
        name: A key of :data:`MODELS`.
        input_dim: ``D``.
        options: Complete options (as in :func:`model_config`'s result).

    Returns:
        ``(masked linear layers, parameters)``; the parameter count is exact for every model of
        :data:`MODELS`.

    Example:
        >>> opts = model_config("maf", 2, hidden_dims=[8], num_transforms=3)["options"]
        >>> model = build_model("maf", 2, hidden_dims=[8], num_transforms=3)
        >>> count_parameters("maf", 2, opts) == (6, sum(p.numel() for p in model.parameters()))
        True
    """
    d, c, hidden = input_dim, options["context_dim"], options["hidden_dims"]

    def made(outputs_per_dim: int) -> int:
        widths = (d, *hidden)
        n = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))  # masked hidden layers
        n += c * hidden[0]  # the context layer has no bias
        return n + hidden[-1] * d * outputs_per_dim + d * outputs_per_dim

    per_made = len(hidden) + 1
    k = options["num_components"]
    if name == "made-bernoulli":
        return per_made, made(1)
    if name == "made-gaussian":
        return per_made, made(2)
    if name == "made-mog":
        return per_made, made(3 * k)
    t = options["num_transforms"]
    params = t * made(2) + (t - 1) * 2 * d * options["batch_norm"]
    layers = t * per_made
    if name == "maf-mog":
        params += made(3 * k)
        layers += per_made
    return layers, params


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """Build the (untrained) model a config describes, seeded by its ``seed`` option.

    Torch's global random state is left as it was.

    Args:
        config: As returned by :func:`model_config`.

    Returns:
        The module, with parameters in torch's default dtype.
    """
    try:
        name, input_dim, options = config["name"], config["input_dim"], config["options"]
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a model config: {config!r}") from err
    config = model_config(name, input_dim, **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["options"]["seed"])
        return MODELS[name](config["input_dim"], config["options"])


def build_model(name: str, input_dim: int, **options: Any) -> nn.Module:
    """Build a model by name (shorthand for ``model_from_config(model_config(...))``).

    Args:
        name: A key of :data:`MODELS`.
        input_dim: ``D``.
        **options: As in :func:`model_config`.

    Returns:
        The module.

    Example:
        >>> model = build_model("made-gaussian", 3, hidden_dims=[16])
        >>> tuple(model.log_prob(torch.zeros(2, 3)).shape)
        (2,)
    """
    return model_from_config(model_config(name, input_dim, **options))
