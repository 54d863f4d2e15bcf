"""Run folders: tampering and drift are noticed, and every loaded value is checked first.

* Fingerprints: a data file changed since ``fit`` is refused by ``evaluate`` (own split) and
  ``fit --resume`` (exit 3) and noted by ``plot``; a ``model.pt`` that is not the one the run
  saved is refused by ``evaluate``, ``sample``, ``plot`` and ``fit --resume`` (exit 4);
  ``--force`` goes on with one warning line.
* :data:`CONFIG_CASES`: tampered ``config.json`` values (``10**6`` layers, a ``10**9``-wide
  layer, ``"false"`` for a bool, ``8.7`` for a width, ...) are refused in one line, fast.
* :data:`CHECKPOINT_CASES`: tampered ``model.pt`` fields (a repeated index in a permutation,
  NaN weights, negative variances or scales, ...) and ``train_state.pt`` fields.
* Property tests: random values put in random fields of ``config.json`` and ``model.pt`` give a
  loaded run or a ``CheckpointError``, nothing else.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runs_helper import (
    CliCase,
    RunCopy,
    check_cli_case,
    copy_run,
    edit_config,
    fit_tiny,
    write_data,
)

from madeflow import CheckpointError, cli, load_run
from madeflow.runs import RunWarning
from madeflow.runs.safe_io import load_tensors, save_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two finished batch-norm MAF runs on different CSV files (trained once for the module)."""
    folder = tmp_path_factory.mktemp("integrity")
    fit_tiny(folder / "a", str(write_data(folder / "a.csv", seed=0)), "--batch-norm")
    fit_tiny(folder / "b", str(write_data(folder / "b.csv", seed=1)), "--batch-norm")
    return folder / "a", folder / "b"


@pytest.fixture
def env(runs, tmp_path) -> RunCopy:
    """A copy of run a (data file: ``a.csv``), and run b's ``model.pt`` as ``foreign.pt``."""
    shutil.copy(runs[1] / "model.pt", tmp_path / "foreign.pt")
    return copy_run(runs[0], tmp_path)


def _same_size_edit(path: Path) -> None:
    """Change one digit of the file: same size, different SHA-256."""
    text = path.read_text()
    i = next(i for i, c in enumerate(text) if c.isdigit() and c != "7")
    path.write_text(text[:i] + "7" + text[i + 1 :])


def _append_row(path: Path) -> None:
    with path.open("a") as f:
        f.write("0.5,0.5\n")


# ----------------------------------------------------------------------------- fingerprints
def test_config_records_the_fingerprints(env):
    config = json.loads((env.run / "config.json").read_text())
    data, model = config["fingerprints"]["data"], config["fingerprints"]["model"]
    assert data["size"] == env.data.stat().st_size and data["shape"] == [80, 2]
    assert len(data["sha256"]) == 64 and model["size"] == (env.run / "model.pt").stat().st_size


def _foreign(e: RunCopy) -> None:
    shutil.copy(e.tmp / "foreign.pt", e.run / "model.pt")  # run b's model.pt


FOREIGN = r"model\.pt is not the model this run saved \((its contents|its size) changed"
FINGERPRINT_CASES: dict[str, CliCase] = {
    "evaluate-data-same-size": CliCase(
        lambda e: ["evaluate", str(e.run)],
        3,
        r"a\.csv changed since this run was fitted \(its contents changed \(same size, "
        r"different SHA-256\)\); its test split is not the one .*--force",
        prepare=lambda e: _same_size_edit(e.data),
    ),
    "evaluate-data-grew": CliCase(
        lambda e: ["evaluate", str(e.run), "--split", "val"],
        3,
        r"its size changed from \d+ to \d+ bytes\); its val split",
        prepare=lambda e: _append_row(e.data),
    ),
    "resume-data-changed": CliCase(
        lambda e: ["fit", "--resume", "--out", str(e.run), "--quiet"],
        3,
        r"resuming would train on other data",
        prepare=lambda e: _append_row(e.data),
    ),
    "evaluate-foreign-model": CliCase(
        lambda e: ["evaluate", str(e.run)], 4, FOREIGN, prepare=_foreign
    ),
    "sample-foreign-model": CliCase(
        lambda e: ["sample", str(e.run), "-o", str(e.tmp / "s.npy")], 4, FOREIGN, prepare=_foreign
    ),
    "plot-foreign-model": CliCase(lambda e: ["plot", str(e.run)], 4, FOREIGN, prepare=_foreign),
    "resume-foreign-model": CliCase(
        lambda e: ["fit", "--resume", "--out", str(e.run), "--quiet"],
        4,
        r"pass --force \(force=True\) to go on resuming, which overwrites it",
        prepare=_foreign,
    ),
}


