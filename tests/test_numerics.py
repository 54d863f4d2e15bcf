"""Numerics: extreme inputs, float32/float64, training on awkward data, and property tests.

Every continuous density model of the registry (flows and MADE estimators, conditional ones on a
fixed context) scores points with ``|x|`` up to ``1e6``, constant columns and duplicated rows
with finite log-densities and finite gradients, in float32 and float64; short fits on a constant
column and on Student-t (df=1.5) data finish with finite weights or stop with
:class:`~madeflow.NonFiniteLossError`; hypothesis checks inverse round trips of the MAF/IAF
transforms and the exact normalization of BernoulliMADE over all ``2^D`` binary vectors.
"""

from __future__ import annotations

import itertools
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import float64_init
from hypothesis import given, settings
from hypothesis import strategies as st
from registry import CONTEXT_DIM, build, names

import madeflow as mf
from madeflow import cli
from madeflow.nn.made import MADE
from madeflow.transforms import BatchNormTransform, IAFTransform, MAFTransform

D = 3
CONTINUOUS = names(("flow", "density"), discrete=False)
DTYPES = [torch.float32, torch.float64]


def _extreme(dtype: torch.dtype) -> torch.Tensor:
    """Rows with entries of +-1e6, a constant column, exact duplicates and tiny values."""
    x = torch.randn(16, D, dtype=torch.float64)
    x[:, 1] = 7.0  # a constant column
    x[0] = torch.tensor([1e6, 7.0, -1e6])
    x[1] = torch.tensor([-1e6, 7.0, 1e6])
    x[2] = torch.tensor([1e-30, 7.0, -1e-30])
    x[8:] = x[:8]  # duplicated rows
    return x.to(dtype)


def _assert_finite_grads(model: torch.nn.Module) -> None:
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    for g in grads:
        assert torch.isfinite(g).all()


def _assert_finite_grads_or_iaf_float32_limit(model, x, context) -> None:
    finite = all(torch.isfinite(p.grad).all() for p in model.parameters())
    if isinstance(model, mf.IAF) and x.dtype == torch.float32 and not finite:
        # Known limit: scoring points an IAF did not produce inverts D layers, each dividing by
        # a scale down to e^-5; the exact gradient at |x| = 1e6 exceeds float32's range. Check
        # that it does (in float64, where it is finite), so this branch cannot hide a bug.
        model64 = model.double()
        model64.zero_grad()
        context64 = None if context is None else context.double()
        (-model64.log_prob(x.double(), context64).mean()).backward()
        _assert_finite_grads(model64)
        largest = max(p.grad.abs().max().item() for p in model64.parameters())
        assert largest > torch.finfo(torch.float32).max
        return
    _assert_finite_grads(model)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", CONTINUOUS)
def test_extreme_inputs_give_finite_log_prob_and_gradients(name, dtype):
    with float64_init():  # the same initial weights in either dtype
        case = build(name, dim=D)  # batch norm layers come in eval mode: a fixed bijection
    model = case.obj.to(dtype)
    context = None if case.context is None else case.context.to(dtype)
    x = _extreme(dtype)
    log_p = model.log_prob(x, context)
    assert log_p.dtype == dtype and log_p.shape == (16,)
    assert torch.isfinite(log_p).all(), log_p
    # The 1e6 rows are far less likely than the ordinary ones (not clamped to the same value).
    assert log_p[:2].max() < log_p[3:8].min()
    (-log_p.mean()).backward()
    _assert_finite_grads_or_iaf_float32_limit(model, x, context)
    if any(isinstance(m, BatchNormTransform) for m in model.modules()):
        # In training, batch norm rescales by this batch's own statistics (dominated by the 1e6
        # rows, so the ranking above is not a property of the model there): still finite.
        model.train().zero_grad()
        log_p = model.log_prob(x, context)
        assert torch.isfinite(log_p).all(), log_p
        (-log_p.mean()).backward()
        _assert_finite_grads(model)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", names(("flow", "density"), discrete=False, conditional=True))
def test_huge_inputs_and_contexts_give_finite_log_prob_and_gradients(name, dtype):
    with float64_init():
        model = build(name, dim=3, skip_connections=True).obj.to(dtype)
    x = torch.tensor([[1e6, -1e6, 1e6], [0.0, 1e6, -1.0], [-1e6, 0.5, 0.0]], dtype=dtype)
    context = torch.tensor([[1e6, -1e6]], dtype=dtype).expand(3, CONTEXT_DIM)
    lp = model.log_prob(x, context)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    for p in model.parameters():
        assert p.grad is not None
    _assert_finite_grads_or_iaf_float32_limit(model, x, context)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", names("density", discrete=True))
def test_bernoulli_with_saturated_logits_is_finite(name, dtype):
    with float64_init():
        case = build(name, dim=D, hidden_dims=[16])
    model = case.obj.to(dtype)
    context = None if case.context is None else case.context.to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e4)  # logits of order 1e4..1e6: sigmoid saturates in both directions
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)), dtype=dtype)
    log_p = model.log_prob(x, context)
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    torch.logsumexp(log_p, 0).backward()
    _assert_finite_grads(model)


@pytest.mark.parametrize("name", ["density_mixture", "flow_maf_mog"])
def test_mixture_uses_a_stable_log_sum_exp(name):
    """Points 1e3 standard deviations from every component would underflow a naive mixture."""
    model = build(name, dim=D).obj.double()
    x = torch.full((4, D), 1e4, dtype=torch.float64)
    log_p = model.log_prob(x)
    assert torch.isfinite(log_p).all() and (log_p < -1e3).all()


