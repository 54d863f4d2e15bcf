"""Load user data from files, split it reproducibly, and standardise it.

:func:`load_array` reads ``.npy``, ``.npz``, ``.csv`` and ``.pt`` files into an ``(N, D)`` float
tensor with errors that say what is wrong and where (CSV rules: :mod:`madeflow.data.csv_reader`;
a first line ``1.5,2.O`` is a typo, not a header). :func:`split` makes a fixed,
seeded train/val/test split. :class:`Standardizer` maps data to zero mean and unit variance using
training statistics only, and gives the log-Jacobian so likelihoods can be reported in the
original units.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = ["DataError", "Split", "Standardizer", "load_array", "split", "split_indices"]

SUFFIXES = (".npy", ".npz", ".csv", ".pt")


class DataError(ValueError):
    """User data is missing, unreadable, or not a finite ``(N, D)`` array."""


class Split(NamedTuple):
    """A train/validation/test split, each ``(n_part, D)``."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        names = list(z.files)
        if not names:
            raise DataError(f"{path} holds no arrays")
        if key is None:
            if len(names) != 1:
                raise DataError(f"{path} holds several arrays {names}; choose one with {path}:NAME")
            key = names[0]
        if key not in names:
            raise DataError(f"{path} has no array {key!r}; it holds {names}")
        return z[key]


def load_array(
    path: str | os.PathLike,
    key: str | None = None,
    dtype: torch.dtype = torch.float32,
    missing: bool = False,
) -> torch.Tensor:
    """Read an ``(N, D)`` data matrix from a file.

    Args:
        path: A ``.npy``, ``.npz``, ``.csv`` (see the module docstring for its rules) or ``.pt``
            file. For ``.npz`` with several arrays,
            ``key`` (or ``file.npz:NAME``) picks one. ``.pt`` files must hold a tensor and are
            read with ``weights_only=True``. A 1-D array is read as ``N`` one-dimensional points.
        key: Array name inside an ``.npz`` file.
        dtype: Floating dtype of the result.
        missing: Accept NaN as a missing value (an empty CSV cell too); only Inf is refused.

    Returns:
        ``(N, D)`` tensor with ``N >= 2`` (NaN where missing with ``missing=True``).

    Raises:
        DataError: With a message naming the file and, where it applies, the row and column.
    """
    text = os.fspath(path)
    if key is None and ".npz:" in text:
        text, key = text.rsplit(":", 1)
    p = Path(text)
    problem = path_problem(p)
    if problem is not None:
        raise DataError(problem)
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            arr = _read_npz(p, key)
        elif suffix == ".csv":
            from madeflow.data.csv_reader import read_csv  # it imports DataError from here

            arr = read_csv(p, missing=missing)
        elif suffix == ".pt":
            obj = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(obj, torch.Tensor):
                raise DataError(f"{p} must hold a single tensor, found {type(obj).__name__}")
            arr = obj.detach().cpu().to(torch.float64).numpy()
        else:
            raise DataError(f"unsupported data file type {suffix!r} ({p}); use one of {SUFFIXES}")
    except DataError:
        raise
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"cannot read {p}: {msg}") from err
    return _validate(np.asarray(arr), p, dtype, missing)


def _validate(arr: np.ndarray, path: Path, dtype: torch.dtype, missing: bool) -> torch.Tensor:
    arr = as_matrix(arr, path).astype(np.float64)
    bad = np.isinf(arr) if missing else ~np.isfinite(arr)
    bad = bad.any(axis=1)
    if bad.any():
        raise nonfinite_error(path, np.flatnonzero(bad), missing=missing)
    x = torch.from_numpy(arr).to(dtype)
    check_range(x, path)
    return x


def check_range(x: torch.Tensor, path: str | os.PathLike, first_row: int = 0) -> None:
    """Refuse finite values that became infinite when converted to ``x``'s dtype.

    Args:
        x: ``(N, D)`` data already converted (e.g. float64 values cast to float32).
        path: Its file, for the message.
        first_row: Row number of ``x[0]`` in the file (for data checked in chunks).

    Raises:
        DataError: Naming the rows (0-based) and the dtype's range.
    """
    bad = torch.isinf(x).any(dim=1)  # NaN, where allowed, marks a missing value
    if bool(bad.any()):
        rows = (torch.nonzero(bad).flatten() + first_row).tolist()
        shown = ", ".join(str(r) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
        limit = torch.finfo(x.dtype).max
        name = str(x.dtype).replace("torch.", "")
        raise DataError(
            f"{path} has values beyond the range of {name} (|x| > {limit:.3g}) in {len(rows)} "
            f"row(s) (0-based): {shown}; rescale the data"
        )


def path_problem(path: str | os.PathLike, what: str = "data file") -> str | None:
    """Why ``path`` cannot be read as a regular file, or ``None`` if it can.

    Tells apart a missing file, a broken symbolic link, a symbolic link loop and something that
    is not a regular file (a folder, a device).

    Args:
        path: The path.
        what: What the file is, for the message (``"data file"``, ``"checkpoint"``...).

    Returns:
        A message naming the path, or ``None``.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{p} is a symbolic link loop; point it at a real {what}"
        if os.path.islink(p):
            return f"{p} is a broken symbolic link (to {os.readlink(p)}); fix or remove it"
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"{what} not found: {p}"
        return f"cannot open {p}: {err.strerror or err}"
    if not stat.S_ISREG(st.st_mode):
        return f"not a file: {p}"
    return None


def as_matrix(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Check that ``arr`` is a numeric ``(N, D)`` array with ``N >= 2``; 1-D becomes ``(N, 1)``.

    Args:
        arr: The array as read (an ``np.memmap`` stays one: only views are taken).
        path: Its file, for the messages.

    Returns:
        The ``(N, D)`` array or view.

    Raises:
        DataError: If it is not numeric, has the wrong number of dimensions, no columns, or
            fewer than two rows.
    """
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path} holds {arr.dtype} values; expected numbers")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{path} holds an array of shape {arr.shape}; expected (N, D)")
    if arr.shape[1] == 0:
        raise DataError(f"{path} has no columns")
    if arr.shape[0] < 2:
        raise DataError(f"{path} has {arr.shape[0]} row(s); need at least 2 examples")
    return arr


