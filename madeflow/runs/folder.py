"""Run folders, read and written here: one module for every file ``madeflow fit`` leaves behind.

A run folder holds:

* ``config.json``: the ``data``, ``model`` and ``training`` settings (checked on reading by
  :func:`madeflow.runs.integrity.check_config`) and the ``fingerprints`` of the training data file
  and of ``model.pt`` (SHA-256 and size; the data's shape too);
* ``model.pt``: ``model_name``, the best weights (``model``) and the standardisation statistics
  (``data_space``, see :class:`madeflow.data.DataSpace`);
* ``metrics.json``: the training :class:`~madeflow.History` and the final scores (strict JSON: a
  number that is not defined is ``null``);
* ``train_state.pt`` while training: ``model_name`` and the state :func:`madeflow.fit` resumes
  from;
* pictures (drawn by the command line) and a ``.lock`` held while ``madeflow fit`` writes.

Files are written atomically and tensors loaded with ``weights_only=True``
(:mod:`madeflow.runs.safe_io`). :func:`load_run` is the Python entry point to a finished run;
everything it reads is validated first, and a ``model.pt`` that is not the one the run saved is
refused. A data file that changed since ``fit`` is reported by :func:`data_drift`, and each
command decides (see ``docs/reliability.md``).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from madeflow.data.files import path_problem
from madeflow.data.preprocessing import DataSpace
from madeflow.models import model_from_config
from madeflow.runs.integrity import check_checkpoint, check_config
from madeflow.runs.safe_io import (
    CheckpointError,
    finite_or_none,
    load_json,
    load_tensors,
    save_json,
    save_tensors,
)
from madeflow.train.state import TrainingStateError, check_state, upgrade

__all__ = [
    "CONFIG",
    "METRICS",
    "MODEL",
    "STATE",
    "RunWarning",
    "build_from_config",
    "check_model_file",
    "data_drift",
    "data_path",
    "fingerprint",
    "load_run",
    "load_weights",
    "read_config",
    "read_history",
    "read_state",
    "record_data_fingerprint",
    "write_config",
    "write_metrics",
    "write_model",
    "write_state",
]

CONFIG, MODEL, METRICS, STATE = "config.json", "model.pt", "metrics.json", "train_state.pt"
"""The file names of a run folder."""

_CHUNK = 1 << 20


class RunWarning(UserWarning):
    """A run folder was used although something in it changed (``force=True``)."""


# ----------------------------------------------------------------------------- writing
def write_config(folder: Path, config: dict[str, Any]) -> None:
    """Write ``config.json`` (atomically; :class:`CheckpointError` if it cannot be written)."""
    save_json(config, folder / CONFIG)


def write_state(folder: Path, model_name: str, state: dict[str, Any]) -> None:
    """Write ``train_state.pt``: the state of :meth:`madeflow.EpochEnd.state` to resume from."""
    save_tensors({"model_name": model_name, "state": state}, folder / STATE)


def write_model(
    folder: Path, config: dict[str, Any], model: torch.nn.Module, space: DataSpace
) -> None:
    """Write ``model.pt`` and record its fingerprint in ``config`` (then write the config)."""
    weights = {
        "model_name": config["model"]["name"],
        "model": model.state_dict(),
        "data_space": space.state(),
    }
    save_tensors(weights, folder / MODEL)
    config.setdefault("fingerprints", {})["model"] = fingerprint(folder / MODEL)


def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json``; NaN and infinite numbers become ``null`` (strict JSON)."""
    save_json(finite_or_none(metrics), folder / METRICS)


def record_data_fingerprint(config: dict[str, Any], shape: tuple[int, int]) -> None:
    """Record the training data file's fingerprint and ``(rows, columns)`` in ``config``.

    Nothing for digits and toy data (no file), nor when one is recorded already (a resumed run
    keeps the one of the data it was fitted on).
    """
    source = data_path(config["data"])
    prints = config.setdefault("fingerprints", {})
    if source is not None and "data" not in prints:
        prints["data"] = {**fingerprint(source), "shape": list(shape)}


