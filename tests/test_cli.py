import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from madeflow import cli, load_run
from madeflow.cli import fit as cli_fit
from madeflow.cli.data import prepare
from madeflow.runs.safe_io import load_tensors
from madeflow.train.loop import NonFiniteLossError

TINY = ["--hidden", "8", "--num-transforms", "2", "--num-components", "2", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "madeflow", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "moons"
    res = _run(
        "fit",
        "moons",
        "--model",
        "maf",
        *TINY,
        "--max-epochs",
        "2",
        "--toy-size",
        "400",
        "--out",
        out,
    )
    assert res.returncode == 0, res.stderr
    assert "test log-likelihood" in res.stdout and "data units" in res.stdout
    return out


def test_fit_subprocess_writes_a_complete_run(moons_run):
    names = {p.name for p in moons_run.iterdir()}
    assert {"config.json", "model.pt", "metrics.json", "samples.png", "training.png"} <= names
    assert ".lock" not in names
    config = json.loads((moons_run / "config.json").read_text())
    assert config["model"]["name"] == "maf" and config["model"]["input_dim"] == 2
    metrics = json.loads((moons_run / "metrics.json").read_text())
    assert len(metrics["history"]["train_log_lik"]) == 2
    assert np.isfinite(metrics["test_log_lik_data_space"])


def test_error_in_subprocess_is_one_line_with_exit_code(tmp_path):
    res = _run("fit", tmp_path / "missing.csv", "--out", tmp_path / "r")
    assert res.returncode == 3
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"madeflow: error: data file not found: {tmp_path / 'missing.csv'}"
    ]


def test_evaluate_matches_model_and_writes_rows(moons_run, tmp_path, capsys):
    out_npy, out_csv = tmp_path / "ll.npy", tmp_path / "ll.csv"
    assert cli.main(["evaluate", str(moons_run), "--output", str(out_npy)]) == 0
    assert "40 rows" in capsys.readouterr().out
    ll = np.load(out_npy)
    assert ll.shape == (40,) and np.isfinite(ll).all()
    metrics = json.loads((moons_run / "metrics.json").read_text())
    assert ll.mean() == pytest.approx(metrics["test_log_lik_data_space"], abs=1e-4)
    # Scoring a file of raw points gives the same numbers as the run's own test split.
    config, model, space = load_run(moons_run)
    test = prepare(config["data"]).test
    np.savetxt(tmp_path / "pts.csv", space.to_data(test).numpy(), delimiter=",")
    assert (
        cli.main(["evaluate", str(moons_run), str(tmp_path / "pts.csv"), "-o", str(out_csv)]) == 0
    )
    assert np.allclose(np.loadtxt(out_csv, delimiter=","), ll, atol=1e-3)


