import numpy as np
import pytest
import torch

from madeflow.data.files import DataError, Standardizer, load_array, split

ARR = np.arange(12, dtype=np.float64).reshape(6, 2) / 3


def test_npy_npz_pt_and_csv(tmp_path):
    np.save(tmp_path / "a.npy", ARR)
    np.savez(tmp_path / "one.npz", data=ARR)
    np.savez(tmp_path / "two.npz", x=ARR, y=ARR[:, :1])
    torch.save(torch.from_numpy(ARR), tmp_path / "a.pt")
    np.savetxt(tmp_path / "plain.csv", ARR, delimiter=",")
    (tmp_path / "head.csv").write_text("a,b\n" + "\n".join(f"{r[0]},{r[1]}" for r in ARR) + "\n")
    for name in ("a.npy", "one.npz", "a.pt", "plain.csv", "head.csv"):
        x = load_array(tmp_path / name)
        assert x.dtype == torch.float32 and x.shape == (6, 2), name
        assert torch.allclose(x.double(), torch.from_numpy(ARR), atol=1e-6), name
    assert load_array(tmp_path / "two.npz", key="y").shape == (6, 1)
    assert load_array(f"{tmp_path / 'two.npz'}:x", dtype=torch.float64).dtype == torch.float64
    np.save(tmp_path / "flat.npy", np.arange(5.0))
    assert load_array(tmp_path / "flat.npy").shape == (5, 1)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", "", "is empty"),
        ("blank.csv", "\n\n", "is empty"),
        ("header_only.csv", "a,b\n", "no data rows"),
        ("text.csv", "a,b\n1,2\n3,oops\n", "line 3, column 2 is not a number: 'oops'"),
        ("ragged.csv", "1,2\n3\n", "line 2 has 1 columns, expected 2"),
        ("nan.csv", "1,2\n3,nan\n4,5\n6,inf\n", r"NaN or Inf in 2 row\(s\) \(0-based\): 1, 3"),
        ("one.csv", "1,2\n", "1 row"),
        ("data.txt", "1,2\n", "unsupported data file type"),
        ("bad.npy", "not numpy", "cannot read"),
    ],
)
def test_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_array(tmp_path / name)


def test_array_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_array(tmp_path / "missing.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match=r"shape \(2, 3, 4\); expected \(N, D\)"):
        load_array(tmp_path / "cube.npy")
    np.save(tmp_path / "zero.npy", np.zeros((0, 3)))
    with pytest.raises(DataError, match="0 row"):
        load_array(tmp_path / "zero.npy")
    np.save(tmp_path / "str.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(DataError, match="expected numbers"):
        load_array(tmp_path / "str.npy")
    np.savez(tmp_path / "two.npz", x=ARR, y=ARR)
    with pytest.raises(DataError, match="several arrays"):
        load_array(tmp_path / "two.npz")
    with pytest.raises(DataError, match="no array 'z'"):
        load_array(tmp_path / "two.npz", key="z")
    torch.save({"x": torch.zeros(3, 2)}, tmp_path / "dict.pt")
    with pytest.raises(DataError, match="single tensor"):
        load_array(tmp_path / "dict.pt")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read"):
        load_array(tmp_path / "obj.npy")  # pickled objects are never loaded


def test_split_is_seeded_disjoint_and_complete():
    data = torch.arange(100.0).unsqueeze(1)
    parts = split(data, seed=1)
    assert [len(p) for p in parts] == [80, 10, 10]
    together = torch.cat(list(parts)).flatten().sort().values
    assert torch.equal(together, data.flatten())
    assert all(torch.equal(a, b) for a, b in zip(parts, split(data, seed=1)))
    assert not torch.equal(parts.train, split(data, seed=2).train)
    assert [len(p) for p in split(data, (0.6, 0.2, 0.2))] == [60, 20, 20]
    assert [len(p) for p in split(data[:3])] == [1, 1, 1]
    with pytest.raises(DataError, match="at least 3"):
        split(data[:2])


def test_standardizer_round_trip_constant_column_and_jacobian():
    x = torch.randn(50, 3) * torch.tensor([2.0, 0.5, 0.0]) + torch.tensor([1.0, -3.0, 7.0])
    s = Standardizer.fit(x)
    y = s(x)
    assert torch.allclose(y[:, :2].mean(0), torch.zeros(2), atol=1e-10)
    assert torch.allclose(y[:, :2].std(0), torch.ones(2))
    assert torch.isfinite(y).all() and s.std[2] > 0  # constant column gets the floor
    assert torch.allclose(s.inverse(y), x)
    point = torch.randn(3)
    jac = torch.autograd.functional.jacobian(lambda v: s(v), point)
    assert torch.allclose(s.log_abs_det_jacobian(), torch.linalg.slogdet(jac).logabsdet)
    restored = Standardizer(3)
    restored.load_state_dict(s.state_dict())
    assert torch.equal(restored(x), y)


def test_missing_values_read_as_nan_with_the_header_kept(tmp_path):
    from madeflow.data.csv_reader import read_csv_header

    text = "a,b,c\n1.5,,2\n,,\nnan,NaN,3\n4,5,6\n"
    (tmp_path / "m.csv").write_text(text)
    x = load_array(tmp_path / "m.csv", dtype=torch.float64, missing=True)
    nan = float("nan")
    want = torch.tensor([[1.5, nan, 2], [nan, nan, nan], [nan, nan, 3], [4, 5, 6]])
    assert torch.equal(x.isnan(), want.isnan())
    assert torch.equal(x.nan_to_num(-9), want.double().nan_to_num(-9))
    assert read_csv_header(tmp_path / "m.csv", missing=True) == ["a", "b", "c"]
    # Without a header the first line is data, even when it starts with missing cells.
    (tmp_path / "n.csv").write_text(",,\n1,,3\n")
    assert read_csv_header(tmp_path / "n.csv", missing=True) is None
    assert load_array(tmp_path / "n.csv", missing=True).isnan().sum() == 4
    # Without missing=True nothing changes: empty cells and NaN are refused.
    with pytest.raises(DataError, match="line 2, column 2 is empty"):
        load_array(tmp_path / "m.csv")
    np.save(tmp_path / "m.npy", want.numpy())
    with pytest.raises(DataError, match="NaN or Inf in 3 row"):
        load_array(tmp_path / "m.npy")
    assert load_array(tmp_path / "m.npy", missing=True).isnan().sum() == 6


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_missing_values_still_refuse_inf_naming_the_rows(tmp_path, suffix):
    arr = np.array([[1.0, np.nan], [np.inf, 2.0], [3.0, 4.0]])
    path = tmp_path / f"inf{suffix}"
    if suffix == ".csv":
        path.write_text("1,\ninf,2\n3,4\n")
    else:
        np.save(path, arr)
    with pytest.raises(DataError, match=r"Inf in 1 row\(s\) \(0-based\): 1.*missing value"):
        load_array(path, missing=True)
    np.save(tmp_path / "big.npy", np.array([[1e300, np.nan], [1.0, 2.0]]))
    with pytest.raises(DataError, match="beyond the range of float32"):
        load_array(tmp_path / "big.npy", missing=True)