# ----------------------------------------------------------------------------- reading
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
            recorded (with a :class:`RunWarning`) instead of refusing it.

    Returns:
        ``(config dict, model, DataSpace)``.

    Raises:
        CheckpointError: If the folder is not a complete run, anything in it is damaged or does
            not match its config, or ``model.pt`` is not the one this run saved.
    """
    folder = Path(folder)
    config = read_config(folder)
    if not os.path.lexists(folder / MODEL) and (folder / STATE).is_file():
        raise CheckpointError(
            f"{folder} has no model.pt yet: the run has not finished; finish it with madeflow "
            f"fit --resume --out {folder}"
        )
    ckpt = load_tensors(folder / MODEL, map_location=device)
    if ckpt.get("model_name") != config["model"]["name"]:
        raise CheckpointError(
            f"{folder}/model.pt holds a {ckpt.get('model_name')!r} model but config.json "
            f"describes {config['model']['name']!r}"
        )
    model = build_from_config(config, device)
    check_checkpoint(ckpt, model, config, folder / MODEL)
    load_weights(model, ckpt["model"], folder / MODEL)
    model.eval()
    data = config["data"]
    space = DataSpace.from_state(ckpt.get("data_space", {}), data["kind"], data["alpha"])
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
    path = folder / CONFIG
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


def read_history(folder: Path) -> dict[str, list[float]]:
    """The training curves of ``metrics.json`` (``null`` entries read as NaN).

    Returns:
        ``{"train_log_lik": [...], "val_log_lik": [...]}``.

    Raises:
        CheckpointError: If the file is missing or unreadable.
        KeyError, TypeError, ValueError: If it does not hold the curves.
    """
    hist = load_json(folder / METRICS)["history"]
    curves = ("train_log_lik", "val_log_lik")
    return {k: [math.nan if v is None else float(v) for v in hist[k]] for k in curves}


def read_state(folder: Path, config: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """The training state in ``train_state.pt``, checked against the model before any use.

    Args:
        folder: The run folder.
        config: The run's checked config.
        model: The model built from it (its MADE buffers check the saved ones on loading).

    Returns:
        The state dict for ``fit(state=...)``.

    Raises:
        CheckpointError: If the file is unreadable, of another model, or any field is damaged.
    """
    path = folder / STATE
    ckpt = load_tensors(path, map_location="cpu")
    if ckpt.get("model_name") != config["model"]["name"]:
        raise CheckpointError(f"{path} belongs to another model type")
    state = ckpt.get("state")
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise CheckpointError(f"{path} holds no training state; delete it to start the run again")
    state = upgrade(state)
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


# ----------------------------------------------------------------------------- fingerprints
def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """SHA-256 and size of a file, read in 1 MiB chunks.

    Args:
        path: A file.

    Returns:
        ``{"sha256": hex digest, "size": bytes}``.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size}


def _same(recorded: dict[str, Any], path: Path) -> tuple[bool, str]:
    """Whether ``path`` still has the recorded fingerprint, and how it differs if not."""
    try:
        size = path.stat().st_size
    except OSError as err:
        return False, f"cannot be read ({err.strerror})"
    if size != recorded["size"]:
        return False, f"its size changed from {recorded['size']} to {size} bytes"
    if fingerprint(path)["sha256"] != recorded["sha256"]:
        return False, "its contents changed (same size, different SHA-256)"
    return True, ""


def check_model_file(
    folder: Path, config: dict[str, Any], force: bool = False, action: str = "using it"
) -> None:
    """Refuse a ``model.pt`` that is not the one this run wrote (its fingerprint differs).

    A ``config.json`` without a model fingerprint (a run killed while saving, or written by an
    older madeflow) gives a :class:`RunWarning` and no check.

    Args:
        folder: The run folder.
        config: Its checked config.
        force: Warn (:class:`RunWarning`) instead of refusing.
        action: What would happen to the file, for the message (``"resuming would overwrite
            it"``).

    Raises:
        CheckpointError: If the fingerprint recorded in ``config.json`` does not match.
    """
    recorded = config.get("fingerprints", {}).get("model")
    path = folder / MODEL
    if not path.is_file():
        return  # a missing file gets load_tensors' own message, and a fresh resume writes it
    if recorded is None:
        warnings.warn(
            f"{folder}/config.json records no fingerprint of model.pt, so it cannot be checked "
            f"(the run was killed while saving, or an older madeflow wrote it); madeflow fit "
            f"--resume --out {folder} records one",
            RunWarning,
            stacklevel=3,
        )
        return
    same, how = _same(recorded, path)
    if same:
        return
    problem = (
        f"{path} is not the model this run saved ({how}): it may come from another run, or "
        "the run was killed while saving it"
    )
    if not force:
        raise CheckpointError(
            f"{problem}; restore it, or pass --force (force=True) to go on {action}"
        )
    warnings.warn(f"{problem}; going on {action} (--force)", RunWarning, stacklevel=3)


def data_path(data: dict[str, Any]) -> Path | None:
    """The file a run's ``data`` section reads (``None`` for digits and toy data)."""
    if data["kind"] != "file":
        return None
    path, _, key = data["source"].partition(".npz:")
    return Path(path + ".npz" if key else path)


def data_drift(config: dict[str, Any]) -> str | None:
    """How the training data file differs from the one ``fit`` read, or ``None``.

    Args:
        config: A checked run config.

    Returns:
        ``None`` if the file is unchanged, missing (its reader says so), not a file, or no
        fingerprint was recorded; else a sentence naming the file and what changed.
    """
    path = data_path(config["data"])
    recorded = config.get("fingerprints", {}).get("data")
    if path is None or recorded is None or not path.is_file():
        return None
    same, how = _same(recorded, path)
    return None if same else f"the data file {path} changed since this run was fitted ({how})"
