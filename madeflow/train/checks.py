"""Check what :func:`madeflow.fit` is given before it trains.

:func:`check_args` and :func:`check_numbers` refuse data that are not ``(N, D)`` tensors or row
sources (a NumPy array gets a ``TypeError`` saying how to convert it), inconsistent contexts and
non-finite or non-positive learning rates; :func:`check_model` refuses float16 parameters. A saved
training state is checked by :func:`madeflow.train.state.check_state`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

from madeflow.data.rows import Rows, RowSource, num_columns
from madeflow.train.evaluation import require_rows

__all__ = ["LR_SCHEDULES", "check_args", "check_model", "check_numbers"]

LR_SCHEDULES = (None, "constant", "cosine")
"""The learning-rate schedules :func:`madeflow.fit` knows."""


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