@pytest.mark.parametrize("name", list(FINGERPRINT_CASES))
def test_drift_and_tampering_are_refused(name, env, capsys):
    check_cli_case(FINGERPRINT_CASES[name], env, capsys)


def test_force_goes_on_with_one_warning_line(env, capsys):
    _same_size_edit(env.data)
    _foreign(env)
    assert cli.main(["evaluate", str(env.run), "--force"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("madeflow: warning: ") for line in err), err
    assert "changed since this run was fitted" in err[0] + err[1]
    assert "not the model this run saved" in err[0] + err[1]
    with pytest.warns(RunWarning, match="not the model this run saved"):
        load_run(env.run, force=True)


def test_plot_notes_changed_data_and_draws_the_model_alone(env, capsys):
    _append_row(env.data)
    assert cli.main(["plot", str(env.run)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "plotting the model without its test data" in err[0]
    assert (env.run / "samples.png").is_file()


def test_resume_with_force_records_the_new_data(env, capsys):
    _append_row(env.data)
    args = ["fit", "--resume", "--out", str(env.run), "--max-epochs", "2", "--quiet", "--force"]
    assert cli.main(args) == 0
    assert "going on with its new contents (--force)" in capsys.readouterr().err
    assert cli.main(["evaluate", str(env.run)]) == 0  # the new contents are the recorded ones
    config = json.loads((env.run / "config.json").read_text())
    assert config["fingerprints"]["data"]["shape"] == [81, 2]


def test_a_run_without_a_model_fingerprint_warns_and_loads(env):
    edit_config(env.run, lambda c: c["fingerprints"].pop("model"))
    with pytest.warns(RunWarning, match="records no fingerprint of model.pt"):
        load_run(env.run)


# ----------------------------------------------------------------------------- config.json
def _set(path: str, value: Any) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            config = config[key]
        config[last] = value

    return change


CONFIG_CASES: dict[str, tuple[Callable[[dict], None], str]] = {
    "million-transforms": (
        _set("model.options.num_transforms", 10**6),
        r"config\.json: model is invalid: this maf would have \d+ masked layers, more than the cap",
    ),
    "billion-wide": (_set("model.options.hidden_dims", [10**9]), r"parameters, more than the cap"),
    "million-hidden-layers": (_set("model.options.hidden_dims", [8] * 10**6), r"hidden_dims has"),
    "string-bool": (_set("model.options.batch_norm", "false"), r"batch_norm must be true or false"),
    "float-width": (_set("model.options.hidden_dims", [8.7]), r"got 8\.7"),
    "negative-masks": (_set("model.options.num_masks", -3), r"num_masks must be an integer >= 1"),
    "unknown-option": (
        _set("model.options.dropout", 0.5),
        r"unknown model option\(s\) \['dropout'\]",
    ),
    "input-dim-zero": (_set("model.input_dim", 0), r"input_dim must be an integer >= 1, got 0"),
    "unknown-model": (_set("model.name", "realnvp"), r"unknown model 'realnvp'"),
    "toy-size-huge": (_set("data.toy_size", 10**12), r"data\.toy_size must be in \[3, 10000000\]"),
    "data-kind": (_set("data.kind", "excel"), r"data\.kind must be one of"),
    "alpha": (_set("data.alpha", 2), r"data\.alpha must be a number in \(0, 0\.5\), got 2"),
    "standardize-string": (_set("data.standardize", "yes"), r"data\.standardize must be true or"),
    "lr-negative": (_set("training.lr", -1), r"training\.lr must be a finite number > 0, got -1"),
    "lr-string": (_set("training.lr", "fast"), r"training\.lr must be a finite number"),
    "epochs-float": (_set("training.max_epochs", 1.5), r"training\.max_epochs must be an integer"),
    "format-version-true": (_set("format_version", True), r"has format version True"),
    "section-missing": (lambda c: c.pop("training"), r"training must be a JSON object, got None"),
    "not-an-object": (lambda c: c.clear() or c.update({"x": [1]}), r"format version None"),
    "sha256-garbage": (
        _set("fingerprints.model.sha256", "abc"),
        r"fingerprints\.model must hold a sha256",
    ),
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_tampered_config_value_is_refused_fast(name, env, capsys):
    change, pattern = CONFIG_CASES[name]
    edit_config(env.run, change)
    t0 = time.perf_counter()
    check_cli_case(CliCase(lambda e: ["evaluate", str(e.run)], 4, pattern), env, capsys)
    assert time.perf_counter() - t0 < 2.0  # nothing of that size was built


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('{"format_version": 1, "data": {', r"cannot read .*config\.json: .*truncated or edited"),
        ("", r"cannot read .*config\.json: Expecting value"),
        ('{"format_version": NaN}', r"cannot read .*config\.json: NaN is not valid JSON"),
        ("[1, 2]", r"config\.json: the file holds a list, not a JSON object"),
        (b"\xff\xfe{}", r"cannot read .*config\.json: 'utf-8' codec can't decode"),
    ],
    ids=["truncated", "empty", "bare-nan", "list", "not-utf8"],
)
def test_unreadable_config_is_one_line(text, pattern, env, capsys):
    path = env.run / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    check_cli_case(
        CliCase(lambda e: ["sample", str(e.run), "-o", "x.npy"], 4, pattern), env, capsys
    )


# ----------------------------------------------------------------------------- model.pt
def _tamper(key: str, change: Callable[[torch.Tensor], Any]) -> Callable[[RunCopy], None]:
    def prepare(e: RunCopy) -> None:
        obj = load_tensors(e.run / "model.pt")
        obj.pop("format_version")
        section, _, name = key.partition(":")
        if change is KeyError:
            del obj[section][name]
        else:
            obj[section][name] = change(obj[section][name])
        save_tensors(obj, e.run / "model.pt")

    return prepare


CHECKPOINT_CASES: dict[str, tuple[Callable[[RunCopy], None], str]] = {
    # was: loaded, with input degrees filled from uninitialised memory
    "repeated-permutation-index": (
        _tamper("model:transforms.0.nn.permutations", lambda t: torch.tensor([[1, 1]])),
        r"does not fit the model in config\.json: cannot load transforms\.0\.nn\.permutations: "
        r"row 0 is not a permutation of range\(2\) \(input\(s\) \[1\] repeated\)",
    ),
    "degree-out-of-range": (
        _tamper("model:transforms.2.nn.degrees_0", lambda t: t + 10),
        r"degrees_0: degrees must lie in \[0, 1\]",
    ),
    "float-permutation": (
        _tamper("model:transforms.0.nn.permutations", lambda t: t.double()),
        r"permutations has dtype torch\.float64, expected torch\.int64",
    ),
    "nan-weight": (
        _tamper("model:transforms.0.nn.layers.0.weight", lambda t: t * float("nan")),
        r"transforms\.0\.nn\.layers\.0\.weight holds NaN or Inf",
    ),
    "negative-running-var": (
        _tamper("model:transforms.1.running_var", lambda t: -t),
        r"transforms\.1\.running_var holds a variance <= 0",
    ),
    "negative-scale": (
        _tamper("data_space:std", lambda t: -t),
        r"data_space\.std holds a scale <= 0",
    ),
    "nan-mean": (
        _tamper("data_space:mean", lambda t: t * float("nan")),
        r"data_space\.mean holds NaN",
    ),
    "scale-shape": (
        _tamper("data_space:std", lambda t: t[:1]),
        r"data_space\.std has shape \(1,\), expected",
    ),
    "scale-missing": (
        _tamper("data_space:std", KeyError),
        r"'data_space' must be empty or hold 'mean' and 'std'",
    ),
    "missing-weight": (
        _tamper("model:loc", KeyError),
        r"does not fit the model in config\.json: Missing key",
    ),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_CASES))
def test_tampered_checkpoint_field_is_refused(name, env, capsys):
    prepare, pattern = CHECKPOINT_CASES[name]
    case = CliCase(lambda e: ["evaluate", str(e.run), "--force"], 4, pattern, prepare=prepare)
    check_cli_case(case, env, capsys)  # --force: the specific check, not the fingerprint, speaks


def _tamper_state(change: Callable[[dict], None]) -> Callable[[RunCopy], None]:
    def prepare(e: RunCopy) -> None:
        obj = load_tensors(e.run / "train_state.pt")
        obj.pop("format_version")
        change(obj["state"])
        save_tensors(obj, e.run / "train_state.pt")

    return prepare


STATE_FILE_CASES: dict[str, tuple[Callable[[RunCopy], None], str]] = {
    "adam-moment-shape": (
        _tamper_state(lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(7))),
        r"train_state\.pt is damaged: optimizer\.state\.0\.exp_avg has shape \(7,\)",
    ),
    "generator": (
        _tamper_state(lambda s: s.update(generator=torch.zeros(2, dtype=torch.uint8))),
        r"is damaged: generator is not a random generator state; delete it",
    ),
    "best-model-permutation": (
        _tamper_state(
            lambda s: s["best_model"].update(
                {"transforms.2.nn.permutations": torch.tensor([[0, 0]])}
            )
        ),
        r"is damaged: cannot load transforms\.2\.nn\.permutations",
    ),
    "truncated": (
        lambda e: (e.run / "train_state.pt").write_bytes(
            (e.run / "train_state.pt").read_bytes()[:1000]
        ),
        r"cannot load checkpoint .*train_state\.pt safely",
    ),
    "no-state": (
        lambda e: save_tensors({"model_name": "maf"}, e.run / "train_state.pt"),
        r"train_state\.pt holds no training state; delete it to start the run again",
    ),
}


