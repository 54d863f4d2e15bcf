"""Run folders: what ``madeflow fit`` writes and :func:`load_run` reads back."""

from madeflow.runs.folder import load_run

__all__ = ["load_run"]
