"""Data-parallel training: 2 CPU processes with gloo on this machine, launched by torchrun.

Each job is ``python -m torch.distributed.run --nproc_per_node 2`` on the loopback interface and
a free port, one thread per process, bounded by a timeout. The worker programs are in
``dist_worker.py``. The jobs are module fixtures shared by several tests (starting one costs a few
seconds), so each test checks one property of the same run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

import madeflow
from madeflow import cli, load_run
from madeflow.data import MemmapRows
from madeflow.data.toy import toy_data
from madeflow.train import distributed

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(),
        reason="needs torch.distributed with the gloo backend",
    ),
]

ROOT = Path(madeflow.__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("dist_worker.py")
JOB_TIMEOUT = 240  # seconds; a job takes a few on an idle machine
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
    "8",
    "--save-every",
    "0",
    "--quiet",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: object, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``args`` on 2 local processes; ``timeout_s`` is their collective timeout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MADEFLOW_DIST_TIMEOUT=str(timeout_s))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("MADEFLOW_TRACEBACK", None)
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
    launcher += ["--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    launcher += ["--master_port", str(_free_port())]
    cmd = [*launcher, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=JOB_TIMEOUT, env=env)


def _import_worker():
    sys.path.insert(0, str(WORKER.parent))
    try:
        import dist_worker
    finally:
        sys.path.remove(str(WORKER.parent))
    return dist_worker


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_run(folder)[1].state_dict()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "moons.npy"
    np.save(path, toy_data("moons", 320, seed=1, dtype=torch.float64).numpy())
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_file):
    """The Python-API job: what each rank saw and kept (see ``dist_worker.train``)."""
    out = tmp_path_factory.mktemp("train")
    res = _torchrun(WORKER, "train", data_file, out, timeout_s=6.0)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    return ranks, (out / "timeout.txt").read_text()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """``torchrun -m madeflow fit``, uninterrupted."""
    out = tmp_path_factory.mktemp("cli") / "ref"
    res = _torchrun("-m", "madeflow", *FIT, "--out", out)
    return res, out


def _assert_equal_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_every_rank_holds_bitwise_identical_parameters_after_every_step(trained):
    (r0, r1), _ = trained
    assert r0["world"] == r1["world"] == 2
    steps0, steps1 = r0["made"]["params"], r1["made"]["params"]
    assert steps0.shape[0] == 3 * 256 // 32  # one entry per optimizer step
    assert not torch.equal(steps0[0], steps0[-1])  # training moved them
    for k in range(steps0.shape[0]):
        assert torch.equal(steps0[k], steps1[k]), f"ranks differ after step {k}"
    # Whole state dicts (buffers too: batch-norm running averages are averaged across ranks).
    for name in ("made_state", "maf_state", "bn_state"):
        _assert_equal_states(r0[name], r1[name])
    for name in ("made_history", "maf_history", "bn_history"):
        h0, h1 = dict(r0[name]), dict(r1[name])
        h0.pop("seconds"), h1.pop("seconds")
        assert h0 == h1, name  # same validation numbers, same early-stopping decisions


def test_multi_mask_made_uses_the_same_mask_on_every_rank_at_every_step(trained):
    (r0, r1), _ = trained
    masks0, masks1 = r0["made"]["masks"], r1["made"]["masks"]
    for k in range(masks0.shape[0]):
        assert torch.equal(masks0[k], masks1[k]), f"masks differ at step {k}"
    assert r0["made"]["mask_index"] == r1["made"]["mask_index"]
    assert r0["made"]["mask_index"] == [k % 3 for k in range(masks0.shape[0])]
    # The schedule really changes the masks (in 2-D there are only two orderings to draw).
    assert len({tuple(m.tolist()) for m in masks0}) == 2


def test_two_ranks_match_one_process_with_the_same_global_batch(trained, data_file):
    (r0, _), _ = trained
    w = _import_worker()
    full = torch.from_numpy(np.load(data_file))
    torch.manual_seed(100)  # rank 0's weights, which fit copies to the other rank
    made = w.made_model()
    log: dict[str, list] = {"params": [], "masks": [], "mask_index": []}
    w.record_steps(made, log)
    hist = madeflow.fit(
        made, full[:256], full[256:288], max_epochs=3, batch_size=32, lr=1e-2, seed=w.SEED,
        progress=False,
    )  # fmt: skip
    steps = torch.stack(log["params"])
    assert steps.shape == r0["made"]["params"].shape
    torch.testing.assert_close(r0["made"]["params"], steps, rtol=0, atol=1e-10)
    assert torch.equal(r0["made"]["masks"], torch.stack(log["masks"]))
    np.testing.assert_allclose(r0["made_history"]["val_log_lik"], hist.val_log_lik, atol=1e-10)
    np.testing.assert_allclose(r0["made_history"]["train_log_lik"], hist.train_log_lik, atol=1e-10)

    # Augmentation draws the global batch's noise on every rank: still the one-process run.
    torch.manual_seed(200)
    maf = w.maf_model()
    madeflow.fit(
        maf, full[:256], full[256:], max_epochs=2, batch_size=64, lr=1e-2, seed=w.SEED,
        progress=False, augment=w.jitter,
    )  # fmt: skip
    for k, v in maf.state_dict().items():
        torch.testing.assert_close(r0["maf_state"][k], v, rtol=0, atol=1e-10, msg=k)


def test_a_silent_peer_fails_after_the_timeout_instead_of_hanging(trained):
    _, report = trained
    recognised, message = report.split("\n", 1)
    assert recognised == "True", report
    assert "timed out" in message.lower(), report


def test_torchrun_command_line_trains_and_only_rank_0_writes(reference_run, tmp_path, monkeypatch):
    res, out = reference_run
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run saved to") == 1  # one report, from rank 0
    assert "madeflow: error" not in res.stderr
    for name in ("config.json", "model.pt", "metrics.json", "train_state.pt"):
        assert (out / name).is_file(), name
    assert not (out / ".lock").exists()
    # The same command in one process gives the same model up to float32 summation order.
    monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
    assert cli.main([*FIT, "--out", str(tmp_path / "one")]) == 0
    one, two = _weights(tmp_path / "one"), _weights(out)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_killed_rank_fails_the_job_clearly_and_resume_finishes(
    reference_run, tmp_path, capsys, monkeypatch
):
    ref_res, ref = reference_run
    assert ref_res.returncode == 0, ref_res.stderr[-3000:]
    out = tmp_path / "killed"
    res = _torchrun(WORKER, "kill-at", 3, *FIT, "--out", out)
    assert res.returncode != 0
    assert "SIGKILL" in res.stderr  # torchrun names the rank that died and how
    assert "madeflow: error (rank 0): lost contact with another rank" in res.stderr
    assert f"resume with: madeflow fit --resume --out {out}" in res.stderr
    assert (out / "train_state.pt").is_file() and not (out / "model.pt").exists()
    single = tmp_path / "single"
    shutil.copytree(out, single)

    # Resumed on 2 ranks: bitwise the uninterrupted run.
    res = _torchrun("-m", "madeflow", "fit", "--resume", "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_equal_states(_weights(out), _weights(ref))

    # Resumed in one process: finishes from the same checkpoint, equal up to summation order.
    monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
    assert cli.main(["fit", "--resume", "--out", str(single)]) == 0
    assert "resuming" in capsys.readouterr().err
    got, want = _weights(single), _weights(ref)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)


# ------------------------------------------------------------------ in this process, no peers
def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout() == timedelta(seconds=distributed.DEFAULT_TIMEOUT)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "2.5")
    assert distributed.timeout() == timedelta(seconds=2.5)
    for bad in ("0", "-3", "soon", "inf", "nan"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=distributed.TIMEOUT_ENV):
            distributed.timeout()


def test_init_picks_backend_device_and_timeout_from_the_launcher(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(distributed.atexit, "register", lambda fn: None)
    for key, value in (("WORLD_SIZE", "4"), ("RANK", "3"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "42")
    assert distributed.init("cpu") == torch.device("cpu")
    assert calls == [(("gloo",), {"timeout": timedelta(seconds=42)})]
    assert distributed.rank() == 3  # the launcher's, until a group answers
    assert distributed.rank_device("cuda") == torch.device("cuda", 1)
    assert distributed.backend_for("cuda:0") == "nccl"
    assert distributed.backend_for("cpu") == "gloo"


def test_without_a_launcher_everything_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched() and not distributed.is_active()
    assert distributed.init("cpu") == torch.device("cpu")
    assert not dist.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    x = torch.arange(10.0).reshape(5, 2)
    assert distributed.shard(x) is x
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_sum([1.5, torch.tensor(2.0)], "cpu") == [1.5, 2.0]


def test_shards_split_the_rows_between_ranks():
    x = torch.arange(14.0).reshape(7, 2)
    rows = MemmapRows(x.numpy())
    for data in (x, rows):
        parts = [distributed.shard(data, r, 3) for r in range(3)]
        assert [len(p) for p in parts] == [3, 2, 2]
        got = torch.cat([p[torch.arange(len(p))] for p in parts])
        assert sorted(got[:, 0].tolist()) == x[:, 0].tolist()
        assert torch.equal(parts[1][torch.arange(2)], x[1::3])
    assert distributed.shard(None, 0, 2) is None


def test_peer_failures_are_recognised():
    assert distributed.is_peer_failure(RuntimeError("[pair.cc:537] Connection closed by peer"))
    assert distributed.is_peer_failure(RuntimeError("Timed out waiting 8000ms for recv"))
    assert not distributed.is_peer_failure(ValueError("Connection closed by peer"))
    assert not distributed.is_peer_failure(RuntimeError("shapes do not match"))
