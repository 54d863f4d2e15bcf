"""The bad-input catalogue: every bad input gives a clear error and writes nothing half-way.

One table, :data:`CASES`. An API case calls the library and expects an exception type and a
message pattern; a CLI case runs ``madeflow.cli.main`` in-process and expects an exit code, exactly
one line on stderr matching the pattern, and that no run folder was created (or that an existing
one is byte-for-byte unchanged).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch

import madeflow as mf
from madeflow import cli
from madeflow.data.files import DataError, load_array, split
from madeflow.runs.safe_io import CheckpointError, load_tensors, save_json, save_tensors

TINY = ["--hidden", "8", "--num-transforms", "2", "--num-components", "2", "--quiet"]
FIT_TINY = ["fit", "moons", "--model", "maf", "--toy-size", "60", "--epochs", "1", *TINY]


@dataclass
class Env:
    """Files for the cases: bad data files, a fresh copy of a finished run, an unused --out."""

    tmp: Path
    run: Path
    out: Path


def _write_files(tmp: Path) -> None:
    (tmp / "text.csv").write_text("a,b\n1,2\n3,x\n4,5\n")
    (tmp / "ragged.csv").write_text("1,2\n3\n4,5\n")
    (tmp / "empty.csv").write_text("")
    (tmp / "one.csv").write_text("1,2\n")
    (tmp / "notes.txt").write_text("1,2\n3,4\n")
    (tmp / "halfbits.csv").write_text("0,1\n1,0.5\n0,0\n1,1\n")
    np.save(tmp / "nan.npy", np.array([[1.0, 2.0], [3.0, np.nan], [1.0, 1.0], [np.inf, 0.0]]))
    np.save(tmp / "wide.npy", np.zeros((10, 3)))
    np.save(tmp / "zero.npy", np.zeros((0, 2)))
    np.save(tmp / "cube.npy", np.zeros((4, 2, 2)))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A complete tiny MAF run on moons (trained once for the module)."""
    out = tmp_path_factory.mktemp("bad_inputs") / "run"
    with mock.patch("madeflow.cli.plots.plot_run", lambda *a, **k: []):
        assert cli.main([*FIT_TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def env(tmp_path, finished_run, capsys) -> Env:
    capsys.readouterr()  # drop the module fixture's output
    _write_files(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return Env(tmp_path, run, tmp_path / "new_out")


# ----------------------------------------------------------------------------- corruptions
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _fit_file(name: str) -> Callable[[Env], list[str]]:
    """The arguments of a tiny ``madeflow fit`` on the data file ``name`` of the test folder."""
    return lambda e: ["fit", str(e.tmp / name), *TINY, "--out", str(e.out)]


def _retag(path: Path, **changes: Any) -> None:
    obj = load_tensors(path)
    obj.pop("format_version")
    obj.update(changes)
    save_tensors(obj, path)


def _old_version(run: Path) -> None:
    obj = load_tensors(run / "model.pt")
    torch.save({**obj, "format_version": 0}, run / "model.pt")


def _other_state(e: Env) -> None:
    state = {"model_name": "made-gaussian", "state": {}}
    save_tensors(state, e.run / "train_state.pt")


def _x(rows: int = 5, dim: int = 3) -> torch.Tensor:
    return torch.randn(rows, dim)


def _with(x: torch.Tensor, row: int, col: int, value: float) -> torch.Tensor:
    x = x.clone()
    x[row, col] = value
    return x


def _conditional_made() -> mf.GaussianMADE:
    return mf.GaussianMADE(3, [8], context_dim=2)


def _conditional_maf() -> mf.MAF:
    return mf.MAF(3, 2, [8], context_dim=2)


def _fit(model: torch.nn.Module, train: torch.Tensor, val: torch.Tensor | None = None) -> None:
    mf.fit(model, train, val, max_epochs=1, progress=False)


# ----------------------------------------------------------------------------- the table
@dataclass
class Case:
    """One bad input.

    ``make(env)`` returns a zero-argument callable (API case, ``expect`` is an exception type) or
    an argv list (CLI case, ``expect`` is the exit code). ``pattern`` must match the message.
    """

    make: Callable[[Env], Any]
    expect: type[Exception] | int
    pattern: str
    prepare: Callable[[Env], None] | None = None


CASES: dict[str, Case] = {
    # --- data values
    "nan-made": Case(
        lambda e: lambda: mf.GaussianMADE(3, [8]).log_prob(_with(_x(), 2, 1, float("nan"))),
        ValueError,
        r"NaN or Inf in 1 row\(s\) \(batch indices 2\)",
    ),
    "inf-maf": Case(
        lambda e: lambda: mf.MAF(3, 2, [8]).log_prob(_with(_x(), 4, 0, float("inf"))),
        ValueError,
        r"NaN or Inf in 1 row\(s\) \(batch indices 4\)",
    ),
    "nan-mixture-fit": Case(
        lambda e: lambda: _fit(mf.GaussianMixtureMADE(3, [8], 2), _with(_x(), 3, 2, float("nan"))),
        ValueError,
        r"NaN or Inf",
    ),
    "nan-bernoulli": Case(
        lambda e: (
            lambda: mf.BernoulliMADE(3, [8]).log_prob(
                torch.tensor([[0.0, 1.0, 0.0], [1.0, float("nan"), 0.0]])
            )
        ),
        ValueError,
        r"NaN or Inf in 1 row\(s\) \(batch indices 1\)",
    ),
    "nonbinary-bernoulli": Case(
        lambda e: lambda: mf.BernoulliMADE(3, [8]).log_prob(torch.full((2, 3), 0.5)),
        ValueError,
        r"BernoulliMADE needs binary x \(0 or 1\); got values such as \[0\.5",
    ),
    # --- shapes and dtypes
    "last-dim-made": Case(
        lambda e: lambda: mf.MADE(3, [8])(_x(2, 4)),
        ValueError,
        r"last dimension input_dim=3, got shape \(2, 4\)",
    ),
    "last-dim-iaf": Case(
        lambda e: lambda: mf.IAF(3, 2, [8]).log_prob(_x(2, 2)),
        ValueError,
        r"last dimension input_dim=3, got shape \(2, 2\)",
    ),
    "val-width-fit": Case(
        lambda e: lambda: _fit(mf.GaussianMADE(3, [8]), _x(), _x(4, 2)),
        ValueError,
        r"val must be a non-empty \(M, 3\) tensor, got \(4, 2\)",
    ),
    "int-dtype-made": Case(
        lambda e: lambda: mf.GaussianMADE(3, [8]).log_prob(torch.ones(2, 3, dtype=torch.long)),
        TypeError,
        r"continuous density but x has dtype torch\.int64",
    ),
    "bool-dtype-maf": Case(
        lambda e: lambda: mf.MAF(3, 2, [8]).log_prob(torch.ones(2, 3, dtype=torch.bool)),
        TypeError,
        r"MAF is a continuous density but x has dtype torch\.bool",
    ),
    "zero-rows-fit": Case(
        lambda e: lambda: _fit(mf.MAF(3, 2, [8]), _x(0)),
        ValueError,
        r"train must be a non-empty \(N, D\) tensor, got \(0, 3\)",
    ),
    "two-rows-split": Case(
        lambda e: lambda: split(_x(2)),
        DataError,
        r"need at least 3 examples to split into train/val/test, got 2",
    ),
    # --- constructor arguments
    "perm-repeats": Case(
        lambda e: lambda: mf.MADE(3, [8], permutation=[0, 1, 1]),
        ValueError,
        r"not a permutation of range\(3\): repeats \[1\]",
    ),
    "perm-out-of-range": Case(
        lambda e: lambda: mf.MADE(3, [8], permutation=[0, 1, 3]),
        ValueError,
        r"permutation entries must lie in \[0, 2\], got \[3\]",
    ),
    "perm-length": Case(
        lambda e: lambda: mf.MAF(3, 2, [8], permutation=[1, 0]),
        ValueError,
        r"permutation must have input_dim=3 entries, got 2",
    ),
    "perm-string": Case(
        lambda e: lambda: mf.MADE(3, [8], permutation="backwards"),
        ValueError,
        r"permutation must be None, 'random' or a sequence",
    ),
    "hidden-empty": Case(
        lambda e: lambda: mf.GaussianMADE(3, []), ValueError, r"hidden_dims must not be empty"
    ),
    "hidden-zero": Case(
        lambda e: lambda: mf.MADE(3, [8, 0]),
        ValueError,
        r"hidden_dims must be an integer >= 1, got 0",
    ),
    "components-negative": Case(
        lambda e: lambda: mf.GaussianMixtureMADE(3, [8], num_components=-1),
        ValueError,
        r"num_components must be an integer >= 1, got -1",
    ),
    "components-negative-maf": Case(
        lambda e: lambda: mf.MAF(3, 2, [8], base="mog", num_components=-2),
        ValueError,
        r"num_components must be an integer >= 1, got -2",
    ),
    "input-dim-zero": Case(
        lambda e: lambda: mf.MADE(0, [8]), ValueError, r"input_dim must be an integer >= 1, got 0"
    ),
    "unknown-model": Case(
        lambda e: lambda: mf.build_model("realnvp", 2), ValueError, r"unknown model 'realnvp'"
    ),
    # --- contexts
    "context-missing": Case(
        lambda e: lambda: _conditional_made().log_prob(_x()),
        ValueError,
        r"conditional \(context_dim=2\): pass context",
    ),
    "context-size": Case(
        lambda e: lambda: _conditional_maf().log_prob(_x(), context=_x(5, 3)),
        ValueError,
        r"context must have last dimension context_dim=2, got shape \(5, 3\)",
    ),
    "context-batch-made": Case(
        lambda e: lambda: _conditional_made().log_prob(_x(), context=_x(4, 2)),
        ValueError,
        r"context batch shape \(4,\) does not match .* x batch shape \(5,\)",
    ),
    "context-batch-maf": Case(
        lambda e: lambda: _conditional_maf().log_prob(_x(), context=_x(4, 2)),
        ValueError,
        r"context batch shape \(4,\) does not match .* x batch shape \(5,\)",
    ),
    "context-unexpected": Case(
        lambda e: lambda: mf.IAF(3, 2, [8]).log_prob(_x(), context=_x(5, 2)),
        ValueError,
        r"IAF has context_dim=0 but a context was given",
    ),
    "context-nan": Case(
        lambda e: (
            lambda: _conditional_made().log_prob(_x(), context=_with(_x(5, 2), 3, 0, float("nan")))
        ),
        ValueError,
        r"context contains NaN or Inf in 1 row\(s\) \(batch indices 3\)",
    ),
    # --- files (API)
    "csv-text-cell": Case(
        lambda e: lambda: load_array(e.tmp / "text.csv"),
        DataError,
        r"text\.csv: line 3, column 2 is not a number: 'x'",
    ),
    "csv-ragged": Case(
        lambda e: lambda: load_array(e.tmp / "ragged.csv"),
        DataError,
        r"ragged\.csv: line 2 has 1 columns, expected 2 \(ragged rows\)",
    ),
    "npy-3d": Case(
        lambda e: lambda: load_array(e.tmp / "cube.npy"),
        DataError,
        r"shape \(4, 2, 2\); expected \(N, D\)",
    ),
    "run-truncated": Case(
        lambda e: lambda: mf.load_run(e.run),
        CheckpointError,
        r"cannot load checkpoint .*model\.pt safely",
        prepare=lambda e: _truncate(e.run / "model.pt"),
    ),
    "run-other-model": Case(
        lambda e: lambda: mf.load_run(e.run),
        CheckpointError,
        r"model\.pt holds a 'made-gaussian' model but config\.json describes 'maf'",
        prepare=lambda e: _retag(e.run / "model.pt", model_name="made-gaussian"),
    ),
    "run-weights-do-not-fit": Case(
        lambda e: lambda: mf.load_run(e.run),
        CheckpointError,
        r"model\.pt does not fit the model in config\.json",
        prepare=lambda e: _retag(e.run / "model.pt", model={"w": torch.zeros(2)}),
    ),
    # --- command line
    "cli-csv-text": Case(
        _fit_file("text.csv"),
        3,
        r"line 3, column 2 is not a number",
    ),
    "cli-csv-ragged": Case(
        _fit_file("ragged.csv"),
        3,
        r"ragged rows",
    ),
    "cli-empty-file": Case(
        _fit_file("empty.csv"),
        3,
        r"empty\.csv is empty",
    ),
    "cli-nan-rows": Case(
        _fit_file("nan.npy"),
        3,
        r"NaN or Inf in 2 row\(s\) \(0-based\): 1, 3",
    ),
    "cli-one-row": Case(
        _fit_file("one.csv"),
        3,
        r"has 1 row\(s\); need at least 2 examples",
    ),
    "cli-zero-rows": Case(
        _fit_file("zero.npy"),
        3,
        r"has 0 row\(s\)",
    ),
    "cli-unsupported-file": Case(
        _fit_file("notes.txt"),
        3,
        r"unsupported data file type '\.txt'",
    ),
    "cli-nonbinary-bernoulli": Case(
        lambda e: [
            "fit",
            str(e.tmp / "halfbits.csv"),
            "--model",
            "made-bernoulli",
            *TINY,
            "--out",
            str(e.out),
        ],
        3,
        r"made-bernoulli needs binary data",
    ),
    "cli-hidden-zero": Case(
        lambda e: [*FIT_TINY, "--hidden", "0", "--out", str(e.out)],
        2,
        r"argument --hidden: must be an integer >= 1, got 0",
    ),
    "cli-components-negative": Case(
        lambda e: [*FIT_TINY, "--model", "maf-mog", "--num-components", "-3", "--out", str(e.out)],
        2,
        r"argument --num-components: must be an integer >= 1, got -3",
    ),
    "cli-lr-negative": Case(
        lambda e: [*FIT_TINY, "--lr", "-0.1", "--out", str(e.out)],
        2,
        r"argument --lr: must be a finite number > 0, got -0\.1",
    ),
    "cli-batch-size-zero": Case(
        lambda e: [*FIT_TINY, "--batch-size", "0", "--out", str(e.out)],
        2,
        r"argument --batch-size: must be an integer >= 1, got 0",
    ),
    "cli-unknown-model": Case(
        lambda e: [*FIT_TINY, "--model", "realnvp", "--out", str(e.out)],
        2,
        r"argument --model: invalid choice: 'realnvp'",
    ),
    "cli-out-is-a-run": Case(
        lambda e: [*FIT_TINY, "--out", str(e.run)],
        2,
        r"already exists and is not empty; use --resume",
    ),
    "cli-resume-not-a-run": Case(
        lambda e: ["fit", "--resume", "--out", str(e.tmp), "--quiet"],
        4,
        r"cannot resume: .* is not a madeflow run \(no config\.json\)",
    ),
    "cli-resume-other-model-state": Case(
        lambda e: ["fit", "--resume", "--out", str(e.run), "--quiet"],
        4,
        r"train_state\.pt belongs to another model type",
        prepare=_other_state,
    ),
    "cli-evaluate-truncated": Case(
        lambda e: ["evaluate", str(e.run)],
        4,
        r"cannot load checkpoint .*model\.pt safely",
        prepare=lambda e: _truncate(e.run / "model.pt"),
    ),
    "cli-evaluate-old-version": Case(
        lambda e: ["evaluate", str(e.run)],
        4,
        r"format version 0, this madeflow reads version 1",
        prepare=lambda e: _old_version(e.run),
    ),
    "cli-evaluate-config-version": Case(
        lambda e: ["evaluate", str(e.run)],
        4,
        r"config\.json has format version 99",
        prepare=lambda e: save_json({"format_version": 99}, e.run / "config.json"),
    ),
    "cli-evaluate-wrong-width": Case(
        lambda e: ["evaluate", str(e.run), str(e.tmp / "wide.npy")],
        3,
        r"wide\.npy has 3 columns; the model expects 2",
    ),
    "cli-sample-bad-suffix": Case(
        lambda e: ["sample", str(e.run), "-o", str(e.tmp / "samples.txt")],
        2,
        r"output file must end in \.npy or \.csv",
    ),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_catalogue_is_large_and_covers_api_and_cli():
    cli_cases = [k for k, c in CASES.items() if isinstance(c.expect, int)]
    assert len(CASES) >= 25 and len(cli_cases) >= 10 and len(CASES) - len(cli_cases) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_a_clear_error(name, env, capsys):
    case = CASES[name]
    if case.prepare is not None:
        case.prepare(env)
    before = _snapshot(env.tmp)
    target = case.make(env)
    if isinstance(case.expect, int):
        code = cli.main(target)
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert code == case.expect, captured.err
        assert len(lines) == 1, captured.err
        assert lines[0].startswith("madeflow"), lines
        assert "Traceback" not in captured.err
        assert re.search(case.pattern, lines[0]), (case.pattern, lines[0])
    else:
        with pytest.raises(case.expect, match=case.pattern):
            target()
    # Nothing written half-way: no new run folder, every existing file byte-for-byte the same.
    assert not env.out.exists()
    assert _snapshot(env.tmp) == before


@pytest.mark.cuda
def test_cpu_cuda_mix_is_moved_or_refused():
    model = mf.MAF(2, 2, [8])  # on the CPU
    x = torch.randn(50, 2, device="cuda")
    # fit moves the data to the model's device (a correct move) ...
    mf.fit(model, x[:40], x[40:], max_epochs=1, progress=False)
    assert next(model.parameters()).device.type == "cpu"
    # ... and scoring data on another device is refused with a message naming the devices.
    with pytest.raises(RuntimeError, match="device"):
        model.log_prob(x)
    made = mf.GaussianMADE(2, [8]).cuda()
    with pytest.raises(RuntimeError, match="device"):
        made.log_prob(torch.randn(3, 2))