@pytest.mark.parametrize("name", list(STATE_FILE_CASES))
def test_tampered_training_state_is_refused_on_resume(name, env, capsys):
    prepare, pattern = STATE_FILE_CASES[name]
    argv = lambda e: ["fit", "--resume", "--out", str(e.run), "--quiet", "--max-epochs", "3"]  # noqa: E731
    case = CliCase(argv, 4, pattern, prepare=prepare)
    check_cli_case(case, env, capsys)  # config.json (max_epochs 3) is not rewritten either


# ----------------------------------------------------------------------------- properties
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.lists(st.integers(-3, 10**10), max_size=3),
    st.just({}),
)
CONFIG_KEYS = [
    "format_version",
    "data.kind",
    "data.source",
    "data.seed",
    "data.toy_size",
    "data.standardize",
    "data.alpha",
    "data.mmap",
    "model.name",
    "model.input_dim",
    "model.options.hidden_dims",
    "model.options.num_transforms",
    "model.options.num_components",
    "model.options.num_masks",
    "model.options.context_dim",
    "model.options.batch_norm",
    "model.options.seed",
    "training.lr",
    "training.batch_size",
    "training.max_epochs",
    "fingerprints.model.size",
]
PROPS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPS
@given(key=st.sampled_from(CONFIG_KEYS), value=JSON_VALUES)
def test_random_config_values_load_or_give_a_checkpoint_error(runs, tmp_path, key, value):
    # A fresh folder per example: hypothesis replays a failing example in the same tmp_path.
    folder = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    shutil.copytree(runs[0], folder)
    edit_config(folder, _set(key, value))
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)
            load_run(folder, force=True)
    except CheckpointError as err:
        assert "\n" not in str(err)
    # A guard against hangs (a config asking for 10**9 units must be refused, not built), loose
    # enough for a loaded 2-core machine: legal models of a few thousand layers take seconds.
    assert time.perf_counter() - t0 < 30.0
    shutil.rmtree(folder)


