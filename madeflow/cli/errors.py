"""Exit codes of the command line, the kind of each error, and its one-line messages.

Exit codes: ``0`` success, ``1`` unexpected error, ``2`` usage error, ``3`` data error, ``4``
checkpoint, run-folder or output-file error, ``5`` numerical failure, ``6`` another process of a
distributed run failed or did not answer, ``130`` interrupted (see :mod:`madeflow.cli`).
"""

from __future__ import annotations

import sys

from madeflow.data.files import DataError
from madeflow.runs.safe_io import CheckpointError
from madeflow.train.evaluation import NumericalError

__all__ = ["EXIT_CODES", "PeerFailure", "UsageError", "error_kind", "say"]

EXIT_CODES = {
    "usage": 2,
    "data": 3,
    "checkpoint": 4,
    "numerical": 5,
    "distributed": 6,
    "interrupted": 130,
}
"""Exit codes of the command line (documented in :mod:`madeflow.cli`)."""


class UsageError(ValueError):
    """Bad command-line usage detected after parsing."""


class PeerFailure(RuntimeError):
    """Another process of a distributed run died, hung or could not be reached."""


def error_kind(err: BaseException) -> str | None:
    """The key of :data:`EXIT_CODES` for an error, ``None`` for an unexpected one."""
    kinds = (
        (UsageError, "usage"),
        (DataError, "data"),
        (CheckpointError, "checkpoint"),
        (NumericalError, "numerical"),
        (PeerFailure, "distributed"),
    )
    return next((kind for cls, kind in kinds if isinstance(err, cls)), None)


def say(quiet: bool, *msg: object) -> None:
    """Print to stderr unless ``quiet``."""
    if not quiet:
        print(*msg, file=sys.stderr, flush=True)
