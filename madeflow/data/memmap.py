"""Memory-mapped ``.npy`` data: train on files larger than memory.

:func:`load_memmap` opens an ``(N, D)`` ``.npy`` file with ``np.load(path, mmap_mode="r")`` and
checks it for NaN and Inf a chunk at a time; nothing is read into memory beyond one chunk. The
result, a :class:`MemmapRows`, is a row source (:mod:`madeflow.data.rows`) that
:func:`madeflow.fit` accepts in place of a tensor: it reads the rows of each mini-batch when they
are needed, so memory holds a batch, not the data set. Splits are index arrays into the file
(:meth:`MemmapRows.subset`), and standardisation statistics are accumulated in chunks
(:meth:`MemmapRows.moments`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from madeflow.data.files import DataError, as_matrix, check_range, nonfinite_error, path_problem

__all__ = ["CHUNK_ELEMENTS", "MemmapRows", "load_memmap"]

CHUNK_ELEMENTS = 1 << 22
"""Values read per chunk when scanning a file (32 MiB as float64)."""


def _chunk_rows(columns: int, chunk_rows: int | None) -> int:
    return max(1, chunk_rows or CHUNK_ELEMENTS // max(columns, 1))


class MemmapRows:
    """Rows of a memory-mapped array, read from the file only when gathered.

    ``rows[index]`` reads the rows ``index`` (sorted, so the file is read forwards), converts
    them to float64 then to ``dtype`` exactly as :func:`madeflow.data.load_array` does, and
    applies ``transform`` (e.g. a :class:`~madeflow.data.Standardizer`). The result equals
    indexing the in-memory tensor, bit for bit.

    Args:
        array: ``(N, D)`` array, usually an ``np.memmap``.
        index: ``(M,)`` int64 rows of ``array`` that this source holds (all rows if ``None``).
        dtype: Floating dtype of the gathered tensors.
        transform: Applied to every gathered ``(k, D)`` tensor.

    Example:
        >>> rows = MemmapRows(np.arange(6.0).reshape(3, 2))
        >>> rows[torch.tensor([2, 0])]
        tensor([[4., 5.],
                [0., 1.]])
    """

    def __init__(
        self,
        array: np.ndarray,
        index: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.array = array
        self.index = None if index is None else torch.as_tensor(index, dtype=torch.int64).cpu()
        self.dtype = dtype
        self.transform = transform

    def __len__(self) -> int:
        return self.array.shape[0] if self.index is None else len(self.index)

    @property
    def shape(self) -> torch.Size:
        """``(len(self), D)``."""
        return torch.Size((len(self), self.array.shape[1]))

    @property
    def device(self) -> torch.device:
        """Rows are gathered on the CPU."""
        return torch.device("cpu")

    def __getitem__(self, key: torch.Tensor | slice | np.ndarray) -> torch.Tensor:
        """Gather rows: ``(k,)`` int64 positions (or a slice) -> ``(k, D)`` tensor."""
        if isinstance(key, slice):
            key = torch.arange(len(self))[key]
        key = torch.as_tensor(key, dtype=torch.int64)
        rows = (key if self.index is None else self.index[key]).numpy()
        order = np.argsort(rows, kind="stable")
        block = np.asarray(self.array[rows[order]], dtype=np.float64)
        out = np.empty_like(block)
        out[order] = block
        x = torch.from_numpy(out).to(self.dtype)
        return x if self.transform is None else self.transform(x)

    def subset(self, index: torch.Tensor) -> MemmapRows:
        """The rows ``index`` (``(M,)`` int64 positions in this source), without reading them."""
        index = torch.as_tensor(index, dtype=torch.int64).cpu()
        rows = index if self.index is None else self.index[index]
        return MemmapRows(self.array, rows, self.dtype, self.transform)

    def with_transform(
        self, transform: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> MemmapRows:
        """The same rows with another ``transform``."""
        return MemmapRows(self.array, self.index, self.dtype, transform)

    def chunks(self, chunk_rows: int | None = None) -> Iterator[np.ndarray]:
        """The raw rows as float64 blocks of at most ``chunk_rows`` rows, in file order.

        Args:
            chunk_rows: Rows per block (default: about :data:`CHUNK_ELEMENTS` values).

        Yields:
            ``(k, D)`` float64 arrays, ``transform`` not applied.
        """
        step = _chunk_rows(self.array.shape[1], chunk_rows)
        if self.index is None:
            for start in range(0, self.array.shape[0], step):
                yield np.asarray(self.array[start : start + step], dtype=np.float64)
            return
        rows = np.sort(self.index.numpy())
        for start in range(0, len(rows), step):
            yield np.asarray(self.array[rows[start : start + step]], dtype=np.float64)

    def moments(
        self, chunk_rows: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Column mean, unbiased standard deviation and largest absolute value, in one pass.

        Accumulated in float64 over :meth:`chunks`, merging each chunk's mean and sum of squared
        deviations (Chan, Golub and LeVeque), so no chunk's rounding swamps the others.

        Args:
            chunk_rows: Rows per chunk.

        Returns:
            Three ``(D,)`` float64 tensors (the standard deviation is ones for a single row),
            ready for :meth:`madeflow.data.Standardizer.from_moments`.
        """
        d = self.array.shape[1]
        n, mean, m2, abs_max = 0, np.zeros(d), np.zeros(d), np.zeros(d)
        for block in self.chunks(chunk_rows):
            k = block.shape[0]
            block_mean = block.mean(0)
            block_m2 = np.square(block - block_mean).sum(0)
            delta, total = block_mean - mean, n + k
            mean = mean + delta * (k / total)
            m2 = m2 + block_m2 + np.square(delta) * (n * k / total)
            abs_max = np.maximum(abs_max, np.abs(block).max(0))
            n = total
        std = np.sqrt(m2 / (n - 1)) if n > 1 else np.ones(d)
        return torch.from_numpy(mean), torch.from_numpy(std), torch.from_numpy(abs_max)