def nonfinite_error(
    path: str | os.PathLike,
    rows: np.ndarray,
    lines: list[int] | None = None,
    missing: bool = False,
) -> DataError:
    """The error for rows holding NaN or Inf, naming the first ten (0-based; and text lines).

    With ``missing`` (NaN marks a missing value) the rows hold Inf, and the message says so.
    """
    more = " ..." if len(rows) > 10 else ""
    shown = ", ".join(str(r) for r in rows[:10]) + more
    where = "" if lines is None else f" (line{'s' * (len(lines) > 1)} "
    where += "" if lines is None else ", ".join(str(n) for n in lines[:10]) + more + ")"
    what = "Inf" if missing else "NaN or Inf"
    hint = "; NaN or an empty cell marks a missing value, Inf is not one" if missing else ""
    return DataError(f"{path} has {what} in {len(rows)} row(s) (0-based): {shown}{where}{hint}")


def split_indices(
    n: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The row numbers of a seeded train/validation/test split of ``n`` examples.

    :func:`split` takes these rows from an in-memory tensor; the memory-mapped loader
    (:mod:`madeflow.data.memmap`) keeps them as an index, so both give the same split.

    Args:
        n: Number of examples, ``n >= 3``.
        fractions: Train, validation and test fractions (normalised to sum to 1). Validation and
            test get at least one example each.
        seed: Seed of the shuffle.

    Returns:
        ``(train, val, test)`` int64 row numbers, shapes ``(n_train,)``, ``(n_val,)``,
        ``(n_test,)``.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions}")
    if n < 3:
        raise DataError(f"need at least 3 examples to split into train/val/test, got {n}")
    total = float(sum(fractions))
    n_val = max(1, math.floor(n * fractions[1] / total))
    n_test = max(1, math.floor(n * fractions[2] / total))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DataError(f"{n} examples are too few for the split {fractions}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def split(
    data: torch.Tensor, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> Split:
    """Shuffle with a fixed seed and cut into train/validation/test.

    Args:
        data: ``(N, D)`` examples with ``N >= 3``.
        fractions: Train, validation and test fractions (normalised to sum to 1). Validation and
            test get at least one example each.
        seed: Seed of the shuffle.

    Returns:
        The :class:`Split` (rows chosen by :func:`split_indices`).
    """
    train, val, test = split_indices(data.shape[0], fractions, seed)
    return Split(data[train], data[val], data[test])


class Standardizer(nn.Module):
    r"""Affine map to zero mean and unit variance, fitted on training data.

    :math:`y = (x - \mu) / \sigma`, so :math:`\log p_x(x) = \log p_y(y) + \log|\det \partial y /
    \partial x| = \log p_y(y) - \sum_d \log \sigma_d`. The statistics are buffers, saved with the
    model's ``state_dict``.

    Args:
        dim: Number of features ``D``.
        min_std: Floor on the standard deviation (constant columns get this scale).

    Example:
        >>> s = Standardizer.fit(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
        >>> s(torch.tensor([[1.0, 1.0]]))
        tensor([[0., 0.]])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int, min_std: float = 1e-6) -> None:
        super().__init__()
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @classmethod
    def fit(cls, train: torch.Tensor, min_std: float = 1e-6) -> Standardizer:
        """Fit mean and standard deviation on ``train`` ``(N, D)``."""
        abs_max = train.abs().amax(0)
        # Divide by each column's largest magnitude first: squares of values near the dtype's
        # limit (1e300 in float64) would overflow.
        scale = torch.where(abs_max > 0, abs_max, torch.ones_like(abs_max))
        unit = train / scale
        std = unit.std(0) * scale if train.shape[0] > 1 else torch.ones_like(train[0])
        return cls.from_moments(unit.mean(0) * scale, std, abs_max, min_std)

    @classmethod
    def from_moments(
        cls, mean: torch.Tensor, std: torch.Tensor, abs_max: torch.Tensor, min_std: float = 1e-6
    ) -> Standardizer:
        """Build from statistics computed elsewhere (e.g. in chunks over a memory-mapped file).

        Args:
            mean: ``(D,)`` column means.
            std: ``(D,)`` column standard deviations (unbiased; ones for a single row).
            abs_max: ``(D,)`` largest absolute value of each column; the floor on the scale is
                ``min_std * max(abs_max, 1)``, so constant columns stay finite.
            min_std: Floor on the standard deviation, relative to the column's magnitude.

        Returns:
            The :class:`Standardizer`, in ``mean``'s dtype and device.
        """
        s = cls(mean.shape[-1], min_std).to(dtype=mean.dtype, device=mean.device)
        s.mean.copy_(mean)
        s.std.copy_(torch.maximum(std, min_std * abs_max.clamp_min(1.0)))
        return s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise ``(*batch, D) -> (*batch, D)``."""
        return (x - self.mean) / self.std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Map standardised ``(*batch, D)`` back to the original units."""
        return y * self.std + self.mean

    def log_abs_det_jacobian(self) -> torch.Tensor:
        r"""The scalar :math:`\log|\det \partial y / \partial x| = -\sum_d \log \sigma_d`."""
        return -self.std.log().sum()
