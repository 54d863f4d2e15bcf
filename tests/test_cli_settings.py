"""madeflow fit's defaults are sized to the data, recorded in config.json, and flags win."""

from __future__ import annotations

import json

import pytest

from madeflow import cli
from madeflow.cli.settings import FIT_DEFAULTS, SIZED, sized_defaults
from madeflow.models import DEFAULTS

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--num-transforms", "1", "--num-components", "2", "--quiet"]


def test_digits_keep_the_settings_of_the_measured_main_job():
    """The no-argument run (D=64, 1258 training rows) is exactly what was measured before."""
    assert sized_defaults(64, 1258) == {
        "hidden": [256, 256],
        "batch_size": 100,
        "max_epochs": 300,
        "patience": 30,
    }
    assert DEFAULTS["hidden_dims"] == [256, 256]  # build_model's own default is unchanged


def test_a_2d_toy_gets_a_small_model_and_short_run():
    sized = sized_defaults(2, 8000)  # moons at the default --toy-size
    assert sized["hidden"] == [64, 64] and sized["max_epochs"] <= 60
    assert sized["batch_size"] == 800  # about ten steps an epoch
    # Monotone in the data: more columns never get a smaller model, more rows never more epochs.
    for d in (1, 2, 16, 64, 100, 1000):
        assert sized_defaults(d, 1000)["hidden"][0] <= sized_defaults(d + 1, 1000)["hidden"][0]
    for n in (10, 1000, 10**5, 10**7):
        assert 20 <= sized_defaults(2, n)["max_epochs"] <= 300
        assert sized_defaults(2, n)["max_epochs"] >= sized_defaults(2, n * 10)["max_epochs"]
        assert 100 <= sized_defaults(2, n)["batch_size"] <= 1000
    assert sized_defaults(2, 8000, max_epochs=150)["patience"] == 30
    assert set(SIZED) == {k for k, v in FIT_DEFAULTS.items() if v == "sized"}


def _config(run):
    return json.loads((run / "config.json").read_text())


def test_sized_values_are_recorded_and_flags_win(tmp_path):
    run = tmp_path / "sized"
    assert (
        cli.main(["fit", "moons", *SMALL, "--toy-size", "300", "--epochs", "1", "--out", str(run)])
        == 0
    )
    config = _config(run)
    want = sized_defaults(2, 240, max_epochs=1)  # 80% of 300 rows train
    assert config["model"]["options"]["hidden_dims"] == want["hidden"] == [64, 64]
    assert config["training"]["batch_size"] == want["batch_size"]
    assert config["training"]["patience"] == want["patience"]
    assert config["training"]["max_epochs"] == 1  # given
    assert config["training"]["sized_to_data"] == {
        "input_dim": 2,
        "train_rows": 240,
        "flags": ["hidden", "batch_size", "patience"],
    }

    given = tmp_path / "given"
    flags = ["--hidden", "8", "--batch-size", "30", "--patience", "3", "--epochs", "1"]
    assert cli.main(["fit", "moons", *SMALL, "--toy-size", "300", *flags, "--out", str(given)]) == 0
    config = _config(given)
    assert config["model"]["options"]["hidden_dims"] == [8]
    assert (config["training"]["batch_size"], config["training"]["patience"]) == (30, 3)
    assert "sized_to_data" not in config["training"]


def test_resume_keeps_the_sized_values(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["fit", "moons", *SMALL, "--toy-size", "300", "--out", str(run)]
    assert cli.main([*common, "--epochs", "1"]) == 0
    before = _config(run)
    assert cli.main(["fit", "--resume", "--out", str(run), "--epochs", "2", "--quiet"]) == 0
    after = _config(run)
    assert after["training"]["max_epochs"] == 2
    for key in ("batch_size", "patience", "sized_to_data"):
        assert after["training"][key] == before["training"][key]
    assert after["model"] == before["model"]
    # The sized width given explicitly agrees with the recorded one: not a conflict.
    assert cli.main(["fit", "--resume", "--out", str(run), "--hidden", "64", "64"]) == 0
