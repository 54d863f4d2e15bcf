"""Every loaded tensor and setting is validated before anything is built from it (Python API).

:data:`BUFFER_CASES`: tampered MADE buffers refused by plain ``load_state_dict`` (a repeated
index in a permutation used to load and fill degrees from uninitialised memory).
:data:`OPTION_CASES`: model settings refused by :func:`madeflow.build_model` in microseconds
(``10**6`` layers or a ``10**9``-wide layer used to be built). :data:`STATE_CASES`: damaged
training states refused by ``fit(state=...)`` before anything is applied. A hypothesis test
corrupts random fields of a state and checks that only :class:`TrainingStateError` comes out.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import madeflow as mf
from madeflow.models import MAX_LAYERS, MAX_PARAMETERS, count_parameters, model_config
from madeflow.train.state import STATE_VERSION, TrainingStateError

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class BufferCase:
    """A change to one saved buffer of ``make()``'s state and the expected message."""

    make: Callable[[], torch.nn.Module]
    key: str
    change: Callable[[torch.Tensor], object]
    pattern: str


def _made() -> mf.MADE:
    return mf.MADE(3, [8, 8])


def _multi() -> mf.MADE:
    return mf.MADE(3, [8], num_masks=3, permutation="random", seed=1)


BUFFER_CASES: dict[str, BufferCase] = {
    "perm-repeat": BufferCase(
        _made,
        "permutations",
        lambda t: torch.tensor([[0, 1, 1]]),
        r"cannot load permutations: row 0 is not a permutation of range\(3\) \(input\(s\) \[1\] "
        r"repeated\)",
    ),
    "perm-out-of-range": BufferCase(
        _made, "permutations", lambda t: torch.tensor([[0, 1, 7]]), r"entries outside \[0, 2\]"
    ),
    "perm-negative": BufferCase(
        _made, "permutations", lambda t: torch.tensor([[0, -1, 2]]), r"entries outside \[0, 2\]"
    ),
    "perm-float": BufferCase(
        _made,
        "permutations",
        lambda t: t.double(),
        r"expected an integer tensor, got torch\.float64",
    ),
    "perm-bool": BufferCase(_made, "permutations", lambda t: t > 0, r"got torch\.bool"),
    "perm-shape": BufferCase(
        _made, "permutations", lambda t: t[:, :2], r"expected shape \(1, 3\), got \(1, 2\)"
    ),
    "perm-second-mask": BufferCase(
        _multi,
        "permutations",
        lambda t: torch.stack([t[0], torch.tensor([2, 2, 0]), t[2]]),
        r"row 1 is not a permutation",
    ),
    "degrees-too-high": BufferCase(
        _made, "degrees_1", lambda t: t + 3, r"degrees_1: degrees must lie in \[0, 2\]"
    ),
    "degrees-unsorted": BufferCase(
        _made, "degrees_0", lambda t: t.flip(-1), r"degrees must be sorted with a single mask"
    ),
    "degrees-shape": BufferCase(_made, "degrees_0", lambda t: t[:, :4], r"expected shape \(1, 8\)"),
    "mask-index-range": BufferCase(
        _multi, "mask_index", lambda t: torch.tensor(3), r"mask_index: 3 is not in \[0, 3\)"
    ),
    "mask-index-float": BufferCase(
        _multi, "mask_index", lambda t: torch.tensor(1.0), r"expected an integer tensor"
    ),
    "residual-degrees": BufferCase(
        lambda: mf.MADE(3, [8, 8], residual=True),
        "degrees_1",
        lambda t: torch.ones_like(t),
        r"a residual MADE has equal degrees in every layer",
    ),
    "nested-in-maf": BufferCase(
        lambda: mf.MAF(3, 2, [8]),
        "transforms.1.nn.permutations",
        lambda t: torch.tensor([[1, 1, 0]]),
        r"cannot load transforms\.1\.nn\.permutations: row 0 .*repeated",
    ),
    "nested-in-mog-base": BufferCase(
        lambda: mf.MAF(3, 2, [8], base="mog", num_components=2),
        "base_density.made.degrees_0",
        lambda t: t - 5,
        r"base_density\.made\.degrees_0: degrees must lie",
    ),
}


@pytest.mark.parametrize("name", list(BUFFER_CASES))
def test_tampered_buffer_is_refused_by_load_state_dict(name):
    case = BUFFER_CASES[name]
    model = case.make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = model.state_dict()
    state[case.key] = case.change(state[case.key].clone())
    with pytest.raises(ValueError, match=case.pattern) as info:
        model.load_state_dict(state)
    assert "\n" not in str(info.value) and "damaged or belongs to another model" in str(info.value)
    # The refused MADE is untouched: its buffers and masks are still consistent.
    for key, value in model.state_dict().items():
        if key.endswith(("permutations", "mask_index")) or "degrees_" in key:
            assert torch.equal(value, before[key]), key
    for made in (m for m in model.modules() if isinstance(m, mf.MADE)):
        mf.check_autoregressive(made, made.input_dim)


