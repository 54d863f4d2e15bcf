"""The command line under adversarial use: bad flag values, outputs, --resume, faults.

:data:`CLI_CASES` is the table of bad commands; each must exit with its documented code, print
exactly one line naming the problem and what to do, and write or change nothing. The other tests
inject faults (a full disk, a read-only folder, symbolic link loops) and check valid but awkward
uses (a 1-column run, ``--force``, uppercase suffixes, the umask, strict JSON).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from runs_helper import (
    TINY,
    CliCase,
    RunCopy,
    check_cli_case,
    copy_run,
    fit_tiny,
    snapshot,
    write_data,
)

from madeflow import cli, load_run
from madeflow.runs import safe_io as checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

FIT = ["fit", "moons", "--model", "maf", "--toy-size", "60", "--epochs", "1", *TINY]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 1-epoch MAF run on a CSV file (trained once for the module)."""
    folder = tmp_path_factory.mktemp("safety")
    fit_tiny(folder / "run", str(write_data(folder / "points.csv")))
    return folder / "run"


@pytest.fixture
def env(trained, tmp_path) -> RunCopy:
    return copy_run(trained, tmp_path)


def _fit(env: RunCopy, *args: str) -> list[str]:
    return [*FIT, *args, "--out", str(env.tmp / "new")]


def _resume(*args: str) -> callable:
    return lambda e: ["fit", "--resume", "--out", str(e.run), "--quiet", *args]


def _flag(flag: str, value: str, pattern: str) -> CliCase:
    return CliCase(lambda e: _fit(e, flag, value), 2, rf"argument {flag}: {pattern}")


