"""Fault injection: SIGKILLed fits resume bitwise, concurrent runs, locked folders, evil pickles.

The kill trials start real ``python -m madeflow fit`` processes (all at once, each in its own
folder, which is also the "concurrent runs do not interfere" check), kill each with SIGKILL at a
moment drawn from a seeded RNG, check that what is left loads, and finish it with
``madeflow fit --resume``; the final weights must equal those of an uninterrupted run bitwise.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from madeflow import CheckpointError, cli, load_run
from madeflow.data.files import DataError, load_array
from madeflow.runs.safe_io import load_tensors

FIT = [
    "fit",
    "moons",
    "--model",
    "maf",
    "--toy-size",
    "300",
    "--hidden",
    "16",
    "--num-transforms",
    "2",
    "--epochs",
    "30",
    "--save-every",
    "0",
    "--quiet",
]
# (trigger, maximum delay in s): kill a random time after the process starts (start-up), after
# config.json appears (before the first epoch), after the first checkpoint appears (mid-training,
# maybe mid-write), or after model.pt appears (final evaluation and plots).
TRIALS = [("start", 5.0), ("state", 0.5), ("state", 1.0), ("state", 0.2), ("model", 0.3)]
TRIALS += [("config", 0.05)]
TRIGGER_FILES = {"config": "config.json", "state": "train_state.pt", "model": "model.pt"}
SEED = 20261123


pytestmark = pytest.mark.usefixtures("one_thread")


def _spawn(*args: object) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "madeflow", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_run(folder)[1].state_dict()


def _kill_when_due(procs: list[subprocess.Popen], plan: list[dict], timeout: float = 120.0):
    """Poll until every process has been killed or has exited; return their exit codes."""
    t_end = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < t_end:
        now = time.monotonic()
        for p, item in zip(procs, plan, strict=True):
            if p.poll() is not None:
                continue
            if item["armed"] is None:
                trigger = item["trigger"]
                ready = trigger == "start" or (item["out"] / TRIGGER_FILES[trigger]).exists()
                if ready:
                    item["armed"] = now + item["delay"]
            if item["armed"] is not None and now >= item["armed"]:
                p.send_signal(signal.SIGKILL)
        time.sleep(0.005)
    codes = []
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.communicate()
        codes.append(p.returncode)
    return codes


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path, capsys, monkeypatch):
    rng = random.Random(SEED)
    ref = tmp_path / "reference"
    plan = []
    for i, (trigger, max_delay) in enumerate(TRIALS):
        delay = rng.uniform(0.0, max_delay)
        plan.append({"trigger": trigger, "delay": delay, "out": tmp_path / f"k{i}", "armed": None})
    procs = []
    for item in plan:  # all at once: concurrent runs writing to different folders
        procs.append(_spawn(*FIT, "--out", item["out"]))
        if item["trigger"] == "start":
            item["armed"] = time.monotonic() + item["delay"]
    codes = _kill_when_due(procs, plan)

    # The uninterrupted reference and the resumes run in-process (bitwise the same as a
    # subprocess: one thread, float32); pictures are not compared, so skip drawing them.
    monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
    assert cli.main([*FIT, "--out", str(ref)]) == 0
    expected = _weights(ref)
    killed = 0
    for item, code in zip(plan, codes, strict=True):
        out = item["out"]
        killed += code == -signal.SIGKILL
        assert code in (0, -signal.SIGKILL), (item, code)
        # Whatever was left is loadable: every checkpoint file is complete (atomic writes).
        if (out / "train_state.pt").exists():
            state = load_tensors(out / "train_state.pt")
            assert state["model_name"] == "maf" and "optimizer" in state["state"]
        if (out / "model.pt").exists():
            load_run(out)
        resume = ["--resume"] if (out / "config.json").exists() else FIT[1:]
        rc = cli.main(["fit", *resume, "--out", str(out), "--quiet"])
        assert rc == 0, (item, capsys.readouterr().err)
        got = _weights(out)
        assert got.keys() == expected.keys()
        for k in expected:
            assert torch.equal(got[k], expected[k]), (item, k)
        assert not (out / ".lock").exists()
    assert killed >= 5, f"only {killed} of {len(plan)} processes were killed before finishing"


def test_a_locked_folder_refuses_clearly(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
    out = tmp_path / "run"
    assert cli.main([*FIT, "--epochs", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(str(holder.pid))  # as if a live fit held the folder
        assert cli.main(["fit", "--resume", "--out", str(out), "--quiet"]) == 4
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"in use by another madeflow process (pid {holder.pid})" in err
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the lock is stale and is taken over.
    assert cli.main(["fit", "--resume", "--out", str(out), "--quiet"]) == 0
    assert not (out / ".lock").exists()


class _Payload:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(path: Path, marker: Path, wrap: bool = True) -> None:
    obj = {"format_version": 1, "model_name": "maf", "model": _Payload(marker)}
    torch.save(obj if wrap else _Payload(marker), path)


def test_crafted_pickles_never_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main([*FIT, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    marker = tmp_path / "pwned"
    # The payload really runs code when unpickled without weights_only (the check can fail).
    with open(tmp_path / "probe.pkl", "wb") as f:
        pickle.dump(_Payload(marker), f)
    with open(tmp_path / "probe.pkl", "rb") as f:
        pickle.load(f)  # noqa: S301 - deliberately unsafe, to prove the payload works
    assert marker.exists()
    marker.unlink()

    saved = (run / "model.pt").read_bytes()
    _evil(run / "model.pt", marker)
    with pytest.raises(CheckpointError, match="cannot load checkpoint .* safely"):
        load_run(run)
    assert cli.main(["evaluate", str(run)]) == 4
    assert capsys.readouterr().err.count("\n") == 1
    (run / "model.pt").write_bytes(saved)  # resuming checks model.pt before train_state.pt
    _evil(run / "train_state.pt", marker)
    assert cli.main(["fit", "--resume", "--out", str(run), "--quiet"]) == 4
    assert "safely" in capsys.readouterr().err
    _evil(tmp_path / "data.pt", marker, wrap=False)
    with pytest.raises(DataError, match="cannot read"):
        load_array(tmp_path / "data.pt")
    np.save(tmp_path / "obj.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(DataError):
        load_array(tmp_path / "obj.npy")
    assert not marker.exists()


def test_a_folder_left_with_only_a_stale_lock_is_reused(tmp_path, capsys, monkeypatch):
    """A fit killed between taking the lock and writing config.json leaves only ``.lock``."""
    monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(str(dead.pid))
    assert cli.main(["fit", "--resume", "--out", str(out), "--quiet"]) == 4  # not a run yet
    assert "no config.json" in capsys.readouterr().err
    assert cli.main([*FIT, "--epochs", "1", "--out", str(out)]) == 0  # a fresh fit takes it
    load_run(out)
    assert not (out / ".lock").exists()
