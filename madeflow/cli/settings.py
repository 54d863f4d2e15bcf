"""The settings of ``madeflow fit``: the defaults table, and the run config built from the flags.

Model options come from one table, :data:`madeflow.models.DEFAULTS` (the registry's, which
:func:`madeflow.build_model` uses too); :data:`FIT_DEFAULTS` holds the rest (data, training). Both
are kept out of argparse, so ``--resume`` can tell which flags were given.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch

from madeflow.cli.data import data_config
from madeflow.cli.errors import UsageError
from madeflow.models import DEFAULTS
from madeflow.runs.safe_io import FORMAT_VERSION

__all__ = ["FIT_DEFAULTS", "MODEL_FLAGS", "device_from", "new_config", "out_folder"]

# Defaults of `madeflow fit`: the no-argument run (MAF-MoG, 5 layers of [256, 256], on logit
# digits with fresh dequantization noise per batch) early-stops after ~65 epochs, about 1 minute
# on one busy CPU core, at about -52 nats/image on test.
FIT_DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "max_epochs": 300,
    "batch_size": 100,
    "lr": 1e-3,
    "weight_decay": 1e-6,
    "patience": 30,
    "clip_grad": 10.0,
    "seed": 0,
    "toy_size": 10000,
}
"""Data and training defaults of ``madeflow fit`` (model options: :data:`MODEL_FLAGS`)."""

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
    out = {k: (FIT_DEFAULTS[k] if v is None else v) for k, v in given.items()}
    for flag, option in MODEL_FLAGS.items():
        value = getattr(args, flag, None)
        out[flag] = copy.deepcopy(DEFAULTS[option]) if value is None else value
    return out


def _check_settings(s: dict[str, Any]) -> None:
    """Refuse impossible training numbers before anything is written."""
    for key, low in (("max_epochs", 0), ("batch_size", 1), ("patience", 0), ("toy_size", 3)):
        if s[key] < low:
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
