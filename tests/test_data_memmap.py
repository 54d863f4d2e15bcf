import tracemalloc

import numpy as np
import pytest
import torch

from madeflow import cli, load_run
from madeflow.cli.data import data_config, prepare
from madeflow.data import (
    DataError,
    MemmapRows,
    Standardizer,
    load_array,
    load_memmap,
    split,
    split_indices,
)
from madeflow.distributions import GaussianMADE
from madeflow.train.loop import fit

TINY = ["--hidden", "8", "--num-transforms", "2", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "data.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.normal(size=(500, 3)) * [1.0, 5.0, 0.1] + [0.0, 2.0, -1.0])
    return path


def test_load_memmap_maps_the_file_and_gathers_exactly_like_load_array(npy):
    rows = load_memmap(npy, dtype=torch.float64)
    assert isinstance(rows, MemmapRows)
    assert isinstance(rows.array, np.memmap)  # a view of the file, not a copy in memory
    assert rows.shape == (500, 3) and len(rows) == 500
    full = load_array(npy, dtype=torch.float64)
    idx = torch.tensor([499, 3, 3, 0, 250])  # unsorted, repeated
    assert torch.equal(rows[idx], full[idx])
    assert torch.equal(rows[10:13], full[10:13])
    assert torch.equal(load_memmap(npy)[idx], load_array(npy)[idx])  # float32 too
    part = rows.subset(torch.tensor([7, 9, 400])).subset(torch.tensor([2, 0]))
    assert torch.equal(part[torch.arange(2)], full[[400, 7]])


def test_memmap_checks_are_those_of_load_array(tmp_path):
    bad = np.ones((40, 2))
    bad[[3, 31], 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataError) as in_memory:
        load_array(tmp_path / "bad.npy")
    with pytest.raises(DataError) as mapped:
        load_memmap(tmp_path / "bad.npy", chunk_rows=7)  # the NaNs fall in different chunks
    assert str(mapped.value) == str(in_memory.value)
    assert "2 row(s) (0-based): 3, 31" in str(mapped.value)
    np.save(tmp_path / "ints.npy", np.arange(6))  # 1-D integers: 6 one-dimensional points
    assert load_memmap(tmp_path / "ints.npy").shape == (6, 1)
    np.save(tmp_path / "one.npy", np.ones((1, 3)))
    with pytest.raises(DataError, match="need at least 2 examples"):
        load_memmap(tmp_path / "one.npy")
    np.savetxt(tmp_path / "data.csv", np.ones((3, 2)), delimiter=",")
    with pytest.raises(DataError, match="must be a .npy file"):
        load_memmap(tmp_path / "data.csv")
    with pytest.raises(DataError, match="not found"):
        load_memmap(tmp_path / "missing.npy")


def test_moments_in_chunks_match_the_whole_array(npy):
    rows = load_memmap(npy, dtype=torch.float64)
    part = rows.subset(split_indices(500, seed=3)[0])
    x = np.load(npy)[part.index.numpy()]
    mean, std, abs_max = part.moments(chunk_rows=33)
    np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(std.numpy(), x.std(0, ddof=1), rtol=1e-12)
    np.testing.assert_array_equal(abs_max.numpy(), np.abs(x).max(0))
    s = Standardizer.from_moments(mean, std, abs_max)
    ref = Standardizer.fit(torch.from_numpy(x))
    torch.testing.assert_close(s.mean, ref.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.std, ref.std, rtol=1e-12, atol=1e-12)


def test_fit_on_memmap_rows_gives_the_parameters_of_fit_on_the_tensor(npy):
    rows = load_memmap(npy, dtype=torch.float64)
    full = torch.from_numpy(np.load(npy))
    runs = []
    for train, val in ((full[:400], full[400:]), (rows.subset(torch.arange(400)), rows[400:])):
        torch.manual_seed(1)
        model = GaussianMADE(3, [16], num_masks=2, permutation="random", seed=0)
        fit(model, train, val, max_epochs=3, batch_size=32, seed=4, progress=False)
        runs.append(model.state_dict())
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


def test_scanning_and_training_never_hold_the_whole_array(tmp_path):
    # numpy reports its allocations to tracemalloc; a whole-array read would show up at 12.8 MB.
    path = tmp_path / "big.npy"
    np.save(path, np.random.default_rng(1).normal(size=(200_000, 8)))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        rows = load_memmap(path, chunk_rows=4096)
        train, val = rows.subset(torch.arange(190_000)), rows.subset(torch.arange(190_000, 200_000))
        train.moments(chunk_rows=4096)
        model = GaussianMADE(8, [8], seed=0).float()
        fit(model, train, val, max_epochs=1, batch_size=4096, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Only the split's row index (8 bytes a row, a sorted copy while scanning) grows with N.
    assert peak < size / 4, f"peak {peak} bytes for a {size}-byte file"


def test_prepare_with_mmap_splits_the_rows_of_the_in_memory_path(npy):
    for standardize in (False, True):
        cfg = data_config(str(npy), seed=5, standardize=standardize)
        mapped = prepare(data_config(str(npy), seed=5, standardize=standardize, mmap=True))
        loaded = prepare(cfg)
        for name in ("train", "val", "test"):
            a, b = getattr(mapped, name), getattr(loaded, name)
            assert isinstance(a, MemmapRows)
            got = a[torch.arange(len(a))]
            if standardize:  # statistics summed in another order: equal to float32 rounding
                torch.testing.assert_close(got, b, rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(got, b)
    raw = load_array(npy)
    assert torch.equal(split(raw, seed=5).val, prepare(cfg | {"standardize": False}).val)
    with pytest.raises(DataError, match="--mmap needs a .npy file"):
        data_config("moons", mmap=True)


def test_cli_fit_with_mmap_trains_evaluates_and_resumes(npy, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("madeflow.cli.plots.plot_run", lambda *a, **k: [])
    args = ["fit", str(npy), "--model", "maf", *TINY, "--max-epochs", "3"]
    assert cli.main([*args, "--mmap", "--out", str(tmp_path / "mapped")]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "loaded")]) == 0
    config, mapped, _ = load_run(tmp_path / "mapped")
    assert config["data"]["mmap"] is True
    loaded = load_run(tmp_path / "loaded")[1].state_dict()
    for k, v in mapped.state_dict().items():
        torch.testing.assert_close(v, loaded[k], rtol=1e-4, atol=1e-4, msg=k)
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "mapped"), "--split", "val"]) == 0
    assert "val split: 50 rows" in capsys.readouterr().out
    more = ["fit", "--resume", "--out", str(tmp_path / "mapped"), "--max-epochs", "4", "--quiet"]
    assert cli.main(more) == 0
    assert cli.main(["fit", "moons", "--mmap", "--out", str(tmp_path / "toy")]) == 3
    assert "--mmap needs a .npy file" in capsys.readouterr().err