def test_a_valid_other_ordering_still_loads():
    a, b = mf.MADE(3, [8], permutation=[2, 0, 1]), mf.MADE(3, [8])
    b.load_state_dict(a.state_dict())
    assert b.get_permutation().tolist() == [2, 0, 1]
    mf.check_autoregressive(b, 3)


# ----------------------------------------------------------------------------- model options
OPTION_CASES: dict[str, tuple[str, dict, str]] = {
    "million-transforms": ("maf", {"num_transforms": 10**6}, r"3000000 masked layers.*MAX_LAYERS"),
    "million-hidden-layers": ("made-gaussian", {"hidden_dims": [4] * 10**6}, r"hidden_dims has"),
    "billion-wide": ("maf-mog", {"hidden_dims": [10**9]}, r"about .*e\+\d+ parameters.*MAX_PARAM"),
    "billion-components": ("made-mog", {"num_components": 10**9}, r"parameters, more than the cap"),
    "billion-masks": ("made-bernoulli", {"num_masks": 10**9}, r"num_masks must be at most 10000"),
    "float-width": (
        "maf",
        {"hidden_dims": [8.7]},
        r"hidden_dims must be an integer >= 1, got 8\.7",
    ),
    "string-width": ("maf", {"hidden_dims": ["8"]}, r"hidden_dims must be an integer"),
    "bool-transforms": ("maf", {"num_transforms": True}, r"num_transforms must be an integer"),
    "string-batch-norm": ("maf", {"batch_norm": "false"}, r"batch_norm must be true or false"),
    "negative-masks": ("made-mog", {"num_masks": -3}, r"num_masks must be an integer >= 1, got -3"),
    "zero-components": ("maf-mog", {"num_components": 0}, r"num_components must be an integer"),
    "negative-context": ("made-gaussian", {"context_dim": -1}, r"context_dim must be an integer"),
    "huge-seed": ("maf", {"seed": 2**80}, r"seed must be an integer <="),
    "empty-hidden": ("maf", {"hidden_dims": []}, r"hidden_dims must not be empty"),
}


@pytest.mark.parametrize("name", list(OPTION_CASES))
def test_absurd_model_options_are_refused_at_once(name):
    model, options, pattern = OPTION_CASES[name]
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=pattern):
        mf.build_model(model, 3, **options)
    assert time.perf_counter() - t0 < 2.0  # refused before anything was built


