"""Run folders: rebuild a trained model and its data map from ``config.json`` and ``model.pt``.

A run folder (written by ``madeflow fit``) holds ``config.json`` (data, model and training
settings), ``model.pt`` (best weights, model name, standardisation statistics), ``metrics.json``,
pictures, and ``train_state.pt`` for ``--resume``. :func:`load_run` is the Python entry point to a
finished run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from madeflow.checkpoint import FORMAT_VERSION, CheckpointError, load_json, load_tensors
from madeflow.cli_data import DataSpace
from madeflow.models import model_from_config

__all__ = ["build_from_config", "load_run", "read_config"]


def load_run(
    folder: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[dict[str, Any], torch.nn.Module, DataSpace]:
    """Load a finished run: ``(config, model, space)`` with the best weights, in eval mode.

    Args:
        folder: The run folder.
        device: Where to put the model.

    Returns:
        ``(config dict, model, DataSpace)``.

    Raises:
        CheckpointError: If the folder is not a complete run or does not match its config.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a madeflow run (no config.json)")
    config = read_config(folder)
    ckpt = load_tensors(folder / "model.pt", map_location=device)
    if ckpt.get("model_name") != config["model"]["name"]:
        raise CheckpointError(
            f"{folder}/model.pt holds a {ckpt.get('model_name')!r} model but config.json "
            f"describes {config['model']['name']!r}"
        )
    model = build_from_config(config, device)
    load_weights(model, ckpt["model"], folder / "model.pt")
    model.eval()
    space = DataSpace.from_state(config["data"], ckpt.get("data_space", {}))
    if space.standardizer is not None:
        space.standardizer.to(device)
    return config, model, space


def read_config(folder: Path) -> dict[str, Any]:
    """Read and version-check ``folder/config.json``."""
    config = load_json(folder / "config.json")
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        version = config.get("format_version") if isinstance(config, dict) else None
        raise CheckpointError(
            f"{folder}/config.json has format version {version!r}; this madeflow reads "
            f"{FORMAT_VERSION}"
        )
    return config


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
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{where} does not fit the model in config.json: {first}") from err
