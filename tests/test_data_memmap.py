import numpy as np
import pytest
import torch

from madeflow.data import (
    DataError,
    MemmapRows,
    Standardizer,
    load_array,
    load_memmap,
    split_indices,
)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
