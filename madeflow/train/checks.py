"""Check what :func:`madeflow.fit` is given before it trains: its arguments and a saved state.

:func:`check_args` and :func:`check_numbers` refuse data that are not ``(N, D)`` tensors or row
sources (a NumPy array gets a ``TypeError`` saying how to convert it), inconsistent contexts and
non-finite or non-positive learning rates.

A training state (from :meth:`madeflow.EpochEnd.state`) is applied piece by piece: model
weights, Adam's moments, two random generators, the history. A damaged or foreign state would
fail half-way (with torch's own message, after the global random state was already replaced)
or, worse, at the end of training. :func:`check_state` checks every field against the model
first and raises one :class:`TrainingStateError` naming the field.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

from madeflow.data.rows import Rows, RowSource, num_columns
from madeflow.train.evaluation import require_rows

__all__ = [
    "LR_SCHEDULES",
    "STATE_VERSION",
    "TrainingStateError",
    "check_args",
    "check_model",
    "check_numbers",
    "check_state",
]

LR_SCHEDULES = (None, "constant", "cosine")
"""The learning-rate schedules :func:`madeflow.fit` knows."""

STATE_VERSION = 1
"""Version of the training-state layout."""

_HISTORY_LISTS = ("train_log_lik", "val_log_lik")
_HISTORY_FIELDS = {
    *_HISTORY_LISTS,
    "best_epoch",
    "best_val_log_lik",
    "stopped",
    "epochs",
    "seconds",
}


class TrainingStateError(ValueError):
    """A training state to resume from is damaged or belongs to another model."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_weights(name: str, weights: Any, own: dict[str, torch.Tensor]) -> None:
    if not isinstance(weights, dict):
        raise TrainingStateError(f"{name} is not a state_dict")
    if set(weights) != set(own):
        missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        raise TrainingStateError(
            f"{name} does not fit this model (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, value in weights.items():
        mine = own[key]
        if not isinstance(value, torch.Tensor) or value.shape != mine.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise TrainingStateError(
                f"{name}.{key} has shape {shape}, expected {tuple(mine.shape)}"
            )
        if value.is_floating_point() != mine.is_floating_point():
            raise TrainingStateError(f"{name}.{key} has dtype {value.dtype}, expected {mine.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise TrainingStateError(f"{name}.{key} holds NaN or Inf")


def _check_optimizer(opt: Any, params: list[nn.Parameter]) -> None:
    if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list):
        raise TrainingStateError("optimizer is not an optimizer state_dict")
    if not isinstance(opt.get("state"), dict):
        raise TrainingStateError("optimizer has no 'state'")
    ids = [i for group in opt["param_groups"] for i in group.get("params", [])]
    if len(ids) != len(params):
        raise TrainingStateError(
            f"optimizer holds {len(ids)} parameters, this model has {len(params)}"
        )
    for index, param in zip(ids, params):
        moments = opt["state"].get(index, {})
        if not isinstance(moments, dict):
            raise TrainingStateError(f"optimizer state of parameter {index} is not a dict")
        for key, value in moments.items():
            if not isinstance(value, torch.Tensor):
                raise TrainingStateError(f"optimizer.state.{index}.{key} is not a tensor")
            if key != "step" and value.shape != param.shape:
                raise TrainingStateError(
                    f"optimizer.state.{index}.{key} has shape {tuple(value.shape)}, expected "
                    f"{tuple(param.shape)}"
                )
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise TrainingStateError(f"optimizer.state.{index}.{key} holds NaN or Inf")


def _check_history(history: Any) -> None:
    if not isinstance(history, dict) or set(history) != _HISTORY_FIELDS:
        raise TrainingStateError(f"history must hold the fields {sorted(_HISTORY_FIELDS)}")
    for key in _HISTORY_LISTS:
        values = history[key]
        if not isinstance(values, list) or not all(
            isinstance(v, numbers.Real) and math.isfinite(v) for v in values
        ):
            raise TrainingStateError(f"history.{key} must be a list of finite numbers")
    for key in ("best_epoch", "epochs"):
        if not _is_int(history[key]) or history[key] < -1:
            raise TrainingStateError(f"history.{key} must be an integer, got {history[key]!r}")
    if not isinstance(history["stopped"], str):
        raise TrainingStateError(f"history.stopped must be a string, got {history['stopped']!r}")


def check_state(state: Any, model: nn.Module) -> None:
    """Check every field of a training state against ``model`` before anything is applied.

    Args:
        state: What :meth:`madeflow.EpochEnd.state` returned (e.g. read back from disk).
        model: The model to resume, with its parameters in the order the optimizer holds them.

    Raises:
        TrainingStateError: Naming the first field that is missing, of the wrong type or shape,
            non-finite, or of another model.
    """
    if not isinstance(state, dict):
        raise TrainingStateError(f"the training state is a {type(state).__name__}, not a dict")
    missing = {
        "version",
        "epoch",
        "model",
        "optimizer",
        "generator",
        "torch_rng",
        "history",
        "best_model",
        "bad_epochs",
    } - set(state)
    if missing:
        raise TrainingStateError(f"the training state lacks {sorted(missing)}")
    if not _is_int(state["version"]) or state["version"] != STATE_VERSION:
        raise TrainingStateError(f"unsupported training state version {state['version']!r}")
    for key in ("epoch", "bad_epochs"):
        if not _is_int(state[key]) or state[key] < 0:
            raise TrainingStateError(f"{key} must be an integer >= 0, got {state[key]!r}")
    own = model.state_dict()
    _check_weights("model", state["model"], own)
    _check_weights("best_model", state["best_model"], own)
    _check_optimizer(state["optimizer"], list(model.parameters()))
    reference = {"generator": torch.Generator().get_state(), "torch_rng": torch.get_rng_state()}
    for key, ref in reference.items():
        value = state[key]
        if (
            not isinstance(value, torch.Tensor)
            or value.dtype != torch.uint8
            or (value.shape != ref.shape)
        ):
            raise TrainingStateError(f"{key} is not a random generator state")
    _check_history(state["history"])


def check_model(model: nn.Module) -> None:
    """Refuse float16 parameters: Adam's ``eps=1e-8`` is 0 in float16, so the first step is NaN.

    Raises:
        ValueError: Saying how to train instead.
    """
    half = next((k for k, p in model.named_parameters() if p.dtype == torch.float16), None)
    if half is not None:
        raise ValueError(
            f"fit cannot train float16 parameters ({half}): Adam's eps=1e-8 is 0 in float16 and "
            "the first step gives NaN; train in float32 (model.float()) and convert afterwards, "
            "or use bfloat16"
        )


def check_numbers(**values: float | None) -> None:
    """Refuse a non-finite or non-positive ``lr``/``clip_grad_norm`` and a bad ``weight_decay``."""
    for name, value in values.items():
        if value is None and name == "clip_grad_norm":
            continue
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if (
            not ok
            or not math.isfinite(value)
            or value < 0
            or (value == 0 and name != "weight_decay")
        ):
            low = ">= 0" if name == "weight_decay" else "> 0"
            raise ValueError(f"{name} must be a finite number {low}, got {value!r}")


def _shape(data: Any) -> tuple[int, ...] | str:
    """The shape of a tensor, ``(N, D)`` of a row source, or the type name of anything else."""
    if isinstance(data, torch.Tensor):
        return tuple(data.shape)
    if isinstance(data, RowSource) and not isinstance(data, (list, tuple, dict, str)):
        return (len(data), num_columns(data)) if len(data) else (0,)
    return type(data).__name__


def check_args(
    train: Rows,
    val: Rows | None,
    train_context: Rows | None,
    val_context: Rows | None,
    batch_size: int,
    max_epochs: int,
    lr_schedule: str | None,
) -> None:
    """Refuse data of the wrong type or shape and inconsistent options, naming the argument."""
    for name, data in (("train", train), ("val", val), ("train_context", train_context)):
        require_rows(data, name)
    require_rows(val_context, "val_context")
    shape = _shape(train)
    if not isinstance(shape, tuple) or len(shape) != 2 or shape[0] == 0:
        raise ValueError(f"train must be a non-empty (N, D) tensor, got {shape}")
    if val is not None:
        val_shape = _shape(val)
        ok = isinstance(val_shape, tuple) and len(val_shape) == 2 and val_shape[0] > 0
        if not ok or val_shape[1] != shape[1]:
            raise ValueError(f"val must be a non-empty (M, {shape[1]}) tensor, got {val_shape}")
    for name, c, x in (("train_context", train_context, train), ("val_context", val_context, val)):
        if c is not None and (x is None or len(c) != len(x)):
            raise ValueError(f"{name} must have one row per example")
    if val is not None and (train_context is None) != (val_context is None):
        raise ValueError("give contexts for both train and val, or for neither")
    if batch_size < 1 or max_epochs < 0:
        raise ValueError("batch_size must be >= 1 and max_epochs >= 0")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
