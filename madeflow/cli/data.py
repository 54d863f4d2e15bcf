"""Data sources of the command line: digits, toy densities and files, in model and data space.

A run's ``config.json`` stores a ``data`` section (see :func:`data_config`); :func:`prepare` turns
it into train/val/test tensors in *model space* (logits for the dequantized digits, standardised
values for toy and file data, 0/1 for binary digits) plus the map back to *data space* (pixels in
``[0, 1]`` or the file's units) with its log-Jacobian, so likelihoods and samples can be reported
in the user's units. A ``.npy`` file with ``mmap`` stays on disk: its splits are
:class:`~madeflow.data.MemmapRows` read a mini-batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from madeflow.data.files import DataError, Standardizer, load_array, split, split_indices
from madeflow.data.memmap import load_memmap
from madeflow.data.preprocessing import DIGITS, DataSpace
from madeflow.data.rows import Rows, take, to_device
from madeflow.data.toy import TOY_DATASETS, toy_data

__all__ = ["Prepared", "data_config", "is_binary", "prepare"]

TOY_ALIASES = {"two_moons": "moons", "two-moons": "moons", "eight_gaussians": "8gaussians"}


def data_config(
    source: str,
    seed: int = 0,
    toy_size: int = 10000,
    standardize: bool = True,
    alpha: float = 0.05,
    mmap: bool = False,
) -> dict[str, Any]:
    """Describe a data source as JSON.

    Args:
        source: ``digits``, ``digits-binary``, a toy name (``moons``, ...) or a file path
            (``file.npz:NAME`` picks an array).
        seed: Seed of the split (and of the toy draw / digits dequantization).
        toy_size: Number of points drawn for a toy density.
        standardize: Standardise toy and file data with training statistics.
        alpha: Logit-transform constant of the digits.
        mmap: Memory-map a ``.npy`` file instead of loading it.

    Returns:
        The ``data`` section of a run config.

    Raises:
        DataError: If ``mmap`` is asked for anything but a ``.npy`` file.
    """
    name = TOY_ALIASES.get(source, source)
    if source in DIGITS:
        kind = source
    elif name in TOY_DATASETS:
        kind, source = "toy", name
    else:
        kind = "file"
        path, _, key = source.partition(".npz:")
        try:
            resolved = Path(path + (".npz" if key else "")).resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
            raise DataError(
                f"{path} is a symbolic link loop; point it at a real data file"
            ) from None
        source = str(resolved) + (f":{key}" if key else "")
    if mmap and (kind != "file" or Path(source).suffix.lower() != ".npy"):
        raise DataError(f"--mmap needs a .npy file, not {source}")
    return {
        "kind": kind,
        "source": source,
        "seed": seed,
        "toy_size": toy_size,
        "standardize": bool(standardize) and kind in ("toy", "file"),
        "alpha": alpha,
        "mmap": bool(mmap),
    }


@dataclass
class Prepared:
    """Splits in model space and the way back to data space.

    The splits are tensors, or row sources (:class:`~madeflow.data.MemmapRows`) for a
    memory-mapped file.
    """

    train: Rows
    val: Rows
    test: Rows
    space: DataSpace

    def to(self, device: torch.device | str) -> Prepared:
        """The splits on ``device`` (a row source stays where it is: it is read per batch)."""
        train, val, test = (to_device(part, device) for part in (self.train, self.val, self.test))
        return Prepared(train, val, test, self.space)


def prepare(cfg: dict[str, Any], dtype: torch.dtype = torch.float32) -> Prepared:
    """Load and split the data a config describes.

    Args:
        cfg: From :func:`data_config`.
        dtype: Floating dtype of the tensors.

    Returns:
        The :class:`Prepared` splits.

    Raises:
        DataError: If the data cannot be read or is malformed.
    """
    kind = cfg["kind"]
    if kind in DIGITS:
        from madeflow.data.digits import load_digits

        d = load_digits(
            kind="binary" if kind == "digits-binary" else "logit",
            seed=cfg["seed"],
            alpha=cfg["alpha"],
            dtype=dtype,
        )
        space = DataSpace.logit(cfg["alpha"]) if kind == "digits" else DataSpace(kind)
        return Prepared(d.train, d.val, d.test, space)
    if cfg.get("mmap"):
        return _prepare_memmap(cfg, dtype)
    # Standardised data are read and standardised in float64 and narrowed after: values beyond
    # float32's range (1e300) or near it (3e38) become ordinary numbers instead of infinities.
    wide = torch.float64 if cfg["standardize"] else dtype
    if kind == "toy":
        full = toy_data(cfg["source"], cfg["toy_size"], seed=cfg["seed"], dtype=dtype).to(wide)
    else:
        full = load_array(cfg["source"], dtype=wide)
    parts = split(full, seed=cfg["seed"])
    std = _checked(Standardizer.fit(parts.train), cfg) if cfg["standardize"] else None
    space = DataSpace(kind) if std is None else DataSpace.standardized(std, kind)
    if std is None:
        return Prepared(parts.train, parts.val, parts.test, space)
    train, val, test = (std(part).to(dtype) for part in parts)
    return Prepared(train, val, test, space)


def _prepare_memmap(cfg: dict[str, Any], dtype: torch.dtype) -> Prepared:
    """The splits of a memory-mapped ``.npy`` file, never read whole.

    The same rows as the in-memory split; standardisation statistics are accumulated in chunks
    (float64, then ``dtype``).
    """
    wide = torch.float64 if cfg["standardize"] else dtype
    rows = load_memmap(cfg["source"], dtype=wide)
    train, val, test = (rows.subset(i) for i in split_indices(len(rows), seed=cfg["seed"]))
    std = None
    if cfg["standardize"]:
        std = _checked(Standardizer.from_moments(*train.moments()), cfg)
        narrow = _Narrowed(std, dtype)
        train, val, test = (part.with_transform(narrow) for part in (train, val, test))
    space = DataSpace(cfg["kind"]) if std is None else DataSpace.standardized(std, cfg["kind"])
    return Prepared(train, val, test, space)


def _checked(std: Standardizer, cfg: dict[str, Any]) -> Standardizer:
    """Refuse statistics that overflowed (values near float64's limit, memory-mapped)."""
    bad = ~(torch.isfinite(std.mean) & torch.isfinite(std.std))
    if bool(bad.any()):
        cols = (torch.nonzero(bad).flatten() + 1).tolist()
        raise DataError(
            f"{cfg['source']}: the mean or spread of column(s) {cols} overflows float64; "
            "rescale the data"
        )
    return std


class _Narrowed:
    """Standardise float64 rows, then convert them to the model's dtype."""

    def __init__(self, std: Standardizer, dtype: torch.dtype) -> None:
        self.std, self.dtype = std, dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.std(x).to(self.dtype)


def is_binary(*parts: Rows, chunk: int = 1 << 16) -> bool:
    """Whether every value of the splits is 0 or 1, read ``chunk`` rows at a time."""
    for part in parts:
        for start in range(0, len(part), chunk):
            x = take(part, torch.arange(start, min(len(part), start + chunk)))
            if not ((x == 0) | (x == 1)).all():
                return False
    return True