@pytest.mark.parametrize("name", ["density_gaussian", "density_mixture"])
def test_log_scales_are_bounded(name):
    model = build(name, dim=D).obj.double()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(50.0)  # huge raw log-scales in every unit
    x = torch.zeros(4, D, dtype=torch.float64)
    bound = model.log_scale_bound
    # With |log sigma| <= b the density of a single point is at most (2 pi)^(-1/2) e^b per dim.
    log_p = model.log_prob(x)
    assert torch.isfinite(log_p).all()
    assert (log_p <= D * (bound - 0.5 * np.log(2 * np.pi)) + 1e-9).all()


def _awkward_data(kind: str) -> torch.Tensor:
    gen = np.random.default_rng(0)
    if kind == "constant-column":
        x = gen.normal(size=(240, D))
        x[:, 2] = 3.0
    else:  # heavy tails: Student-t with df=1.5 has infinite variance
        x = gen.standard_t(1.5, size=(240, D)) * 10.0
    return torch.tensor(x, dtype=torch.float32)


@pytest.mark.parametrize("kind", ["constant-column", "heavy-tails"])
@pytest.mark.parametrize("name", ["density_mixture", "flow_maf_mog", "flow_iaf"])
def test_fit_on_awkward_data_is_finite_or_stops_clearly(name, kind):
    torch.set_default_dtype(torch.float32)
    model = build(name, dim=D).obj
    data = _awkward_data(kind)
    try:
        hist = mf.fit(model, data[:200], data[200:], max_epochs=3, lr=1e-2, progress=False)
    except mf.NonFiniteLossError as err:
        assert "became" in str(err)
        return
    assert all(np.isfinite(hist.train_log_lik)) and all(np.isfinite(hist.val_log_lik))
    for p in model.parameters():
        assert torch.isfinite(p).all()


def test_cli_fit_on_constant_and_heavy_tailed_columns_never_saves_nan(tmp_path, capsys):
    gen = np.random.default_rng(1)
    x = np.column_stack([gen.standard_t(1.5, 300) * 1e3, np.full(300, 5.0), gen.normal(size=300)])
    np.save(tmp_path / "awkward.npy", x)
    out = tmp_path / "run"
    argv = ["fit", str(tmp_path / "awkward.npy"), "--model", "maf", "--hidden", "8"]
    argv += ["--num-transforms", "2", "--epochs", "3", "--quiet", "--out", str(out)]
    with mock.patch("madeflow.cli.plots.plot_run", lambda *a, **k: []):
        code = cli.main(argv)
    err = capsys.readouterr().err
    if code == 5:  # stopped on a non-finite loss: said why, wrote no model
        assert "became" in err and not (out / "model.pt").exists()
        return
    assert code == 0, err
    _, model, _ = mf.load_run(out)
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())


def test_fit_stops_with_a_message_instead_of_writing_nan():
    model = mf.GaussianMADE(2, [8])
    with torch.no_grad():
        model.made.output_layer.bias.fill_(float("nan"))
    with pytest.raises(
        mf.NonFiniteLossError, match=r"diverged at epoch 1, step 1: the model's values became NaN"
    ):
        mf.fit(model, torch.randn(20, 2), max_epochs=1, progress=False)


# ------------------------------------------------------------------ property-based tests
CONFIG = st.fixed_dictionaries(
    {
        "dim": st.integers(1, 4),
        "hidden": st.lists(st.integers(2, 8), min_size=1, max_size=2),
        "batch": st.integers(1, 5),
        "seed": st.integers(0, 2**16),
        "skip": st.booleans(),
        "scale": st.sampled_from([0.1, 1.0, 30.0]),
    }
)


def _made(cfg: dict, context_dim: int = 0) -> MADE:
    return MADE(
        cfg["dim"],
        cfg["hidden"],
        context_dim=context_dim,
        permutation="random",
        skip_connections=cfg["skip"],
        seed=cfg["seed"],
    ).double()


@settings(max_examples=25, deadline=None)
@given(cfg=CONFIG, stable=st.booleans())
def test_transform_inverses_round_trip(cfg, stable):
    torch.manual_seed(cfg["seed"])
    u = torch.randn(cfg["batch"], cfg["dim"], dtype=torch.float64) * cfg["scale"]
    for t in (MAFTransform(_made(cfg)), IAFTransform(_made(cfg), stable=stable)):
        x = t(u)
        assert torch.isfinite(x).all()
        back = t.inv(x.clone())  # a clone: no identity cache can answer
        torch.testing.assert_close(back, u, rtol=1e-7, atol=1e-7 * cfg["scale"])
        again = t(t.inv(u.clone()).clone())
        torch.testing.assert_close(again, u, rtol=1e-7, atol=1e-7 * cfg["scale"])
        # log|det| of the forward map equals minus that of the inverse at the matching point.
        ladj = t.log_abs_det_jacobian(u, x)
        assert torch.isfinite(ladj).all()


@pytest.mark.filterwarnings("ignore:MADE.*cannot see:UserWarning")  # narrow layers are fine here
@settings(max_examples=25, deadline=None)
@given(cfg=CONFIG, num_masks=st.integers(1, 3), context=st.booleans())
def test_bernoulli_made_is_normalized_over_all_binary_vectors(cfg, num_masks, context):
    dim = cfg["dim"] + 1
    c = 2 if context else 0
    model = mf.BernoulliMADE(
        dim, cfg["hidden"], context_dim=c, num_masks=num_masks, seed=cfg["seed"]
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(cfg["scale"])
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=dim)), dtype=torch.float64)
    ctx = torch.randn(1, c, dtype=torch.float64).expand(len(x), c) if context else None
    for _ in range(num_masks):
        log_p = model.log_prob(x, context=ctx)
        assert torch.isfinite(log_p).all()
        total = torch.logsumexp(log_p, 0)
        assert abs(total.item()) < 1e-9, total
        model.made.next_mask()