def load_memmap(
    path: str | os.PathLike, dtype: torch.dtype = torch.float32, chunk_rows: int | None = None
) -> MemmapRows:
    """Open an ``(N, D)`` ``.npy`` file memory-mapped, checked for NaN and Inf chunk by chunk.

    Args:
        path: A ``.npy`` file of numbers (a 1-D array is read as ``N`` one-dimensional points).
        dtype: Floating dtype of gathered rows.
        chunk_rows: Rows per chunk of the check (default: about :data:`CHUNK_ELEMENTS` values).

    Returns:
        A :class:`MemmapRows` over all rows, backed by an ``np.memmap``.

    Raises:
        DataError: As :func:`madeflow.data.load_array` for the same file (missing, not ``.npy``,
            not numeric, not ``(N, D)``, fewer than two rows, NaN or Inf with their rows).
    """
    p = Path(path)
    problem = path_problem(p)
    if problem is not None:
        raise DataError(problem)
    if p.suffix.lower() != ".npy":
        raise DataError(f"memory-mapped data must be a .npy file, got {p}")
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"cannot read {p}: {msg}") from err
    arr = as_matrix(arr, p)
    if arr.dtype.kind == "f":
        step = _chunk_rows(arr.shape[1], chunk_rows)
        bad: list[np.ndarray] = []
        for start in range(0, arr.shape[0], step):
            finite = np.isfinite(arr[start : start + step]).all(axis=1)
            if not finite.all():
                bad.append(np.flatnonzero(~finite) + start)
        if bad:
            raise nonfinite_error(p, np.concatenate(bad))
        if np.finfo(arr.dtype).max > torch.finfo(dtype).max:
            for start in range(0, arr.shape[0], step):  # values that overflow ``dtype``
                block = np.array(arr[start : start + step], dtype=np.float64)
                check_range(torch.from_numpy(block).to(dtype), p, first_row=start)
    return MemmapRows(arr, dtype=dtype)
