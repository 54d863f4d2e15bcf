"""Run folders: what ``madeflow fit`` writes and :func:`load_run` reads back.

:mod:`madeflow.runs.folder` reads and writes every file of a run folder, checking what it reads
with :mod:`madeflow.runs.integrity`; :mod:`madeflow.runs.safe_io` writes atomically, loads
tensors without running code and locks a folder while it is written.
"""

from madeflow.runs.folder import RunWarning, load_run
from madeflow.runs.safe_io import CheckpointError

__all__ = ["CheckpointError", "RunWarning", "load_run"]