CLI_CASES: dict[str, CliCase] = {
    # --- flag values: were accepted and recorded (--num-masks -3) or failed late
    "num-masks-negative": _flag("--num-masks", "-3", r"must be an integer >= 1, got -3"),
    "num-transforms-zero": _flag("--num-transforms", "0", r"must be an integer >= 1, got 0"),
    "components-zero": _flag("--num-components", "0", r"must be an integer >= 1"),
    "hidden-negative": _flag("--hidden", "-4", r"must be an integer >= 1, got -4"),
    "epochs-negative": CliCase(
        lambda e: _fit(e, "--epochs", "-1"), 2, r"--epochs/--max-epochs: must be an integer >= 0"
    ),
    "patience-negative": _flag("--patience", "-2", r"must be an integer >= 0"),
    "batch-size-float": _flag("--batch-size", "1.5", r"expected an integer, got '1\.5'"),
    "toy-size-tiny": _flag("--toy-size", "2", r"must be an integer in \[3, 10000000\], got 2"),
    "toy-size-huge": _flag("--toy-size", str(10**12), r"must be an integer in \[3, 10000000\]"),
    "lr-nan": _flag("--lr", "nan", r"must be a finite number > 0, got nan"),
    "lr-inf": _flag("--lr", "inf", r"must be a finite number > 0, got inf"),
    "lr-zero": _flag("--lr", "0", r"must be a finite number > 0, got 0"),
    "lr-text": _flag("--lr", "fast", r"expected a number, got 'fast'"),
    "weight-decay-nan": _flag("--weight-decay", "nan", r"must be a finite number >= 0"),
    "weight-decay-negative": _flag("--weight-decay", "-1", r"must be a finite number >= 0"),
    "clip-grad-inf": _flag("--clip-grad", "inf", r"must be a finite number >= 0, got inf"),
    "save-every-nan": _flag("--save-every", "nan", r"must be a finite number >= 0"),
    "threads-zero": _flag("--threads", "0", r"must be an integer in \[1, 1024\], got 0"),
    "threads-huge": _flag("--threads", "1000000", r"must be an integer in \[1, 1024\]"),
    "seed-negative": _flag("--seed", "-1", r"must be an integer in \[0, "),
    "width-billion": CliCase(
        lambda e: _fit(e, "--hidden", str(10**9)), 2, r"about .* parameters, more than the cap"
    ),
    "transforms-100k": CliCase(
        lambda e: _fit(e, "--num-transforms", "100000"), 2, r"masked layers, more than the cap"
    ),
    "sample-n-zero": CliCase(
        lambda e: ["sample", str(e.run), "-n", "0", "-o", str(e.tmp / "s.npy")],
        2,
        r"argument -n/--num-samples: must be an integer >= 1, got 0",
    ),
    "sample-n-huge": CliCase(
        lambda e: ["sample", str(e.run), "-n", str(10**9), "-o", str(e.tmp / "s.npy")],
        2,
        r"-n 1000000000 would write 2\.00e\+09 values \(D=2\), more than 2e\+08",
    ),
    "sample-seed-text": CliCase(
        lambda e: ["sample", str(e.run), "--seed", "x", "-o", str(e.tmp / "s.npy")],
        2,
        r"argument --seed: expected an integer, got 'x'",
    ),
    # --- --resume with other settings: were silently ignored
    "resume-num-transforms": CliCase(
        _resume("--num-transforms", "5"), 2, r"--num-transforms 5 \(recorded: 2\) differ; drop"
    ),
    "resume-batch-norm": CliCase(_resume("--batch-norm"), 2, r"--batch-norm \(recorded: off\)"),
    # Sized to the run of 1 epoch: patience 10.
    "resume-patience": CliCase(_resume("--patience", "3"), 2, r"--patience 3 \(recorded: 10\)"),
    "resume-lr-and-seed": CliCase(
        _resume("--lr", "0.5", "--seed", "4"), 2, r"--lr 0\.5 \(recorded: 0\.001\), --seed 4"
    ),
    "resume-hidden": CliCase(_resume("--hidden", "8", "8"), 2, r"--hidden 8 8 \(recorded: 8\)"),
    "resume-no-standardize": CliCase(
        _resume("--no-standardize"), 2, r"--no-standardize \(recorded: off\)"
    ),
    "resume-other-data": CliCase(
        lambda e: ["fit", "moons", "--resume", "--out", str(e.run)], 2, r"data moons \(recorded: "
    ),
    "force-without-resume": CliCase(
        lambda e: _fit(e, "--force"), 2, r"--force only applies with --resume"
    ),
    # --- outputs: sample -o overwrote any file, even the training data
    "sample-onto-training-data": CliCase(
        lambda e: ["sample", str(e.run), "-o", str(e.data)],
        2,
        r"points\.csv already exists; pass --force to overwrite it, or choose another -o",
    ),
    "evaluate-onto-existing": CliCase(
        lambda e: ["evaluate", str(e.run), "-o", str(e.data)],
        2,
        r"already exists; pass --force",
    ),
    "sample-onto-dangling-link": CliCase(
        lambda e: ["sample", str(e.run), "-o", str(e.tmp / "link.npy")],
        2,
        r"link\.npy already exists",
        prepare=lambda e: os.symlink(e.tmp / "nowhere.npy", e.tmp / "link.npy"),
    ),
    "sample-onto-folder": CliCase(
        lambda e: ["sample", str(e.run), "-o", str(e.tmp / "dir.npy")],
        2,
        r"dir\.npy is a folder; name a file",
        prepare=lambda e: (e.tmp / "dir.npy").mkdir(),
    ),
    # --- paths: were raw RuntimeError / FileExistsError / NotADirectoryError
    "data-symlink-loop": CliCase(
        lambda e: [*FIT[:1], str(e.tmp / "loop.csv"), *FIT[2:], "--out", str(e.tmp / "new")],
        3,
        r"loop\.csv is a symbolic link loop",
        prepare=lambda e: os.symlink("loop.csv", e.tmp / "loop.csv"),
    ),
    "out-symlink-loop": CliCase(
        lambda e: [*FIT, "--out", str(e.tmp / "loop")],
        4,
        r"loop is a symbolic link loop",
        prepare=lambda e: os.symlink("loop", e.tmp / "loop"),
    ),
    "out-under-a-file": CliCase(
        lambda e: [*FIT, "--out", str(e.data / "run")],
        4,
        r"cannot create run folder .*points\.csv/run: it, or a folder above it, is a file",
    ),
    "out-is-a-file": CliCase(
        lambda e: [*FIT, "--out", str(e.data)], 2, r"points\.csv is a file, not a run folder"
    ),
    "evaluate-symlink-loop": CliCase(
        lambda e: ["evaluate", str(e.tmp / "loop")],
        4,
        r"loop is a symbolic link loop",
        prepare=lambda e: os.symlink("loop", e.tmp / "loop"),
    ),
    "config-symlink-loop": CliCase(
        lambda e: ["evaluate", str(e.run)],
        4,
        r"config\.json is a symbolic link loop",
        prepare=lambda e: (
            (e.run / "config.json").unlink(),
            os.symlink("config.json", e.run / "config.json"),
        ),
    ),
    "model-symlink-loop": CliCase(
        lambda e: ["sample", str(e.run), "-o", str(e.tmp / "s.npy")],
        4,
        r"model\.pt is a symbolic link loop",
        prepare=lambda e: (
            (e.run / "model.pt").unlink(),
            os.symlink("model.pt", e.run / "model.pt"),
        ),
    ),
    "model-is-a-folder": CliCase(
        lambda e: ["plot", str(e.run)],
        4,
        r"not a file: .*model\.pt",
        prepare=lambda e: ((e.run / "model.pt").unlink(), (e.run / "model.pt").mkdir()),
    ),
    "evaluate-unfinished-run": CliCase(
        lambda e: ["evaluate", str(e.run)],
        4,
        r"run has no model\.pt yet: the run has not finished; finish it with madeflow fit",
        prepare=lambda e: (e.run / "model.pt").unlink(),
    ),
    # --- numerical failure: was torch's support error (exit 1) or blamed the data
    "diverging-lr": CliCase(
        lambda e: _fit(e, "--lr", "1e10"),
        5,
        r"training diverged at epoch 1\b.*try a lower learning",
    ),
    "batch-norm-one-training-row": CliCase(
        lambda e: [
            "fit",
            str(e.tmp / "three.csv"),
            "--batch-norm",
            *TINY,
            "--out",
            str(e.tmp / "n"),
        ],
        3,
        r"leaves 1 training row after the split; batch norm needs at least 2",
        prepare=lambda e: (e.tmp / "three.csv").write_text("1,2\n3,4\n5,7\n"),
    ),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_bad_command_exits_with_its_code_and_one_line(name, env, capsys):
    check_cli_case(CLI_CASES[name], env, capsys)
    assert not (env.tmp / "new").exists()


def test_cli_catalogue_is_large():
    assert len(CLI_CASES) >= 40


# ----------------------------------------------------------------------------- valid, awkward
def test_resume_with_the_recorded_values_is_accepted(env, capsys):
    code = cli.main(
        ["fit", "--resume", "--out", str(env.run), "--num-transforms", "2", "--hidden", "8",
         "--lr", "0.001", "--max-epochs", "2", "--quiet", str(env.data)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(json.loads((env.run / "metrics.json").read_text())["history"]["train_log_lik"]) == 2


def test_force_overwrites_an_output_atomically_with_the_exact_name(env, capsys):
    target = env.tmp / "samples.NPY"  # np.save would have written samples.NPY.npy
    target.write_bytes(b"old")
    assert cli.main(["sample", str(env.run), "-n", "7", "-o", str(target), "--force"]) == 0
    assert np.load(target).shape == (7, 2)
    assert not (env.tmp / "samples.NPY.npy").exists()
    assert [p.name for p in env.tmp.iterdir() if p.name.startswith(".")] == []


def test_plot_on_a_one_column_run(tmp_path, capsys):
    """Was: IndexError: index 1 is out of bounds for axis 1 with size 1 (exit 1)."""
    np.save(tmp_path / "one.npy", np.random.default_rng(0).normal(size=(100, 1)))
    assert cli.main(["fit", str(tmp_path / "one.npy"), "--model", "maf", *TINY, "--epochs", "1",
                     "--out", str(tmp_path / "run")]) == 0  # fmt: skip
    assert (tmp_path / "run" / "samples.png").stat().st_size > 1000  # drawn by fit itself
    (tmp_path / "run" / "samples.png").unlink()
    assert cli.main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "samples.png").stat().st_size > 1000
    assert "warning" not in capsys.readouterr().err


def test_metrics_json_is_strict_json_with_null_for_undefined_errors(tmp_path, capsys):
    """Five rows leave one validation and one test row: their standard errors are null."""
    np.savetxt(tmp_path / "five.csv", np.random.default_rng(0).normal(size=(5, 2)), delimiter=",")
    fit_tiny(tmp_path / "run", str(tmp_path / "five.csv"))

    def refuse(name):
        raise ValueError(f"bare {name} in metrics.json")

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["val_log_lik_stderr"] is None and metrics["test_log_lik_stderr"] is None
    assert isinstance(metrics["val_log_lik"], float)


def test_plot_skips_a_truncated_metrics_json_with_a_warning(env, capsys):
    """Was: JSONDecodeError: Unterminated string ... (exit 1)."""
    (env.run / "metrics.json").write_text('{"history": {"tr')
    assert cli.main(["plot", str(env.run)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "training.png not drawn: cannot read" in err[0]
    assert (env.run / "samples.png").is_file() and not (env.run / "training.png").exists()


def test_batch_norm_fit_whose_last_batch_has_one_row(tmp_path, capsys):
    """60 toy points: 48 train rows in batches of 47 leave one row; fit merges it."""
    out = tmp_path / "bn"
    args = [*FIT, "--batch-norm", "--batch-size", "47", "--out", str(out)]
    assert cli.main(args) == 0, capsys.readouterr().err


@pytest.mark.parametrize("scale", [1e37, 1e300])
def test_huge_but_finite_values_are_standardised_in_float64(tmp_path, scale, capsys):
    """A column near or beyond float32's limit trains after standardisation in float64."""
    x = np.random.default_rng(0).normal(size=(120, 2))
    x[:, 1] *= scale
    np.save(tmp_path / "big.npy", x)
    fit_tiny(tmp_path / "run", str(tmp_path / "big.npy"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["test_log_lik"])
    assert cli.main(["evaluate", str(tmp_path / "run"), str(tmp_path / "big.npy")]) == 0
    assert "nan" not in capsys.readouterr().out.split("±")[0]


def test_umask_is_respected(tmp_path, capsys):
    """Run files were created 0600 whatever the umask."""
    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            out = tmp_path / f"run{mask:o}"
            assert cli.main([*FIT, "--out", str(out)]) == 0
            assert cli.main(["sample", str(out), "-n", "3", "-o", str(out / "s.csv")]) == 0
        finally:
            os.umask(old)
        names = {p.name for p in out.iterdir()}
        assert {"config.json", "model.pt", "metrics.json", "train_state.pt", "s.csv"} <= names
        for name in names:  # every file of the run, pictures too
            assert stat.S_IMODE((out / name).stat().st_mode) == mode, (name, oct(mask))
        folder_mode = stat.S_IMODE(out.stat().st_mode)
        assert folder_mode == 0o777 & ~mask, oct(folder_mode)


# ----------------------------------------------------------------------------- faults
def _fail_writes(monkeypatch, name: str, err: int, after: int = 0) -> list[str]:
    """Make every write of a file called ``name`` after the first ``after`` fail with ``err``."""
    real = os.fsync
    seen: list[str] = []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")  # the temporary file being written
        if Path(target).name.startswith(f".{name}."):
            seen.append(target)
            if len(seen) > after:
                raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    return seen


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize(
    ("name", "after", "left"),
    [
        ("config.json", 0, False),  # before anything: no run folder is left
        ("train_state.pt", 1, True),  # mid-run: the first checkpoint is kept, resume finishes
        ("model.pt", 0, True),
        ("metrics.json", 0, True),
    ],
)
def test_disk_full_is_one_line_exit_4_and_resume_finishes(
    name, after, left, tmp_path, monkeypatch, capsys
):
    """Was: "madeflow: error: OSError: [Errno 28] No space left on device" (exit 1)."""
    monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
    out = tmp_path / "run"
    seen = _fail_writes(monkeypatch, name, errno.ENOSPC, after)
    code = cli.main([*FIT, "--epochs", "3", "--save-every", "0", "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert code == 4 and len(err) == 1, err
    assert f"cannot write {out / name}: the disk is full: free some space" in err[0]
    assert seen
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    assert out.exists() == left
    if left:
        assert "continue with madeflow fit --resume --out" in err[0]
        monkeypatch.undo()  # space freed
        monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
        assert cli.main(["fit", "--resume", "--out", str(out), "--quiet"]) == 0
        load_run(out)


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc/self/fd")
def test_disk_full_while_sampling_keeps_the_previous_file(env, monkeypatch, capsys):
    target = env.tmp / "s.csv"
    target.write_text("previous\n")
    _fail_writes(monkeypatch, "s.csv", errno.ENOSPC)
    assert cli.main(["sample", str(env.run), "-o", str(target), "--force"]) == 4
    assert "cannot write" in capsys.readouterr().err
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in env.tmp.iterdir()) == sorted(["points.csv", "run", "s.csv"])


def _read_only(monkeypatch, folder: Path) -> None:
    """Every file creation and removal under ``folder`` fails with EACCES (as for a non-root
    user in a folder without write permission; the tests run as any user)."""
    real_open, real_unlink, real_mkstemp = os.open, os.unlink, checkpoint.tempfile.mkstemp

    def denied(path) -> bool:
        return str(folder) in os.fspath(path)

    def fake_open(path, flags, *args, **kwargs):
        # An existing file gives EEXIST first (O_EXCL), as in a real read-only folder.
        if denied(path) and flags & os.O_CREAT and not os.path.lexists(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_unlink(path, *args, **kwargs):
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_unlink(path, *args, **kwargs)

    def fake_mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
        if dir is not None and denied(dir):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(checkpoint.os, "open", fake_open)
    monkeypatch.setattr(checkpoint.os, "unlink", fake_unlink)
    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", fake_mkstemp)
    real_path_unlink = Path.unlink

    def path_unlink(self, missing_ok=False):
        if denied(self):
            fake_unlink(self)
        return real_path_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", path_unlink)


def test_read_only_run_folder_resume_exits_4(env, monkeypatch, capsys):
    _read_only(monkeypatch, env.run)
    assert cli.main(["fit", "--resume", "--out", str(env.run), "--quiet"]) == 4
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "permission denied" in err[0], err


def test_read_only_folder_mid_run_the_real_error_wins(tmp_path, monkeypatch, capsys):
    """Writes fail after the lock is taken, and so does every cleanup (was: exit 1 with the
    cleanup's PermissionError instead of the write's)."""
    monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
    out = tmp_path / "run"
    real_acquire = checkpoint.RunLock.acquire

    def acquire_then_read_only(self):
        real_acquire(self)
        _read_only(monkeypatch, out)

    monkeypatch.setattr(checkpoint.RunLock, "acquire", acquire_then_read_only)
    assert cli.main([*FIT, "--out", str(out)]) == 4
    err = capsys.readouterr().err.splitlines()
    assert err == [f"madeflow: error: cannot write {out / 'config.json'}: permission denied: "
                   "make the folder writable or write somewhere else"]  # fmt: skip


def test_a_stale_lock_that_cannot_be_removed_exits_4(env, monkeypatch, capsys):
    (env.run / ".lock").write_text("999999999")  # no such process: stale
    _read_only(monkeypatch, env.run)
    assert cli.main(["fit", "--resume", "--out", str(env.run), "--quiet"]) == 4
    assert "cannot write" in capsys.readouterr().err


def test_plot_and_outputs_into_a_read_only_folder_exit_4(env, monkeypatch, capsys):
    """Was: PermissionError from matplotlib's savefig (exit 1)."""
    before = snapshot(env.tmp)
    _read_only(monkeypatch, env.tmp)
    assert cli.main(["plot", str(env.run)]) == 4
    assert cli.main(["evaluate", str(env.run), "-o", str(env.tmp / "ll.npy")]) == 4
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("cannot write" in line for line in err), err
    assert "samples.png: permission denied" in err[0] and "ll.npy" in err[1]
    monkeypatch.undo()
    assert snapshot(env.tmp) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_really_read_only_folder(env, capsys):
    before = snapshot(env.run)
    env.run.chmod(0o555)
    try:
        assert cli.main(["fit", "--resume", "--out", str(env.run), "--quiet"]) == 4
        assert cli.main(["plot", str(env.run)]) != 1
    finally:
        env.run.chmod(0o755)
    assert snapshot(env.run) == before


def test_sampling_in_chunks_draws_what_one_call_draws(tmp_path, capsys):
    """Chunked sampling gives the same draw as one call when -n fits in one chunk."""
    out = tmp_path / "s.npy"
    fit_tiny(tmp_path / "run", "moons", "--toy-size", "60")
    assert cli.main(["sample", str(tmp_path / "run"), "-n", "5", "-o", str(out)]) == 0
    _, model, space = load_run(tmp_path / "run")
    torch.manual_seed(0)
    with torch.no_grad():
        expected = space.to_data(model.sample((5,))).double().numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6)
