"""Fast paths behave like plain PyTorch: higher-order and forward-mode gradients, torch.compile,
torch.jit.trace and torch.func, against the dense masked product as the reference.

Copies and pickles after scoring are checked for every model kind in ``test_generic.py``.
"""

from __future__ import annotations

import io
import warnings

import pyro
import pytest
import torch
from conftest import tol
from torch.autograd import forward_ad

import madeflow
from madeflow import MADE
from madeflow.distributions import GaussianMADE, GaussianMixtureMADE
from madeflow.flows import IAF, MAF

WIDE = 512  # grouped products run from 512 x 512 weights up
WIDTHS = [16, WIDE]


def masked_layers(made):
    return [*made.layers, made.output_layer]


def set_grouped(made, on):
    for layer in masked_layers(made):
        layer.grouped = on


def wide_made(**kw):
    made = MADE(6, [WIDE, WIDE], seed=0, **kw)
    assert made.layers[1].group_plan() is not None  # the grouped product is what runs
    return made


def loss_of(made, x):
    out = made(x)
    out = out if isinstance(out, tuple) else (out,)
    return sum((o.sin() * torch.linspace(-1, 1, o.shape[-1])).sum() for o in out)


# ----------------------------------------------------------------------------- higher order
@pytest.mark.parametrize("context_dim", [0, 3])
def test_hessian_vector_product_through_wide_made_matches_dense(context_dim):
    made = wide_made(context_dim=context_dim, permutation="random")
    ctx = torch.randn(4, context_dim) if context_dim else None
    x = torch.randn(4, 6, requires_grad=True)
    v = torch.randn(4, 6)
    results = []
    for grouped in (True, False):
        set_grouped(made, grouped)
        out = made(x, ctx) if ctx is not None else made(x)
        loss = sum((o.sin() ** 2).sum() for o in out)
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        (hv,) = torch.autograd.grad((g * v).sum(), x)
        results.append(hv)
    assert results[1].abs().max() > 1e-6  # a real second derivative, not a vanishing one
    torch.testing.assert_close(results[0], results[1], rtol=tol(1e-9), atol=tol(1e-12))


def test_weight_gradient_penalty_through_wide_made_matches_dense():
    made = wide_made(skip_connections=True)
    x = torch.randn(5, 6, requires_grad=True)
    params = list(made.parameters())
    results = []
    for grouped in (True, False):
        set_grouped(made, grouped)
        (gx,) = torch.autograd.grad(loss_of(made, x), x, create_graph=True)
        penalty = gx.square().sum()  # WGAN-GP style: differentiate a gradient norm
        results.append(torch.autograd.grad(penalty, params))
    assert any(g.abs().max() > 1e-6 for g in results[1])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=tol(1e-9), atol=tol(1e-12))


def test_third_derivative_through_wide_made_matches_dense():
    made = wide_made()
    x = torch.randn(2, 6, requires_grad=True)
    results = []
    for grouped in (True, False):
        set_grouped(made, grouped)
        (g1,) = torch.autograd.grad(loss_of(made, x), x, create_graph=True)
        (g2,) = torch.autograd.grad(g1.sum(), x, create_graph=True)
        (g3,) = torch.autograd.grad(g2.sum(), x)
        results.append(g3)
    assert results[1].abs().max() > 1e-8
    torch.testing.assert_close(results[0], results[1], rtol=tol(1e-9), atol=tol(1e-12))


def test_forward_mode_jvp_through_wide_made_matches_dense():
    made = wide_made(context_dim=2)
    x, tangent, ctx = torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 2)
    results = []
    for grouped in (True, False):
        set_grouped(made, grouped)
        with forward_ad.dual_level():
            mean, _ = made(forward_ad.make_dual(x, tangent), ctx)
            results.append(forward_ad.unpack_dual(mean).tangent)
    torch.testing.assert_close(results[0], results[1], rtol=tol(1e-9), atol=tol(1e-12))


# ----------------------------------------------------------------------------- torch.compile
def graph_breaks(fn, *args):
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args).graph_break_count


@pytest.mark.parametrize("width", WIDTHS)
def test_compile_fullgraph_made_after_it_has_run(width):
    made = MADE(6, [width, width], context_dim=2, seed=0)
    x, ctx = torch.randn(5, 6), torch.randn(5, 2)
    expected = made(x, ctx)  # run once first: no cache may leak into the trace
    torch._dynamo.reset()
    compiled = torch.compile(made, fullgraph=True, backend="eager")
    for got, want in zip(compiled(x, ctx), expected):
        torch.testing.assert_close(got, want)
    assert graph_breaks(made, x, ctx) == 0


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("flow_class", [MAF, IAF])
def test_flow_log_prob_has_no_graph_breaks(flow_class, width):
    flow = flow_class(4, num_transforms=2, hidden_dims=[width], seed=0)
    x = torch.randn(7, 4)
    expected = flow.log_prob(x)
    assert graph_breaks(flow.log_prob, x) == 0
    torch._dynamo.reset()
    got = torch.compile(flow.log_prob, fullgraph=True, backend="eager")(x)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("est_class", [GaussianMADE, GaussianMixtureMADE])
