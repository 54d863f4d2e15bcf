"""What ``madeflow fit --resume`` may change, and the training state it resumes from.

A resumed run keeps the settings recorded in its ``config.json``: :func:`resume_conflicts` lists
every flag given with another value (only ``--max-epochs`` may change), and
:func:`read_state` reads ``train_state.pt`` and checks every field against the model before
anything is written or applied.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from madeflow.cli.data import data_config
from madeflow.data.files import DataError
from madeflow.runs.safe_io import CheckpointError, load_tensors
from madeflow.train.state import TrainingStateError, check_state

__all__ = ["read_state", "resume_conflicts"]

# Flags that --resume cannot change: where config.json records each (``not`` inverts a flag).
_RECORDED = {
    "model": ("model", "name"),
    "hidden": ("model", "options", "hidden_dims"),
    "num_transforms": ("model", "options", "num_transforms"),
    "num_components": ("model", "options", "num_components"),
    "num_masks": ("model", "options", "num_masks"),
    "batch_norm": ("model", "options", "batch_norm"),
    "batch_size": ("training", "batch_size"),
    "lr": ("training", "lr"),
    "weight_decay": ("training", "weight_decay"),
    "patience": ("training", "patience"),
    "clip_grad": ("training", "clip_grad"),
    "seed": ("training", "seed"),
    "toy_size": ("data", "toy_size"),
    "mmap": ("data", "mmap"),
    "no_standardize": ("not", "data", "standardize"),
    "no_dequantize": ("not", "training", "dequantize"),
}


def resume_conflicts(args: argparse.Namespace, config: dict[str, Any]) -> list[str]:
    """The settings given with ``--resume`` whose value differs from the recorded one.

    Args:
        args: The parsed ``madeflow fit`` arguments.
        config: The run's checked ``config.json``.

    Returns:
        One ``"--flag VALUE (recorded: X)"`` per conflicting setting (empty: none).
    """
    out = []
    for name, where in _RECORDED.items():
        given = getattr(args, name, None)
        if given is None or given is False:
            continue  # not given (store_true flags are False when absent)
        invert = where[0] == "not"
        value: Any = config
        for key in where[invert:]:
            value = value[key]
        recorded = (not value) if invert else value
        if given != recorded:
            flag = "--" + name.replace("_", "-")
            shown = "" if given is True else " " + " ".join(map(str, _as_list(given)))
            out.append(f"{flag}{shown} (recorded: {_recorded_text(recorded)})")
    if args.data is not None:
        try:
            source = data_config(args.data)["source"]
        except DataError:
            source = args.data
        if source != config["data"]["source"]:
            out.append(f"data {args.data} (recorded: {config['data']['source']})")
    return out


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _recorded_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return " ".join(map(str, _as_list(value)))


def read_state(path: Path, config: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """The training state in ``train_state.pt``, checked against the model before any use.

    Args:
        path: The ``train_state.pt`` file.
        config: The run's checked config.
        model: The model built from it (its MADE buffers check the saved ones on loading).

    Returns:
        The state dict for ``fit(state=...)``.

    Raises:
        CheckpointError: If the file is unreadable, of another model, or any field is damaged.
    """
    ckpt = load_tensors(path, map_location="cpu")
    if ckpt.get("model_name") != config["model"]["name"]:
        raise CheckpointError(f"{path} belongs to another model type")
    state = ckpt.get("state")
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise CheckpointError(f"{path} holds no training state; delete it to start the run again")
    try:
        check_state(state, model)
        # Loading runs the MADE buffer checks; fit loads the same weights again.
        model.load_state_dict(state["best_model"])
        model.load_state_dict(state["model"])
    except (TrainingStateError, ValueError) as err:
        raise CheckpointError(
            f"{path} is damaged: {err}; delete it to start the run again from scratch"
        ) from err
    return state
