"""Row sources: data that :func:`madeflow.fit` reads a mini-batch at a time.

A tensor holds all its rows in memory. A *row source* is anything with ``len(source)`` and
``source[index] -> (len(index), D)`` tensor for an int64 ``index`` tensor of row numbers, e.g. a
memory-mapped file (:class:`madeflow.data.MemmapRows`): training, validation and the sharding
of :mod:`madeflow.train.distributed` then read only the rows they use. :func:`take` and
:func:`subset` work on both kinds.
"""

from __future__ import annotations

from typing import Protocol, Union, runtime_checkable

import torch

__all__ = ["RowSource", "RowSubset", "Rows", "num_columns", "subset", "take", "to_device"]


@runtime_checkable
class RowSource(Protocol):
    """Rows gathered on demand: ``len(source)`` and ``source[index]`` for int64 row numbers."""

    def __len__(self) -> int:
        """Number of rows ``N``."""
        ...

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """The rows ``index`` (``(k,)`` int64 in ``[0, N)``) as a ``(k, D)`` tensor."""
        ...


Rows = Union[torch.Tensor, RowSource]
"""An ``(N, D)`` tensor or a :class:`RowSource`."""


class RowSubset:
    """The rows ``index`` of a row source, without reading them.

    Args:
        source: The underlying rows.
        index: ``(M,)`` int64 row numbers of ``source``.
    """

    def __init__(self, source: RowSource, index: torch.Tensor) -> None:
        self.source = source
        self.index = index.to(device="cpu", dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of the subset, ``(k,) -> (k, D)``."""
        return self.source[self.index[index]]


def subset(data: Rows, index: torch.Tensor) -> Rows:
    """Rows ``index`` of ``data``: gathered for a tensor, a lazy view for a row source.

    Args:
        data: ``(N, D)`` tensor or row source.
        index: ``(M,)`` int64 row numbers.

    Returns:
        ``(M, D)`` tensor, or a row source of ``M`` rows (the source's own ``subset`` method when
        it has one, else a :class:`RowSubset`).
    """
    if isinstance(data, torch.Tensor):
        return data[index.to(data.device)]
    own = getattr(data, "subset", None)
    return own(index) if callable(own) else RowSubset(data, index)


def take(data: Rows, index: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """Gather rows ``index`` as a tensor on ``device``.

    Args:
        data: ``(N, D)`` tensor (indexed where it lies) or row source (read on the CPU).
        index: ``(k,)`` int64 row numbers.
        device: Where the result goes; ``None`` leaves it where it was made.

    Returns:
        ``(k, D)``.
    """
    if isinstance(data, torch.Tensor):
        rows = data[index.to(data.device)]
    else:
        rows = data[index.cpu()]
    return rows if device is None else rows.to(device)


def num_columns(data: Rows) -> int:
    """``D``: read from the shape of a tensor, or from the first row of a row source."""
    if isinstance(data, torch.Tensor):
        return data.shape[-1]
    shape = getattr(data, "shape", None)
    if shape is not None:
        return int(shape[-1])
    return int(data[torch.zeros(1, dtype=torch.int64)].shape[-1])


def to_device(data: Rows | None, device: torch.device | str) -> Rows | None:
    """Move a tensor to ``device``; a row source (or ``None``) is returned as it is."""
    return data.to(device) if isinstance(data, torch.Tensor) else data