def test_density_log_prob_has_no_graph_breaks(est_class):
    est = est_class(4, [WIDE], seed=0)
    x = torch.randn(7, 4)
    assert graph_breaks(est.log_prob, x) == 0


@pytest.mark.parametrize("width", WIDTHS)
def test_compiled_training_step_matches_eager(width):
    flow = MAF(4, num_transforms=2, hidden_dims=[width, width], seed=0)
    x = torch.randn(16, 4)

    def loss_fn(batch):
        return -flow.log_prob(batch).mean()

    expected = torch.autograd.grad(loss_fn(x), list(flow.parameters()))
    torch._dynamo.reset()
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")  # backward too
    got = torch.autograd.grad(compiled(x), list(flow.parameters()))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    before = loss_fn(x).item()
    for _ in range(3):
        opt.zero_grad()
        compiled(x).backward()
        opt.step()
    assert loss_fn(x).item() < before


def test_inductor_compiles_made():
    made = MADE(5, [32, 32], seed=0).float()
    x = torch.randn(8, 5, dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(made, fullgraph=True)
    for got, want in zip(compiled(x), made(x)):
        torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------- torch.jit.trace
@pytest.mark.parametrize("width", WIDTHS)
def test_jit_trace_made_saves_and_runs_on_new_inputs(width):
    made = MADE(6, [width, width], permutation="random", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(made, torch.randn(3, 6))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = torch.randn(9, 6)  # another batch size than the trace's
    for got, want in zip(loaded(x), made(x)):
        torch.testing.assert_close(got, want)


def test_traced_autoiaf_guide_saves_and_loads():
    # Pyro's own serialization recipe for autoguides (tests/infer/test_autoguide.py).
    def model():
        pyro.sample("a", pyro.distributions.Normal(0.0, 1.0))
        pyro.sample("b", pyro.distributions.LogNormal(0.0, 1.0).expand([3]).to_event(1))

    pyro.clear_param_store()
    guide = madeflow.AutoIAF(model, hidden_dims=[WIDE])
    guide()
    pyro.set_rng_seed(0)
    expected = guide.call()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace_module(guide, {"call": ()}, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    pyro.set_rng_seed(0)
    actual = loaded.call()
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)
    pyro.clear_param_store()


# -------------------------------------------------------------------------------- torch.func
@pytest.mark.parametrize("width", WIDTHS)
def test_vmap_matches_batched_call(width):
    made = MADE(6, [width, width], context_dim=2, seed=0)
    x, ctx = torch.randn(4, 6), torch.randn(4, 2)
    got = torch.func.vmap(made)(x, ctx)
    for g, w in zip(got, made(x, ctx)):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("transform", ["jacrev", "jacfwd"])
def test_func_jacobians_match_autograd(width, transform):
    made = MADE(6, [width, width], permutation="random", seed=0)
    x = torch.randn(6)

    def mean(v):
        return made(v)[0]

    got = getattr(torch.func, transform)(mean)(x)
    set_grouped(made, False)
    want = torch.autograd.functional.jacobian(mean, x)
    torch.testing.assert_close(got, want)
    order = made.get_permutation()
    assert torch.all(got[order][:, order].triu() == 0)  # autoregressive: strictly lower


@pytest.mark.parametrize("width", WIDTHS)
def test_functional_call_with_other_weights(width):
    made = MADE(6, [width, width], seed=0)
    other = MADE(6, [width, width], seed=0)  # same masks, other weights
    with torch.no_grad():
        for p in other.parameters():
            p.normal_()
    x = torch.randn(5, 6)
    params = dict(other.named_parameters())
    got = torch.func.functional_call(made, params, (x,))
    for g, w in zip(got, other(x)):
        torch.testing.assert_close(g, w)
    grads = torch.func.grad(lambda p: loss_of_params(made, p, x))(params)
    assert set(grads) == set(params)


def loss_of_params(made, params, x):
    mean, log_scale = torch.func.functional_call(made, params, (x,))
    return (mean.sin() + log_scale.cos()).sum()


def test_func_grad_of_flow_log_prob_matches_autograd():
    flow = MAF(3, num_transforms=2, hidden_dims=[WIDE], seed=0)
    x = torch.randn(3)
    got = torch.func.grad(lambda v: flow.log_prob(v))(x)
    x_ = x.clone().requires_grad_()
    (want,) = torch.autograd.grad(flow.log_prob(x_), x_)
    torch.testing.assert_close(got, want)


def test_vmap_of_iaf_inverse_runs_the_plain_solve():
    flow = IAF(3, num_transforms=2, hidden_dims=[16], seed=0)
    x = torch.randn(5, 3)
    got = torch.func.vmap(flow.log_prob)(x)
    torch.testing.assert_close(got, flow.log_prob(x))