@pytest.mark.parametrize("name", ["made-bernoulli", "made-gaussian", "made-mog", "maf", "maf-mog"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_parameter_count_is_exact(name, context_dim):
    options = {"hidden_dims": [6, 5], "num_transforms": 3, "num_components": 2}
    options.update(batch_norm=name.startswith("maf"), context_dim=context_dim)
    model = mf.build_model(name, 3, **options)
    full = model_config(name, 3, **options)["options"]
    assert count_parameters(name, 3, full)[1] == sum(p.numel() for p in model.parameters())


def test_caps_leave_the_default_models_far_below():
    options = model_config("maf-mog", 64, hidden_dims=[256, 256])["options"]
    layers, params = count_parameters("maf-mog", 64, options)
    assert layers < MAX_LAYERS / 100 and params < MAX_PARAMETERS / 50


# ----------------------------------------------------------------------------- training states
def _state() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = mf.MAF(2, 2, [8]).float()
    states = []
    x = torch.randn(60, 2)
    mf.fit(
        model,
        x[:50],
        x[50:],
        max_epochs=1,
        progress=False,
        callback=lambda e: states.append(e.state()),
    )
    return model, states[-1]


@pytest.fixture(scope="module")
def saved_state():
    return _state()


def _set(state: dict, path: tuple, value: object) -> None:
    *parents, last = path
    for key in parents:
        state = state[key]
    if value is KeyError:
        del state[last]
    else:
        state[last] = value


STATE_CASES: dict[str, tuple[tuple, object, str]] = {
    "missing-optimizer": (("optimizer",), KeyError, r"lacks \['optimizer'\]"),
    "version": (("version",), 7, r"unsupported training state version 7"),
    "negative-epoch": (("epoch",), -4, r"epoch must be an integer >= 0, got -4"),
    "string-epoch": (("epoch",), "3", r"epoch must be an integer"),
    "nan-weight": (
        ("model", "loc"),
        torch.tensor([float("nan"), 0.0]),
        r"model\.loc holds NaN or Inf",
    ),
    "wrong-shape": (("model", "scale"), torch.ones(5), r"model\.scale has shape \(5,\), expected"),
    "missing-weight": (("best_model", "loc"), KeyError, r"best_model does not fit this model"),
    "repeated-perm-in-best": (
        ("best_model", "transforms.0.nn.permutations"),
        torch.tensor([[1, 1]]),
        r"cannot load transforms\.0\.nn\.permutations",
    ),
    "adam-moment-shape": (
        ("optimizer", "state", 0, "exp_avg"),
        torch.zeros(3, 3),
        r"optimizer\.state\.0\.exp_avg has shape \(3, 3\)",
    ),
    "adam-moment-nan": (
        ("optimizer", "state", 1, "exp_avg_sq"),
        "nan",
        r"optimizer\.state\.1\.exp_avg_sq holds NaN",
    ),
    "adam-missing-param": (
        ("optimizer", "param_groups", 0, "params"),
        [0],
        r"optimizer holds 1 parameters, this model has",
    ),
    "generator": (("generator",), torch.zeros(3, dtype=torch.uint8), r"generator is not a random"),
    "torch-rng-float": (("torch_rng",), torch.zeros(5056), r"torch_rng is not a random"),
    "history-nan": (("history", "train_log_lik"), [float("nan")], r"history\.train_log_lik must"),
    "history-extra": (("history", "oops"), 1, r"history must hold the fields"),
    "not-a-dict": ((), None, r"the training state is a list"),
}


@pytest.mark.parametrize("name", list(STATE_CASES))
def test_damaged_training_state_is_refused_before_anything_is_applied(name, saved_state):
    model, good = saved_state
    path, value, pattern = STATE_CASES[name]

    state = copy.deepcopy(good)
    if name == "not-a-dict":
        state = [good]
    elif value == "nan":
        _set(state, path, torch.full_like(good["optimizer"]["state"][1]["exp_avg_sq"], torch.nan))
    else:
        _set(state, path, value)
    fresh = mf.MAF(2, 2, [8]).float()
    weights = {k: v.clone() for k, v in fresh.state_dict().items()}
    x = torch.randn(20, 2)
    rng = torch.get_rng_state()
    with pytest.raises(TrainingStateError, match=pattern) as info:
        mf.fit(fresh, x, None, max_epochs=2, progress=False, state=state)
    assert "\n" not in str(info.value)
    if name != "repeated-perm-in-best":  # checked by loading: refused before it is copied in
        assert torch.equal(torch.get_rng_state(), rng)  # the global generator was not replaced
        assert all(torch.equal(v, weights[k]) for k, v in fresh.state_dict().items())


@settings(max_examples=50, deadline=None)
@given(
    field=st.sampled_from(
        [
            "epoch",
            "bad_epochs",
            "version",
            "generator",
            "torch_rng",
            "model",
            "best_model",
            "optimizer",
            "history",
        ]
    ),
    value=st.one_of(
        st.none(),
        st.integers(-5, 5),
        st.floats(allow_nan=True),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=3),
        st.builds(torch.zeros, st.integers(0, 4)),
        st.just({}),
    ),
)
def test_random_corruptions_of_a_state_give_only_training_state_errors(saved_state, field, value):
    _, good = saved_state
    state = dict(good)
    state[field] = value
    try:
        mf.fit(
            mf.MAF(2, 2, [8]).float(),
            torch.randn(20, 2),
            None,
            max_epochs=1,
            progress=False,
            state=state,
        )
    except TrainingStateError as err:
        assert "\n" not in str(err)
    else:  # only a valid value passes: another count, the version it had, or version 1 (upgraded)
        counts = field in ("epoch", "bad_epochs") and isinstance(value, int) and value >= 0
        version = field == "version" and value in (1, STATE_VERSION) and type(value) is int
        assert counts or version, value


@pytest.mark.parametrize("saved", [[0, 0, 1], [0, 1, 3], [2, 1]], ids=["repeat", "range", "size"])
def test_permute_layer_refuses_a_loaded_non_permutation(saved):
    from madeflow import PermuteTransform

    t = PermuteTransform([2, 0, 1])
    with pytest.raises(ValueError, match="cannot load permutation"):
        t.load_state_dict({"permutation": torch.tensor(saved)})
    assert t.permutation.tolist() == [2, 0, 1]  # nothing half-loaded


def test_batch_norm_one_row_advice_is_for_training():
    from madeflow import BatchNormTransform

    with pytest.raises(ValueError, match="train on batches of 2 or more rows"):
        BatchNormTransform(3).inv(torch.randn(1, 3))