TENSORS = st.one_of(
    st.builds(lambda n: torch.full((n,), float("nan")), st.integers(0, 3)),
    st.builds(lambda n: torch.arange(n), st.integers(0, 3)),
    st.builds(lambda v: torch.tensor(v), st.integers(-5, 5)),
    st.builds(lambda v: torch.tensor([[v, v]]), st.integers(-2, 3)),
    st.builds(lambda v: torch.full((2,), v), st.floats(-1e3, 1e3)),
    st.just(torch.zeros(0, dtype=torch.bool)),
    st.none(),
    st.text(max_size=3),
)


@PROPS
@given(data=st.data(), value=TENSORS)
def test_random_checkpoint_fields_load_or_give_a_checkpoint_error(runs, tmp_path, data, value):
    folder = tmp_path / f"m{data.draw(st.integers(0, 10**9))}"
    shutil.copytree(runs[0], folder)
    obj = load_tensors(folder / "model.pt")
    obj.pop("format_version")
    section = data.draw(st.sampled_from(["model", "data_space", "model_name"]))
    if section == "model_name":
        obj["model_name"] = value
    else:
        key = data.draw(st.sampled_from(sorted(obj[section])))
        obj[section][key] = value
    try:
        save_tensors(obj, folder / "model.pt")
    except Exception:  # not savable as plain data (e.g. a str where the loader wants tensors)
        shutil.rmtree(folder)
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)
            load_run(folder, force=True)
    except CheckpointError as err:
        assert "\n" not in str(err)
    shutil.rmtree(folder)


def test_model_fingerprint_check_uses_the_whole_file(runs, tmp_path):
    """A same-size change anywhere in model.pt (here: one weight's last bits) is noticed."""
    shutil.copytree(runs[0], tmp_path / "r")
    obj = load_tensors(tmp_path / "r" / "model.pt")
    obj.pop("format_version")
    w = obj["model"]["transforms.0.nn.layers.0.weight"]
    w.view(-1)[:1] = torch.nextafter(w.view(-1)[:1], torch.full((1,), torch.inf, dtype=w.dtype))
    save_tensors(obj, tmp_path / "r" / "model.pt")
    with pytest.raises(CheckpointError, match=r"its contents changed \(same size"):
        load_run(tmp_path / "r")
