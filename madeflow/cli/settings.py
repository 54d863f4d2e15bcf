"""The settings of ``madeflow fit``: the defaults table, and the run config built from the flags.

Model options come from one table, :data:`madeflow.models.DEFAULTS` (the registry's, which
:func:`madeflow.build_model` uses too); :data:`FIT_DEFAULTS` holds the rest (data, training). Both
are kept out of argparse, so ``--resume`` can tell which flags were given.

Four settings are sized to the data once it is read (:func:`sized_defaults`): the hidden width,
the batch size, the number of epochs and the patience, so a 2-D toy trains a small model in
seconds while the digits keep the settings of the measured main job. A flag given on the command
line always wins; the values used, and what they were sized to, are recorded in ``config.json``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path
from typing import Any

import torch

from madeflow.cli.data import data_config
from madeflow.cli.errors import UsageError
from madeflow.models import DEFAULTS
from madeflow.runs.safe_io import FORMAT_VERSION

__all__ = [
    "EXAMPLES_SEEN",
    "FIT_DEFAULTS",
    "MODEL_FLAGS",
    "SIZED",
    "device_from",
    "new_config",
    "out_folder",
    "size_to_data",
    "sized_defaults",
]

# Defaults of `madeflow fit`: the no-argument run (MAF-MoG, 5 layers of [256, 256], on logit
# digits with fresh dequantization noise per batch) early-stops after ~65 epochs, about 1 minute
# on one busy CPU core, at about -52 nats/image on test.
FIT_DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "max_epochs": "sized",
    "batch_size": "sized",
    "lr": 1e-3,
    "weight_decay": 1e-6,
    "patience": "sized",
    "clip_grad": 10.0,
    "seed": 0,
    "toy_size": 10000,
    "hidden": "sized",
}
"""Data and training defaults of ``madeflow fit``; ``"sized"``: see :func:`sized_defaults`.

