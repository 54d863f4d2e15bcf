import os
import pickle
import subprocess
import sys

import pytest
import torch

from madeflow.runs import safe_io as checkpoint
from madeflow.runs.safe_io import (
    FORMAT_VERSION,
    CheckpointError,
    RunLock,
    load_json,
    load_tensors,
    save_json,
    save_tensors,
)


def test_round_trip_and_version(tmp_path):
    path = tmp_path / "model.pt"
    weights = {"w": torch.randn(3, 2), "n": torch.tensor(5)}
    save_tensors({"model": weights, "name": "maf"}, path)
    out = load_tensors(path)
    assert out["format_version"] == FORMAT_VERSION and out["name"] == "maf"
    assert torch.equal(out["model"]["w"], weights["w"])
    torch.save({"format_version": FORMAT_VERSION + 1, "model": weights}, path)
    with pytest.raises(CheckpointError, match="format version"):
        load_tensors(path)
    torch.save({"model": weights}, path)
    with pytest.raises(CheckpointError, match="not a madeflow checkpoint"):
        load_tensors(path)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_tensors(tmp_path / "nope.pt")
    path = tmp_path / "model.pt"
    save_tensors({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cannot load"):
        load_tensors(path)


def test_leftover_temp_files_are_ignored(tmp_path):
    path = tmp_path / "model.pt"
    save_tensors({"w": torch.ones(2)}, path)
    # What a kill in the middle of a later write leaves behind: a half-written temp file.
    (tmp_path / ".model.pt.abc123.tmp").write_bytes(b"\x80\x02garbage")
    save_json({"a": 1}, tmp_path / "config.json")
    (tmp_path / ".config.json.xyz.tmp").write_text('{"a": 2')
    assert torch.equal(load_tensors(path)["w"], torch.ones(2))
    assert load_json(tmp_path / "config.json") == {"a": 1}


def test_failed_write_keeps_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_tensors({"w": torch.zeros(2)}, path)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", boom)
    with pytest.raises(CheckpointError, match=r"cannot write .*model\.pt: disk full"):
        save_tensors({"w": torch.ones(2)}, path)
    monkeypatch.undo()
    assert torch.equal(load_tensors(path)["w"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_rejected_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    with open(path, "wb") as f:
        pickle.dump({"format_version": FORMAT_VERSION, "model": _Evil(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError, match="safely"):
        load_tensors(path)
    torch.save({"format_version": FORMAT_VERSION, "model": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="safely"):
        load_tensors(path)
    assert not marker.exists()


def test_corrupt_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_json(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="not found"):
        load_json(tmp_path / "missing.json")


def test_lock_refuses_second_holder_and_takes_over_stale(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert lock.path.read_text() == str(os.getpid())
        # Another live process holds it:
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            lock.path.write_text(str(holder.pid))
            with pytest.raises(CheckpointError, match="in use"):
                RunLock(tmp_path / "run").acquire()
        finally:
            holder.kill()
            holder.wait()
        # Now its process is gone: the lock is stale and can be taken over.
        second = RunLock(tmp_path / "run")
        second.acquire()
        assert second.path.read_text() == str(os.getpid())
        second.release()
    assert not (tmp_path / "run" / ".lock").exists()
