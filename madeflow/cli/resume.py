"""``madeflow fit --resume``: the run to continue, and what it may change.

A resumed run keeps the settings recorded in its ``config.json``: :func:`resume_conflicts` lists
every flag given with another value (only ``--max-epochs`` may change). :func:`resume_config`
reads the run's config back and refuses, before any other rank is told to start, a foreign
``model.pt``, changed settings and a data file that changed since ``fit`` (unless ``--force``).
The training state itself is read by :func:`madeflow.runs.folder.read_state`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from madeflow.cli.data import data_config
from madeflow.cli.errors import UsageError, say
from madeflow.data.files import DataError
from madeflow.runs.folder import CONFIG, check_model_file, data_drift, read_config
from madeflow.runs.safe_io import CheckpointError

__all__ = ["resume_config", "resume_conflicts"]

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


def resume_config(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """The config and folder of the run ``--resume --out FOLDER`` continues.

    Returns:
        ``(config, folder)``; ``config`` has the new ``--max-epochs`` if one was given.

    Raises:
        UsageError: Without ``--out``, or for settings that differ from the recorded ones.
        CheckpointError: If the folder is not a run, or its ``model.pt`` is not the one it saved.
        DataError: If the data file changed since ``fit`` (without ``--force``).
    """
    if not args.out:
        raise UsageError("--resume needs --out RUN_FOLDER")
    out = Path(args.out)
    if not (out / CONFIG).is_file():
        raise CheckpointError(f"cannot resume: {out} is not a madeflow run (no config.json)")
    config = read_config(out)
    check_model_file(out, config, args.force, action="resuming, which overwrites it")
    conflicts = resume_conflicts(args, config)
    if conflicts:
        raise UsageError(
            f"--resume continues {out} with the settings in its config.json, but "
            f"{', '.join(conflicts)} differ; drop them (only --max-epochs may change), or "
            "start a new run with another --out"
        )
    drift = data_drift(config)  # before any other rank is told to start
    if drift is not None and not args.force:
        raise DataError(
            f"{drift}; resuming would train on other data. Restore it, or pass --force to "
            "go on with its new contents"
        )
    if drift is not None:
        say(False, f"madeflow: warning: {drift}; going on with its new contents (--force)")
        config["fingerprints"].pop("data")  # recorded anew once the data are read
    if args.max_epochs is not None:
        config["training"]["max_epochs"] = args.max_epochs
    return config, out
