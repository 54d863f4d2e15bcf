"""Helpers for the command-line reliability tests (not a test module).

A tiny run trains in well under a second: :func:`fit_tiny` writes one, :func:`copy_run` gives a
test its own copy (with its own copy of the data file, so a test may change either), and
:class:`CliCase` / :func:`check_cli_case` run one bad command and check the contract: the
documented exit code, exactly one line on stderr naming the problem, and nothing written or
changed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from madeflow import cli

TINY = ["--hidden", "8", "--num-transforms", "2", "--num-components", "2", "--quiet"]


def fit_tiny(out: Path, data: str, *extra: str) -> None:
    """Train a 1-epoch MAF on ``data`` into ``out`` (pictures skipped)."""
    argv = ["fit", data, "--model", "maf", *TINY, "--epochs", "1", "--out", str(out), *extra]
    with mock.patch("madeflow.cli.plots.plot_run", lambda *a, **k: []):
        code = cli.main(argv)
    assert code == 0, argv


def write_data(path: Path, rows: int = 80, seed: int = 0) -> Path:
    """A CSV of ``rows`` random 2-D points with a header."""
    x = np.random.default_rng(seed).normal(size=(rows, 2)) * [1.0, 3.0]
    np.savetxt(path, x, delimiter=",", header="a,b", comments="")
    return path


@dataclass
class RunCopy:
    """A test's own run folder, its data file, and a folder for anything else."""

    run: Path
    data: Path
    tmp: Path


def copy_run(run: Path, tmp: Path) -> RunCopy:
    """Copy ``run`` and its data file into ``tmp``; the copy's config points at the copied data."""
    config = json.loads((run / "config.json").read_text())
    data = tmp / Path(config["data"]["source"]).name
    shutil.copy(config["data"]["source"], data)
    shutil.copytree(run, tmp / "run")
    config["data"]["source"] = str(data.resolve())
    (tmp / "run" / "config.json").write_text(json.dumps(config, indent=2))
    return RunCopy(tmp / "run", data, tmp)


def edit_config(run: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Apply ``change`` to the parsed ``config.json`` of ``run`` and write it back."""
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@dataclass
class CliCase:
    """One bad command: ``argv(env)``, the exit code, a regex for the one stderr line.

    ``prepare(env)`` sets the scene first (a tampered file, a patched function).
    """

    argv: Callable[[RunCopy], list[str]]
    code: int
    pattern: str
    prepare: Callable[[RunCopy], None] | None = None


def check_cli_case(case: CliCase, env: RunCopy, capsys: Any) -> str:
    """Run ``case`` and check the contract; return the stderr line."""
    if case.prepare is not None:
        case.prepare(env)
    capsys.readouterr()
    before = snapshot(env.tmp)
    code = cli.main(case.argv(env))
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == case.code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("madeflow") and "Traceback" not in err, err
    assert re.search(case.pattern, lines[0]), (case.pattern, lines[0])
    assert snapshot(env.tmp) == before  # nothing written, nothing changed
    return lines[0]
