"""Run folders: rebuild a trained model and its data map from ``config.json`` and ``model.pt``.

A run folder (written by ``madeflow fit``) holds ``config.json`` (data, model and training
settings), ``model.pt`` (best weights, model name, standardisation statistics), ``metrics.json``,
pictures, and ``train_state.pt`` for ``--resume``. :func:`load_run` is the Python entry point to a
finished run. Everything read is validated first (:mod:`madeflow.runs.integrity`), and a
``model.pt`` that is not the one the run saved is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from madeflow.data.files import path_problem
from madeflow.data.preprocessing import DataSpace
from madeflow.models import model_from_config
from madeflow.runs.integrity import check_checkpoint, check_config, check_model_file
from madeflow.runs.safe_io import CheckpointError, load_json, load_tensors

__all__ = ["build_from_config", "load_run", "read_config"]


def load_run(
    folder: str | os.PathLike, device: torch.device | str = "cpu", force: bool = False
) -> tuple[dict[str, Any], torch.nn.Module, DataSpace]:
    """Load a finished run: ``(config, model, space)`` with the best weights, in eval mode.

    ``config.json`` and ``model.pt`` are validated before anything is built from them
    (:mod:`madeflow.runs.integrity`).

    Args:
        folder: The run folder.
        device: Where to put the model.
        force: Use a ``model.pt`` whose fingerprint differs from the one ``config.json``
            recorded (with a :class:`~madeflow.runs.integrity.RunWarning`) instead of refusing it.

    Returns:
        ``(config dict, model, DataSpace)``.

    Raises:
        CheckpointError: If the folder is not a complete run, anything in it is damaged or does
            not match its config, or ``model.pt`` is not the one this run saved.
    """
    folder = Path(folder)
    config = read_config(folder)
    if not os.path.lexists(folder / "model.pt") and (folder / "train_state.pt").is_file():
        raise CheckpointError(
            f"{folder} has no model.pt yet: the run has not finished; finish it with madeflow "
            f"fit --resume --out {folder}"
        )
    ckpt = load_tensors(folder / "model.pt", map_location=device)
    if ckpt.get("model_name") != config["model"]["name"]:
        raise CheckpointError(
            f"{folder}/model.pt holds a {ckpt.get('model_name')!r} model but config.json "
            f"describes {config['model']['name']!r}"
        )
    model = build_from_config(config, device)
    check_checkpoint(ckpt, model, config, folder / "model.pt")
    load_weights(model, ckpt["model"], folder / "model.pt")
    model.eval()
    space = DataSpace.from_state(config["data"], ckpt.get("data_space", {}))
    if space.standardizer is not None:
        space.standardizer.to(device)
    # Last, so a damaged file gets the specific message above, a valid foreign one this.
    check_model_file(folder, config, force=force)
    return config, model, space


def read_config(folder: Path) -> dict[str, Any]:
    """Read ``folder/config.json`` and check every value (:func:`.integrity.check_config`).

    Raises:
        CheckpointError: If the folder is not a run, or its config is unreadable or invalid.
    """
    problem = path_problem(folder, "run folder")
    if problem is not None and "symbolic link" in problem:
        raise CheckpointError(problem)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a madeflow run (not a folder)")
    path = folder / "config.json"
    if path_problem(path) is not None and not os.path.lexists(path):
        raise CheckpointError(f"{folder} is not a madeflow run (no config.json)")
    return check_config(load_json(path), path)


def build_from_config(
    config: dict[str, Any], device: torch.device | str, error: type[Exception] = CheckpointError
) -> torch.nn.Module:
    """Build the float32 model a run config describes, on ``device``; ``error`` on bad settings."""
    try:
        model = model_from_config(config["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise error(f"invalid model settings: {err}") from err
    return model.to(device=device, dtype=torch.float32)


def load_weights(model: torch.nn.Module, state: dict[str, Any], where: Path) -> None:
    """Load a ``state_dict`` strictly, as a :class:`CheckpointError` on mismatch."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        text = "; ".join(lines[1:3] if lines[0].startswith("Error(s) in loading") else lines[:1])
        raise CheckpointError(f"{where} does not fit the model in config.json: {text}") from err