The other model options come from :data:`madeflow.models.DEFAULTS` (see :data:`MODEL_FLAGS`).
"""

SIZED = {
    "hidden": ("model", "options", "hidden_dims"),
    "batch_size": ("training", "batch_size"),
    "max_epochs": ("training", "max_epochs"),
    "patience": ("training", "patience"),
}
"""The flags sized to the data when not given, and where ``config.json`` records each."""

EXAMPLES_SEEN = 400_000
"""Training examples the sized ``--epochs`` lets a run see (about 300 epochs of the digits)."""


def sized_defaults(
    input_dim: int, train_rows: int, max_epochs: int | None = None
) -> dict[str, Any]:
    """The defaults of the flags in :data:`SIZED` for data of this shape.

    * hidden widths ``[w, w]`` with ``w = 4 D`` kept in ``[64, 256]`` (256 for the digits'
      ``D = 64``; 64 for a 2-D toy, about 30k parameters instead of 420k);
    * batch size: a tenth of the training rows, in whole hundreds within ``[100, 1000]``, so an
      epoch is about ten steps (100 for the digits' 1258 rows);
    * epochs: enough to see :data:`EXAMPLES_SEEN` training examples, within ``[20, 300]``
      (300 for the digits, 50 for a 10,000-point toy);
    * patience: a fifth of the epochs (``max_epochs`` if given), within ``[10, 30]`` (30 for
      the digits).

    Args:
        input_dim: Columns of the data, ``D``.
        train_rows: Rows of the training split.
        max_epochs: The epochs the run was given, if any (the patience follows them).

    Returns:
        ``{"hidden": [w, w], "batch_size": ..., "max_epochs": ..., "patience": ...}``.

    Example:
        >>> sized_defaults(64, 1258)
        {'hidden': [256, 256], 'batch_size': 100, 'max_epochs': 300, 'patience': 30}
        >>> sized_defaults(2, 8000)  # a 2-D toy of 10,000 points, 80% of them for training
        {'hidden': [64, 64], 'batch_size': 800, 'max_epochs': 50, 'patience': 10}
    """
    width = min(256, max(64, 4 * input_dim))
    batch = min(1000, max(100, train_rows // 10 // 100 * 100))
    epochs = min(300, max(20, math.ceil(EXAMPLES_SEEN / max(train_rows, 1))))
    return {
        "hidden": [width, width],
        "batch_size": batch,
        "max_epochs": epochs,
        "patience": min(30, max(10, (epochs if max_epochs is None else max_epochs) // 5)),
    }


def size_to_data(config: dict[str, Any], input_dim: int, train_rows: int) -> None:
    """Fill the settings a new run left to the data (``None`` in ``config``) in place.

    What they were sized to is recorded under ``training.sized_to_data``. A run whose settings
    are all given, or already filled (a resumed run), is left as it is.
    """
    sized = sized_defaults(input_dim, train_rows, config["training"]["max_epochs"])
    filled = []
    for flag, where in SIZED.items():
        section = config
        for key in where[:-1]:
            section = section[key]
        if section[where[-1]] is None:
            section[where[-1]] = sized[flag]
            filled.append(flag)
    if filled:
        config["training"]["sized_to_data"] = {
            "input_dim": input_dim,
            "train_rows": train_rows,
            "flags": filled,
        }


MODEL_FLAGS = {
    "hidden": "hidden_dims",
    "num_transforms": "num_transforms",
    "num_components": "num_components",
    "num_masks": "num_masks",
}
"""Flags of ``madeflow fit`` -> the model options (defaults in :data:`madeflow.models.DEFAULTS`)."""

_TRAINING = ("max_epochs", "batch_size", "lr", "weight_decay", "patience", "clip_grad")


def device_from(name: str) -> torch.device:
    """``auto``/``cpu``/``cuda`` -> a device (``auto`` picks CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA device is available")
    return torch.device(name)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of a new run: the flag's value, else its default."""
    given = {k: getattr(args, k, None) for k in FIT_DEFAULTS}
    out = {k: (FIT_DEFAULTS[k] if v is None and k not in SIZED else v) for k, v in given.items()}
    for flag, option in MODEL_FLAGS.items():
        value = getattr(args, flag, None)
        if flag not in SIZED:
            out[flag] = copy.deepcopy(DEFAULTS[option]) if value is None else value
    return out  # None: sized to the data once it is read (size_to_data)


def _check_settings(s: dict[str, Any]) -> None:
    """Refuse impossible training numbers before anything is written."""
    for key, low in (("max_epochs", 0), ("batch_size", 1), ("patience", 0), ("toy_size", 3)):
        if s[key] is not None and s[key] < low:
            raise UsageError(f"--{key.replace('_', '-')} must be >= {low}, got {s[key]}")
    for key in ("lr", "weight_decay", "clip_grad"):
        if not s[key] >= 0 or (key == "lr" and s[key] == 0):
            raise UsageError(f"--{key.replace('_', '-')} must be a positive number, got {s[key]}")


def _model_name(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """``--model``, else ``maf-mog`` (``made-bernoulli`` for binary digits); refuse a bad pair."""
    name = args.model or ("made-bernoulli" if data["kind"] == "digits-binary" else "maf-mog")
    if name == "made-bernoulli" and data["kind"] not in ("digits-binary", "file"):
        raise UsageError("made-bernoulli models binary data: use digits-binary or a 0/1 file")
    if data["kind"] == "digits-binary" and name != "made-bernoulli":
        raise UsageError(f"digits-binary is binary: use --model made-bernoulli, not {name}")
    return name


def new_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config of a new run from the ``madeflow fit`` flags (``input_dim`` still 0).

    The settings in :data:`SIZED` that no flag gave are ``None`` until :func:`size_to_data`.

    Raises:
        UsageError: For impossible numbers or a model that does not fit the data.
        DataError: For a data source that cannot be used as asked (``--mmap`` on a CSV).
    """
    s = _settings(args)
    _check_settings(s)
    data = data_config(
        s["data"],
        seed=s["seed"],
        toy_size=s["toy_size"],
        standardize=not args.no_standardize,
        mmap=bool(getattr(args, "mmap", False)),
    )
    name = _model_name(args, data)
    if name == "made-bernoulli":
        data["standardize"] = False
    training = {k: s[k] for k in _TRAINING}
    training["seed"] = s["seed"]
    training["dequantize"] = data["kind"] == "digits" and not args.no_dequantize
    model = {option: s[flag] for flag, option in MODEL_FLAGS.items()}
    model.update(batch_norm=bool(args.batch_norm), seed=s["seed"])
    return {
        "format_version": FORMAT_VERSION,
        "data": data,
        "model": {"name": name, "input_dim": 0, "options": model},
        "training": training,
    }


def out_folder(args: argparse.Namespace, config: dict[str, Any]) -> Path:
    """``--out``, else ``runs/<model>-<data>-<time>``."""
    if args.out:
        return Path(args.out)
    if args.resume:
        raise UsageError("--resume needs --out RUN_FOLDER")
    data = config["data"]
    src = Path(data["source"]).stem if data["kind"] == "file" else data["source"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config['model']['name']}-{src}-{stamp}"
