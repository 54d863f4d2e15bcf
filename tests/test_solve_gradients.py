"""The differentiable one-pass solve: gradients equal the D-pass reference's and finite
differences; rsample, outside-point scoring and sample_and_log_prob built on it."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import tols

import madeflow
import madeflow.transforms.affine as affine
from madeflow import MADE
from madeflow.solve import autoregressive_solve
from madeflow.solve import engine as engine_module


def affine_step(params, noise):
    mean, log_scale = params
    return noise * torch.exp(torch.tanh(log_scale)) + mean


def mog_like_step(params, noise):
    a, b, c = params  # three parameters per dimension, used nonlinearly
    return torch.sinh(a) + noise * torch.exp(0.3 * torch.tanh(b)) + 0.1 * c * noise**2


CONFIGS = [
    dict(input_dim=1, hidden_dims=[4]),
    dict(input_dim=5, hidden_dims=[16, 16], permutation="random"),
    dict(input_dim=4, hidden_dims=[9], permutation=[2, 0, 3, 1]),
    dict(input_dim=6, hidden_dims=[13, 7], hidden_degrees="random", permutation="random"),
    dict(input_dim=7, hidden_dims=[3, 4], permutation="random"),  # widths below D
    dict(input_dim=5, hidden_dims=[12, 12], skip_connections=True, permutation="random"),
    dict(input_dim=5, hidden_dims=[12, 12, 12], residual=True, hidden_degrees="random"),
    dict(input_dim=4, hidden_dims=[10], context_dim=3),
    dict(input_dim=6, hidden_dims=[14, 14], context_dim=2, residual=True, skip_connections=True),
    dict(input_dim=6, hidden_dims=[14, 9], num_masks=3, permutation="random"),
    dict(input_dim=5, hidden_dims=[12, 12], activation=torch.nn.Tanh, permutation="random"),
    dict(input_dim=4, hidden_dims=[10, 10], param_dims=(1, 1, 1), permutation="random"),
]


def make(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = MADE(seed=3, **kw)
    if made.num_masks > 1:
        made.next_mask()
    return made


def grads_of(made, noise, context, method, weights):
    step = mog_like_step if made.count_params == 3 else affine_step
    x, params = autoregressive_solve(made, step, noise, context, return_params=True, method=method)
    params = params if isinstance(params, tuple) else (params,)
    loss = (x * weights).sum() + sum(p.sin().sum() for p in params)
    leaves = [noise, *([context] if context is not None else []), *made.parameters()]
    return x.detach(), torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)], ids=str)
def test_engine_gradients_equal_the_reference(config, batch):
    made = make(**config)
    noise = torch.randn(*batch, made.input_dim, requires_grad=True)
    context = None
    if made.context_dim:  # broadcast: one context for every row
        context = torch.randn(made.context_dim, requires_grad=True)
    weights = torch.randn(*batch, made.input_dim)
    x_e, g_e = grads_of(made, noise, context, "engine", weights)
    x_r, g_r = grads_of(made, noise, context, "reference", weights)
    torch.testing.assert_close(x_e, x_r, **tols(0, 1e-12))
    assert any(g.abs().sum() > 0 for g in g_r)
    for got, want in zip(g_e, g_r):
        torch.testing.assert_close(got, want, **tols(1e-9, 1e-12))


def test_engine_gradients_pass_finite_differences():
    torch.set_default_dtype(torch.float64)  # finite differences need it, whatever --dtype
    made = make(input_dim=4, hidden_dims=[9, 9], context_dim=2, skip_connections=True)

    def f(noise, context):
        x, params = autoregressive_solve(
            made, affine_step, noise, context, return_params=True, method="engine"
        )
        return x, params[1]

    noise = torch.randn(3, 4, requires_grad=True)
    context = torch.randn(3, 2, requires_grad=True)
    assert torch.autograd.gradcheck(f, (noise, context))


def test_auto_runs_the_engine_with_gradients_and_refuses_higher_order(monkeypatch):
    made = make(input_dim=5, hidden_dims=[12, 12], permutation="random")
    calls = []
    real = engine_module.run
    monkeypatch.setattr(
        "madeflow.solve.function.run", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    noise = torch.randn(4, 5, requires_grad=True)
    x = autoregressive_solve(made, affine_step, noise)
    assert calls  # the one-pass solve, not D passes
    (g,) = torch.autograd.grad(x.square().sum(), noise, create_graph=False)
    x = autoregressive_solve(made, affine_step, noise)
    with pytest.raises(RuntimeError, match="method='reference'"):
        torch.autograd.grad(x.square().sum(), noise, create_graph=True)
    x = autoregressive_solve(made, affine_step, noise, method="reference")
    (g1,) = torch.autograd.grad(x.square().sum(), noise, create_graph=True)
    (h,) = torch.autograd.grad(g1.sum(), noise)  # the reference loop: any order
    torch.testing.assert_close(g1.detach(), g)
    assert h.abs().sum() > 0


def test_backward_after_an_in_place_weight_change_is_refused():
    made = make(input_dim=4, hidden_dims=[10])
    noise = torch.randn(3, 4)
    x = autoregressive_solve(made, affine_step, noise)
    assert x.requires_grad
    with torch.no_grad():
        made.output_layer.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        x.sum().backward()


def test_unknown_method_is_refused():
    made = make(input_dim=3, hidden_dims=[8])
    with pytest.raises(ValueError, match="method must be"):
        autoregressive_solve(made, affine_step, torch.randn(3), method="fast")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype):
    made = make(input_dim=5, hidden_dims=[16], permutation="random").to(dtype)
    noise = torch.randn(4, 5, dtype=dtype, requires_grad=True)
    w = torch.randn(4, 5, dtype=dtype)
    _, g_e = grads_of(made, noise, None, "engine", w)
    _, g_r = grads_of(made, noise, None, "reference", w)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for got, want in zip(g_e, g_r):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def _reference_solves(monkeypatch):
    real = affine.autoregressive_solve
    monkeypatch.setattr(
        affine,
        "autoregressive_solve",
        lambda *a, **k: real(*a, **{**k, "method": "reference"}),
    )


@pytest.mark.parametrize("context_dim", [0, 2])
def test_maf_rsample_gradients_equal_the_reference(monkeypatch, context_dim):
    flow = madeflow.MAF(4, num_transforms=3, hidden_dims=[16, 16], context_dim=context_dim)
    ctx = torch.randn(3, context_dim) if context_dim else None
    params = list(flow.parameters())
    results = []
    for reference in (False, True):
        if reference:
            _reference_solves(monkeypatch)
        torch.manual_seed(5)
        x = flow.rsample((2,), ctx)
        results.append((x.detach(), torch.autograd.grad(x.sin().sum(), params)))
    torch.testing.assert_close(results[0][0], results[1][0], **tols(0, 1e-12))
    for got, want in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(got, want, **tols(1e-9, 1e-12))


def test_iaf_outside_log_prob_gradients_equal_the_reference(monkeypatch):
    flow = madeflow.IAF(4, num_transforms=2, hidden_dims=[16])
    x = torch.randn(6, 4, requires_grad=True)
    params = [x, *flow.parameters()]
    results = []
    for reference in (False, True):
        if reference:
            _reference_solves(monkeypatch)
        results.append(torch.autograd.grad(flow.log_prob(x).sum(), params))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **tols(1e-9, 1e-12))


MODELS = {
    "maf": lambda: madeflow.MAF(4, 2, [16]),
    "maf-mog": lambda: madeflow.MAF(4, 2, [16], base="mog", num_components=3),
    "maf-conditional-batchnorm": lambda: madeflow.MAF(
        4, 2, [16], context_dim=2, batch_norm=True
    ).eval(),
    "iaf": lambda: madeflow.IAF(4, 2, [16]),
    "iaf-conditional": lambda: madeflow.IAF(4, 2, [16], context_dim=2),
    "gaussian": lambda: madeflow.GaussianMADE(4, [16]),
    "mixture": lambda: madeflow.GaussianMixtureMADE(4, [16], num_components=3),
    "bernoulli": lambda: madeflow.BernoulliMADE(4, [16], context_dim=2),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_sample_and_log_prob_scores_its_samples_exactly(name):
    model = MODELS[name]()
    ctx = torch.randn(3, 2) if model.context_dim else None
    x, lp = model.sample_and_log_prob((5,), ctx)
    assert x.shape == (5, *(() if ctx is None else (3,)), 4)
    assert lp.shape == x.shape[:-1] and not lp.requires_grad
    torch.testing.assert_close(lp, model.log_prob(x, ctx), **tols(1e-9, 1e-9))


@pytest.mark.parametrize("name", ["maf", "maf-mog", "gaussian", "mixture", "bernoulli"])
def test_sample_and_log_prob_takes_no_second_pass(name, monkeypatch):
    model = MODELS[name]()
    ctx = torch.randn(3, 2) if model.context_dim else None
    passes = []
    real = MADE.forward
    monkeypatch.setattr(MADE, "forward", lambda *a, **k: passes.append(1) or real(*a, **k))
    model.sample_and_log_prob((5,), ctx)
    assert passes == []  # everything came from the solve's by-products


@pytest.mark.parametrize("name", ["maf", "iaf", "gaussian"])
def test_rsample_and_log_prob_is_differentiable(name):
    model = MODELS[name]()
    x, lp = model.rsample_and_log_prob((6,))
    (x.sum() + lp.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_rsample_and_log_prob_needs_a_reparameterized_model():
    with pytest.raises(NotImplementedError, match="BernoulliMADE has no reparameterized"):
        madeflow.BernoulliMADE(3, [8]).rsample_and_log_prob((2,))


@pytest.mark.parametrize("method", ["engine", "reference"])
@pytest.mark.parametrize(
    "config", CONFIGS[1:9:2], ids=lambda c: "-".join(f"{v}" for v in c.values())
)
def test_observed_dimensions_keep_their_values_and_condition_the_rest(method, config):
    made = make(**config)
    d = made.input_dim
    order = made.get_permutation()
    observed = torch.zeros(d, dtype=torch.bool)
    observed[order[: d // 2]] = True  # the first half of the ordering is given
    noise = torch.randn(3, d, requires_grad=True)
    context = torch.randn(3, made.context_dim) if made.context_dim else None
    x = autoregressive_solve(made, affine_step, noise, context, method=method, observed=observed)
    assert torch.equal(x[:, observed], noise[:, observed].detach())
    with torch.no_grad():  # the no-gradient run gives the same
        x0 = autoregressive_solve(
            made, affine_step, noise, context, method=method, observed=observed
        )
    torch.testing.assert_close(x0, x.detach(), **tols(0, 1e-12))
    # The others satisfy the recursion given the observed values.
    params = made(x) if context is None else made(x, context)
    torch.testing.assert_close(affine_step(params, noise)[:, ~observed], x[:, ~observed])
    (g,) = torch.autograd.grad((x * torch.arange(d)).sum(), noise)
    x_ref = autoregressive_solve(
        made, affine_step, noise, context, method="reference", observed=observed
    )
    (g_ref,) = torch.autograd.grad((x_ref * torch.arange(d)).sum(), noise)
    torch.testing.assert_close(g, g_ref, **tols(1e-9, 1e-12))
