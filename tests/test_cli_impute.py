"""``madeflow impute``: completed rows from a run's MADE, through the command line."""

import csv

import numpy as np
import pytest
import torch

from madeflow import cli, impute, load_run
from madeflow.data.files import load_array

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--hidden", "8", "--max-epochs", "1", "--quiet"]

# Observed patterns the identity ordering covers: prefixes {0}, {0, 1}, nothing, everything.
GOOD = "x,y,z\n0.5,,\n0.1,-0.3,\n,,\nnan,nan,nan\n0.2,0.4,1.5\n-1,,\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-mask Gaussian MADE fitted to a 3-column CSV with a header."""
    root = tmp_path_factory.mktemp("impute")
    data = np.random.default_rng(0).normal(size=(60, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, 3.0]
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "z"])
        writer.writerows(data.tolist())
    out = root / "run"
    args = ["fit", str(root / "train.csv"), "--model", "made-gaussian", *TINY, "--out", str(out)]
    assert cli.main(args) == 0
    return out


def _missing(tmp_path, text=GOOD, name="m.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_fills_nan_keeps_observed_entries_and_the_header(run, tmp_path, capsys):
    path = _missing(tmp_path)
    out = tmp_path / "done.csv"
    assert cli.main(["impute", str(run), str(path), "-o", str(out), "--seed", "3"]) == 0
    assert "filled 11 missing value(s) in 5 of 6 rows" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert lines[0] == "x,y,z"
    given = load_array(path, dtype=torch.float64, missing=True)
    done = load_array(out, dtype=torch.float64)  # NaN would be refused here
    observed = ~given.isnan()
    assert done.shape == given.shape
    assert torch.equal(done[observed], given[observed])  # bit for bit
    assert lines[-1].startswith("-1.0,") and lines[5] == "0.2,0.4,1.5"
    # The draws are the model's: the same as the Python recipe with the same seed.
    _, model, space = load_run(run)
    torch.manual_seed(3)
    with torch.no_grad():
        draws = impute(model, space.to_model(given).to(torch.float32), (1,))[0]
    want = space.to_data(draws).double()
    assert torch.allclose(done[~observed], want[~observed], atol=1e-5)


def test_npy_in_and_out_and_the_mean_of_draws(run, tmp_path, capsys):
    given = np.array([[0.5, np.nan, np.nan], [0.1, -0.3, np.nan], [0.2, 0.4, 1.5]])
    np.save(tmp_path / "m.npy", given)
    one, many = tmp_path / "one.npy", tmp_path / "many.npy"
    assert cli.main(["impute", str(run), str(tmp_path / "m.npy"), "-o", str(one)]) == 0
    args = ["impute", str(run), str(tmp_path / "m.npy"), "-o", str(many), "--draws", "400"]
    assert cli.main(args) == 0
    one, many = np.load(one), np.load(many)
    observed = ~np.isnan(given)
    assert np.array_equal(one[observed], given[observed])
    assert np.array_equal(many[observed], given[observed])
    assert np.isfinite(many).all() and not np.array_equal(one, many)
    # The mean of 400 draws is near the model's conditional mean: the solve's mean parameter.
    _, model, space = load_run(run)
    row = space.to_model(torch.from_numpy(given[1:2])).float()
    with torch.no_grad():
        mean_z = model.made(row.nan_to_num())[0][0, 2]  # x2's mean given x0, x1 (one Gaussian)
    want = float(space.to_data(torch.tensor([[0.0, 0.0, float(mean_z)]]))[0, 2])
    assert abs(many[1, 2] - want) < 0.15


def test_a_pattern_no_mask_covers_is_one_line_naming_orderings_that_work(run, tmp_path, capsys):
    path = _missing(tmp_path, "x,y,z\n0.5,,\n,1.0,\n,,2.0\n")
    out = tmp_path / "o.csv"
    assert cli.main(["impute", str(run), str(path), "-o", str(out)]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("madeflow: error: ")
    assert "cannot impute 2 row(s) (batch indices 1, 2)" in err
    assert "observed inputs [1]" in err and "e.g. [1, 0, 2]" in err
    assert "covering_orderings" in err and "observed first in the file" in err
    assert not out.exists()


def test_existing_output_needs_force(run, tmp_path, capsys):
    path = _missing(tmp_path)
    out = tmp_path / "o.csv"
    out.write_text("keep me\n")
    assert cli.main(["impute", str(run), str(path), "-o", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"
    assert cli.main(["impute", str(run), str(path), "-o", str(out), "--force"]) == 0
    assert out.read_text().startswith("x,y,z\n")


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b\n0.5,\n1,2\n", "has 2 columns; the model expects 3"),
        ("1,2,3,4\n0.5,,,\n", "has 4 columns; the model expects 3"),
        ("x,y,z\n0.5,,\ninf,1,2\n", r"Inf in 1 row\(s\) \(0-based\): 1"),
        ("x,y,z\n0.5,,\n1,oops,2\n", "line 3, column 2 is not a number"),
    ],
)
def test_bad_data_files_exit_3_with_one_line(run, tmp_path, capsys, text, message):
    path = _missing(tmp_path, text)
    out = tmp_path / "o.csv"
    assert cli.main(["impute", str(run), str(path), "-o", str(out)]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert pytest.importorskip("re").search(message, err), err
    assert not out.exists()


def test_a_changed_model_file_is_refused_unless_forced(run, tmp_path, capsys):
    copy = tmp_path / "run"
    copy.mkdir()
    for f in run.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    state = torch.load(copy / "model.pt", weights_only=True)
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first] = state["model"][first] + 0.01
    torch.save(state, copy / "model.pt")
    path = _missing(tmp_path)
    assert cli.main(["impute", str(copy), str(path), "-o", str(tmp_path / "o.csv")]) == 4
    assert "model.pt" in capsys.readouterr().err
    args = ["impute", str(copy), str(path), "-o", str(tmp_path / "o.csv"), "--force"]
    assert cli.main(args) == 0


def test_a_flow_run_is_refused_as_usage(tmp_path, capsys):
    out = tmp_path / "maf"
    args = ["fit", "moons", "--model", "maf", "--toy-size", "60", "--num-transforms", "1"]
    assert cli.main([*args, *TINY, "--out", str(out)]) == 0
    path = _missing(tmp_path, "0.5,\n0.1,0.2\n")
    assert cli.main(["impute", str(out), str(path), "-o", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "needs a MADE density estimator run" in err and "'maf'" in err