def test_sample_and_plot(moons_run, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert cli.main(["sample", str(moons_run), "-n", "300", "-o", str(out)]) == 0
    samples = np.loadtxt(out, delimiter=",")
    assert samples.shape == (300, 2)
    # Original units, not standardised: the spread matches the data's, not 1.
    config, _, space = load_run(moons_run)
    assert np.allclose(samples.std(0), space.standardizer.std.numpy(), rtol=0.5)
    (moons_run / "samples.png").unlink()
    assert cli.main(["plot", str(moons_run)]) == 0
    assert (moons_run / "samples.png").stat().st_size > 1000
    assert cli.main(["sample", str(moons_run), "-n", "5", "-o", str(tmp_path / "s.txt")]) == 2


@pytest.mark.filterwarnings("ignore:MADE.*cannot see:UserWarning")
def test_digits_tiny_logit_and_binary(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["fit", "digits", "--model", "made-mog", *TINY, "--max-epochs", "1", "--out", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "pixel space" in printed
    assert (out / "samples.png").is_file()
    assert cli.main(["sample", str(out), "-n", "4", "-o", str(tmp_path / "d.npy")]) == 0
    pix = np.load(tmp_path / "d.npy")
    assert pix.shape == (4, 64) and pix.min() >= 0 and pix.max() <= 1
    out_b = tmp_path / "b"
    assert cli.main(["fit", "digits-binary", *TINY, "--max-epochs", "1", "--out", str(out_b)]) == 0
    assert json.loads((out_b / "config.json").read_text())["model"]["name"] == "made-bernoulli"
    assert cli.main(["sample", str(out_b), "-n", "3", "-o", str(tmp_path / "b.npy")]) == 0
    assert set(np.unique(np.load(tmp_path / "b.npy"))) <= {0.0, 1.0}
    assert (
        cli.main(["fit", "moons", "--model", "made-bernoulli", "--out", str(tmp_path / "x")]) == 2
    )


def test_sample_csv_keeps_the_header_of_a_csv_it_was_trained_on(tmp_path, capsys):
    rows = np.random.default_rng(0).normal(size=(60, 2))
    lines = ['"height, cm",weight'] + [f"{a:.6f},{b:.6f}" for a, b in rows]
    (tmp_path / "named.csv").write_text("\n".join(lines) + "\n")
    np.savetxt(tmp_path / "plain.csv", rows, delimiter=",")
    for name in ("named", "plain"):
        run = tmp_path / f"run-{name}"
        fit = ["fit", str(tmp_path / f"{name}.csv"), "--model", "maf", *TINY, "--max-epochs", "1"]
        assert cli.main([*fit, "--out", str(run)]) == 0
        out = tmp_path / f"{name}-samples.csv"
        assert cli.main(["sample", str(run), "-n", "7", "-o", str(out), "--seed", "1"]) == 0
        text = out.read_text().splitlines()
        if name == "named":
            assert text[0] == '"height, cm",weight'  # quoted where the name needs it
            assert json.loads((run / "config.json").read_text())["data"]["columns"] == [
                "height, cm",
                "weight",
            ]
        assert len(text) == 7 + (name == "named")
        # The samples read back with the header: the same numbers as the run's .npy output.
        assert (
            cli.main(
                ["sample", str(run), "-n", "7", "-o", str(out.with_suffix(".npy")), "--seed", "1"]
            )
            == 0
        )
        np.testing.assert_allclose(
            np.loadtxt(out, delimiter=",", skiprows=int(name == "named")),
            np.load(out.with_suffix(".npy")),
            rtol=1e-8,
        )


def test_one_epoch_numbering_in_metrics_and_output(tmp_path, capsys):
    """The printed best epoch, metrics.json and the history's lists agree (counted from 1)."""
    run = tmp_path / "run"
    args = ["fit", "moons", "--model", "maf", *TINY, "--toy-size", "200", "--lr", "0.05"]
    assert cli.main([*args, "--max-epochs", "40", "--patience", "2", "--out", str(run)]) == 0
    printed = capsys.readouterr().out
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert history["stopped"] == "early_stopping" and history["epochs"] < 40
    best = history["best_epoch"]
    assert (
        f"stopped after {history['epochs']} epochs (early_stopping); best epoch {best};" in printed
    )
    assert history["val_log_lik"][best - 1] == history["best_val_log_lik"]
    assert history["epochs"] == best + 2  # patience 2, counted the same way


def test_resume_gives_same_weights_as_uninterrupted(tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).normal(size=(200, 3)) @ np.diag([1.0, 2.0, 3.0]))
    common = ["--model", "made-gaussian", *TINY, "--save-every", "0", "--patience", "50"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli.main(["fit", str(data), *common, "--max-epochs", "4", "--out", str(full)]) == 0
    assert cli.main(["fit", str(data), *common, "--max-epochs", "2", "--out", str(part)]) == 0
    assert cli.main(["fit", "--resume", "--max-epochs", "4", "--out", str(part), "--quiet"]) == 0
    a, b = load_tensors(full / "model.pt")["model"], load_tensors(part / "model.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_errors(moons_run, tmp_path, capsys):
    # An existing non-empty --out is refused without --resume.
    assert cli.main(["fit", "moons", "--out", str(moons_run)]) == 2
    assert "already exists" in capsys.readouterr().err
    # --resume on a folder that is not a run.
    (tmp_path / "empty").mkdir()
    assert cli.main(["fit", "--resume", "--out", str(tmp_path / "empty")]) == 4
    assert cli.main(["evaluate", str(tmp_path / "empty")]) == 4
    # A corrupt checkpoint and a checkpoint of another model type.
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("config.json", "model.pt"):
        (bad / f).write_bytes((moons_run / f).read_bytes())
    config = json.loads((bad / "config.json").read_text())
    config["model"]["name"] = "made-gaussian"
    (bad / "config.json").write_text(json.dumps(config))
    assert cli.main(["sample", str(bad), "-n", "2", "-o", str(tmp_path / "x.npy")]) == 4
    assert "holds a 'maf' model" in capsys.readouterr().err
    (bad / "model.pt").write_bytes(b"garbage")
    assert cli.main(["evaluate", str(bad)]) == 4


def test_locked_folder_is_refused(moons_run, tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (moons_run / ".lock").write_text(str(holder.pid))
        assert cli.main(["fit", "--resume", "--out", str(moons_run)]) == 4
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
        (moons_run / ".lock").unlink()


def test_data_and_usage_errors(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((10, 3)))
    np.save(tmp_path / "nan.npy", np.array([[1.0], [np.nan], [2.0]]))
    assert cli.main(["fit", str(tmp_path / "nan.npy"), "--out", str(tmp_path / "r")]) == 3
    assert "NaN or Inf in 1 row(s) (0-based): 1" in capsys.readouterr().err
    assert cli.main(["fit", "moons", "--model", "nope"]) == 2
    assert cli.main(["evaluate"]) == 2
    assert cli.main(["fit", "moons", "--threads", "0", "--out", str(tmp_path / "t")]) == 2
    # A data file of the wrong width for the run.
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "fit",
                "moons",
                "--model",
                "made-gaussian",
                *TINY,
                "--max-epochs",
                "1",
                "--toy-size",
                "50",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert cli.main(["evaluate", str(run), str(tmp_path / "x.npy")]) == 3
    assert "3 columns; the model expects 2" in capsys.readouterr().err

    def nan_fit(*args, **kwargs):
        raise NonFiniteLossError("training loss became nan at epoch 1, step 1")

    monkeypatch.setattr(cli_fit, "fit", nan_fit)
    assert cli.main(["fit", "moons", *TINY, "--out", str(tmp_path / "n")]) == 5
    assert not (tmp_path / "n" / "model.pt").exists()


def test_bernoulli_on_binary_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "bits.npy", (rng.random((60, 4)) < 0.3).astype(float))
    np.save(tmp_path / "real.npy", rng.normal(size=(60, 4)))
    args = ["--model", "made-bernoulli", *TINY, "--max-epochs", "1"]
    assert cli.main(["fit", str(tmp_path / "bits.npy"), *args, "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["fit", str(tmp_path / "real.npy"), *args, "--out", str(tmp_path / "b")]) == 3
    assert "binary data" in capsys.readouterr().err


def test_interrupt_exits_130_with_resume_hint(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_fit, "fit", interrupted)
    out = tmp_path / "r"
    assert cli.main(["fit", "moons", *TINY, "--toy-size", "50", "--out", str(out)]) == 130
    assert f"madeflow fit --resume --out {out}" in capsys.readouterr().err
    assert not (out / ".lock").exists()  # the lock is released
