"""Run-folder integrity: what each value of a run folder may be, checked before anything is built.

Everything :func:`madeflow.load_run` and ``madeflow fit --resume`` read is checked before
anything is built from it:

* :func:`check_config`: every value of ``config.json`` has the right type and a sane range
  (model sizes are capped by :func:`madeflow.models.model_config`), so a tampered file is refused
  with one line naming the key instead of building ``10**6`` layers or reading ``"false"`` as
  true.
* :func:`check_checkpoint`: ``model.pt`` holds the fields a run writes, its weights are finite
  tensors of the right kind, batch-norm variances and standardisation scales are positive. MADE
  orderings and degrees are checked by :class:`madeflow.MADE` itself when loaded.

Tampering and drift (the fingerprints of ``model.pt`` and of the data file) are noticed where the
files are read and written, in :mod:`madeflow.runs.folder`.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path
from typing import Any

import torch

from madeflow.data.toy import TOY_DATASETS
from madeflow.models import model_config
from madeflow.runs.safe_io import FORMAT_VERSION, CheckpointError

__all__ = ["MAX_TOY_SIZE", "check_checkpoint", "check_config"]

MAX_TOY_SIZE = 10**7
"""Most points a run may draw from a toy density (160 MB as float64)."""

DATA_KINDS = ("digits", "digits-binary", "toy", "file")
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ----------------------------------------------------------------------------- config.json
def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_config(config: Any, where: str | os.PathLike) -> dict[str, Any]:
    """Check every value of a run's ``config.json`` before anything is built from it.

    Args:
        config: The parsed JSON.
        where: The file, for messages.

    Returns:
        ``config``, unchanged.

    Raises:
        CheckpointError: One line naming the first bad key, its value and what it must be.
    """
    check = _ConfigCheck(config, where)
    if not isinstance(config, dict):
        raise check.fail("the file", f"holds a {type(config).__name__}, not a JSON object")
    version = config.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format version {version!r}; this madeflow reads {FORMAT_VERSION}"
        )
    for section in ("data", "model", "training"):
        if not isinstance(config.get(section), dict):
            raise check.fail(section, f"must be a JSON object, got {config.get(section)!r}")
    check.data()
    check.model()
    check.training()
    check.fingerprints()
    return config


class _ConfigCheck:
    """The checks of :func:`check_config`, one method per section of the file."""

    def __init__(self, config: Any, where: str | os.PathLike) -> None:
        self.config, self.where = config, where

    def fail(self, key: str, what: str) -> CheckpointError:
        return CheckpointError(f"{self.where}: {key} {what}; restore the file or start a new run")

    def need(self, section: str, key: str, ok: bool, what: str) -> None:
        if not ok:
            got = self.config[section].get(key)
            raise self.fail(f"{section}.{key}", f"must be {what}, got {got!r}")

    def data(self) -> None:
        data, need = self.config["data"], self.need
        need("data", "kind", data.get("kind") in DATA_KINDS, f"one of {DATA_KINDS}")
        source = data.get("source")
        need("data", "source", isinstance(source, str) and source != "", "a name")
        if data["kind"] == "toy":
            need("data", "source", source in TOY_DATASETS, f"one of {sorted(TOY_DATASETS)}")
        need("data", "seed", _is_int(data.get("seed")), "an integer")
        size = data.get("toy_size")
        ok = _is_int(size) and 3 <= size <= MAX_TOY_SIZE
        need("data", "toy_size", ok, f"in [3, {MAX_TOY_SIZE}]")
        alpha = data.get("alpha")
        need("data", "alpha", _is_real(alpha) and 0 < alpha < 0.5, "a number in (0, 0.5)")
        for key in ("standardize", "mmap"):
            need("data", key, isinstance(data.get(key), bool), "true or false")
        columns = data.get("columns", [])  # a CSV file's header, if it had one
        ok = isinstance(columns, list) and all(isinstance(c, str) for c in columns)
        need("data", "columns", ok, "a list of column names")

    def model(self) -> None:
        model = self.config["model"]
        try:
            options = model.get("options")
            if not isinstance(options, dict):
                raise ValueError(f"options must be a JSON object, got {options!r}")
            model_config(model.get("name"), model.get("input_dim"), **options)
        except (TypeError, ValueError) as err:
            raise self.fail("model", f"is invalid: {err}") from None

    def training(self) -> None:
        t, need = self.config["training"], self.need
        for key, low in (("max_epochs", 0), ("batch_size", 1), ("patience", 0)):
            need("training", key, _is_int(t.get(key)) and t[key] >= low, f"an integer >= {low}")
        need("training", "lr", _is_real(t.get("lr")) and t["lr"] > 0, "a finite number > 0")
        for key in ("weight_decay", "clip_grad"):
            need("training", key, _is_real(t.get(key)) and t[key] >= 0, "a finite number >= 0")
        need("training", "seed", _is_int(t.get("seed")), "an integer")
        need("training", "dequantize", isinstance(t.get("dequantize"), bool), "true or false")

    def fingerprints(self) -> None:
        prints = self.config.get("fingerprints", {})
        if not isinstance(prints, dict) or set(prints) - {"data", "model"}:
            raise self.fail("fingerprints", "must be an object with 'data' and 'model' entries")
        for name, entry in prints.items():
            if not _valid_fingerprint(entry):
                raise self.fail(
                    f"fingerprints.{name}", "must hold a sha256 (64 hex digits) and a size"
                )


def _valid_fingerprint(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        return False
    if not _SHA256.fullmatch(entry["sha256"]) or not _is_int(entry.get("size")):
        return False
    shape = entry.get("shape")
    return shape is None or (isinstance(shape, list) and all(_is_int(n) for n in shape))


# ----------------------------------------------------------------------------- model.pt
def check_checkpoint(
    ckpt: dict[str, Any], model: torch.nn.Module, config: dict[str, Any], where: Path
) -> None:
    """Check the fields and tensors of a loaded ``model.pt`` against the model they are for.

    Args:
        ckpt: From :func:`madeflow.runs.safe_io.load_tensors`.
        model: The freshly built model (not yet loaded).
        config: The run's checked config.
        where: The file, for messages.

    Raises:
        CheckpointError: Naming the field and the problem.
    """

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: {what}; the file is damaged or not from this run")

    state = ckpt.get("model")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise fail("'model' is not a state_dict of tensors")
    own = model.state_dict()
    for key, value in state.items():
        mine = own.get(key)
        if mine is None:
            continue  # load_state_dict names unexpected keys
        if value.is_floating_point() != mine.is_floating_point():
            raise fail(f"{key} has dtype {value.dtype}, expected {mine.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise fail(f"{key} holds NaN or Inf")
        if key.endswith("running_var") and not bool((value > 0).all()):
            raise fail(f"{key} holds a variance <= 0")
    space = ckpt.get("data_space", {})
    if not isinstance(space, dict) or set(space) not in (set(), {"mean", "std"}):
        raise fail("'data_space' must be empty or hold 'mean' and 'std'")
    standardized = config["data"]["standardize"]
    if bool(space) != standardized:
        say = "holds" if space else "lacks"
        raise fail(
            f"it {say} standardisation statistics but config.json says standardize="
            f"{str(standardized).lower()}"
        )
    d = config["model"]["input_dim"]
    for name, value in space.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise fail(f"data_space.{name} is not a floating tensor")
        if tuple(value.shape) != (d,):
            raise fail(f"data_space.{name} has shape {tuple(value.shape)}, expected ({d},)")
        if not bool(torch.isfinite(value).all()):
            raise fail(f"data_space.{name} holds NaN or Inf")
    if space and not bool((space["std"] > 0).all()):
        raise fail("data_space.std holds a scale <= 0")
