"""Registry of trainable density models by name, and their JSON configuration.

The command line names models (``made-bernoulli``, ``made-gaussian``, ``made-mog``, ``maf``,
``maf-mog``); :func:`build_model` turns a name and options into a module, and
:func:`model_config` / :func:`model_from_config` round-trip that choice through plain JSON so a
saved run can be rebuilt before its ``state_dict`` is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["MODELS", "build_model", "model_config", "model_from_config"]


def _made_bernoulli(input_dim: int, o: dict[str, Any]) -> nn.Module:
    from madeflow.density import BernoulliMADE

    return BernoulliMADE(input_dim, o["hidden_dims"], **_made_kwargs(o))


def _made_gaussian(input_dim: int, o: dict[str, Any]) -> nn.Module:
    from madeflow.density import GaussianMADE

    return GaussianMADE(input_dim, o["hidden_dims"], **_made_kwargs(o))


def _made_mog(input_dim: int, o: dict[str, Any]) -> nn.Module:
    from madeflow.density import GaussianMixtureMADE

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
    "hidden_dims": [512, 512],
    "num_transforms": 5,
    "num_components": 10,
    "num_masks": 1,
    "context_dim": 0,
    "batch_norm": False,
    "seed": 0,
}
"""Options every model accepts (some are ignored by some models)."""


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
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    merged["hidden_dims"] = [int(h) for h in _as_list(merged["hidden_dims"])]
    return {"name": name, "input_dim": int(input_dim), "options": merged}


def _as_list(value: int | Sequence[int]) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


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
