"""The generic checks, run from the one registry (``tests/registry.py``) on every kind that fits.

Every kind (networks, transforms, flows, MADE density estimators): shapes over batch shapes,
every parameter gets a gradient, ``state_dict`` round trip, float32, ``repr``, copies and pickles
after ``log_prob(...).backward()`` (a network's outputs). Networks: autoregressive in their own
ordering, under every mask. Transforms: inverse round trips, log-det against the autograd
Jacobian, a Jacobian triangular in the MADE's order. Flows: the layer chain inverts and
``log_prob`` is the base density plus the log-dets. Density models (flows and estimators):
normalization (enumeration when discrete, integration otherwise), samples that follow
``log_prob``, Pyro's ``sample``/``plate``/``TransformedDistribution``/``expand``, bad inputs.
"""

from __future__ import annotations

import copy
import math
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import tol
from pyro import poutine
from registry import (
    CONTEXT_DIM,
    DENSITIES,
    FLOWS,
    KINDS,
    MODELS,
    NETWORKS,
    REGISTRY,
    TRANSFORMS,
    build,
    names,
)

from madeflow import check_autoregressive

ALL = list(REGISTRY)
BATCH_SHAPES = [(), (3,), (3, 4)]
SAMPLE_SHAPES = [(), (5,), (2, 3)]


def _has_parameters(case) -> bool:
    return any(True for _ in case.module.parameters())


def _check_shapes(case, batch_shape) -> None:
    """Shapes (and dtype, device) of sampling and scoring over ``batch_shape``."""
    batch_shape = torch.Size(batch_shape)
    d = case.input_dim
    if case.kind == "network":
        width = case.output(case.points()).shape[-1]  # P * D
        x = case.points(*batch_shape)
        out = case.output(x)
        assert out.shape == (*batch_shape, width) and width % d == 0
        assert out.dtype == torch.get_default_dtype()
        assert out.device.type == torch.get_default_device().type
        torch.testing.assert_close(out[(0,) * len(batch_shape)], case.output(x.reshape(-1, d)[0]))
        return
    if case.kind == "transform":
        td = case.dist(batch_shape)
        x = td.sample()
        assert x.shape == (*batch_shape, d)
        assert x.dtype == torch.get_default_dtype()
        assert td.log_prob(x).shape == batch_shape
        y = td.rsample((2,)) if td.has_rsample else td.sample((2,))
        assert td.log_prob(y.clone()).shape == (2, *batch_shape)
        ladj = case.obj.log_abs_det_jacobian(x, case.obj(x))
        assert ladj.shape == batch_shape
        return
    ctx = torch.randn(*batch_shape, CONTEXT_DIM) if case.spec.conditional else None
    q = case.obj(ctx) if case.spec.conditional else case.obj().expand(batch_shape)
    assert q.batch_shape == batch_shape and q.event_shape == (d,)
    for sample_shape in SAMPLE_SHAPES:
        draw_shape = sample_shape if ctx is not None else (*sample_shape, *batch_shape)
        x = case.obj.sample(draw_shape, ctx)
        assert x.shape == (*sample_shape, *batch_shape, d)
        assert x.dtype == torch.get_default_dtype()
        assert x.device.type == torch.get_default_device().type
        lp = case.obj.log_prob(x, ctx)
        assert lp.shape == (*sample_shape, *batch_shape)
        assert lp.dtype == torch.get_default_dtype()
        assert torch.isfinite(lp).all()
        assert q.sample(sample_shape).shape == (*sample_shape, *batch_shape, d)
        torch.testing.assert_close(q.log_prob(x.clone()), lp)


def _forward_chain(case):
    """A flow's distribution and u -> x through its transforms, each called on fresh tensors."""
    q = case.obj(case.context)

    def f(u):
        for t in q.transforms:
            u = t(u.clone())
        return u

    return q, f


def _inverse_chain(q, x):
    for t in reversed(q.transforms):
        x = t.inv(x.clone())
    return x


# ------------------------------------------------------------------------------ every kind
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_shapes(name, batch_shape):
    _check_shapes(build(name), batch_shape)


@pytest.mark.parametrize("name", [n for n in ALL if n != "permute"])
def test_every_parameter_gets_a_gradient(name):
    case = build(name)
    params = dict(case.module.named_parameters())
    assert params
    loss = case.output(case.points(5)).sum()
    if case.has_rsample():
        loss = loss + case.dist((5,)).rsample().square().sum()
    loss.backward()
    for pname, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name):
    torch.manual_seed(1)
    a = build(name)
    torch.manual_seed(2)
    b = build(name)
    x = a.points(7)
    if _has_parameters(a):
        assert not torch.equal(a.output(x.clone()), b.output(x.clone()))
    b.module.load_state_dict(a.module.state_dict())
    assert torch.equal(a.output(x.clone()), b.output(x.clone()))
    if a.kind == "network":
        assert torch.equal(a.module.get_permutation(), b.module.get_permutation())
    elif a.kind == "transform":
        u = torch.randn(7, a.input_dim)
        assert torch.equal(a.obj(u.clone()), b.obj(u.clone()))
    else:
        draws = []
        for case in (a, b):
            torch.manual_seed(3)
            draws.append(case.obj.sample((7,), case.context))
        assert torch.equal(*draws)


@pytest.mark.parametrize("name", ALL)
def test_float32(name):
    torch.set_default_dtype(torch.float32)  # the autouse fixture restores the suite's dtype
    case = build(name)
    for batch_shape in BATCH_SHAPES:
        _check_shapes(case, batch_shape)
    if case.kind == "network":
        assert check_autoregressive(case.obj, case.input_dim, context=case.context).any()
    elif case.kind == "transform":
        t = case.obj
        u = torch.randn(6, case.input_dim)
        x = t(u.clone())
        assert x.dtype == torch.float32
        assert torch.allclose(t.inv(x.clone()), u, rtol=0, atol=1e-4)
        v = u[0]
        jac = torch.autograd.functional.jacobian(lambda w: t(w.clone()), v)
        ladj = t.log_abs_det_jacobian(v.clone(), t(v.clone()))
        assert torch.allclose(ladj, torch.linalg.slogdet(jac)[1], rtol=0, atol=1e-4)
    elif case.kind == "flow":
        x = case.obj.sample((6,), case.context)
        assert x.dtype == torch.float32
        q, f = _forward_chain(case)
        assert torch.allclose(f(_inverse_chain(q, x)), x, rtol=0, atol=1e-4)
        assert torch.isfinite(case.obj.log_prob(x, case.context)).all()


@pytest.mark.parametrize("name", ALL)
def test_repr(name):
    case = build(name)
    text = repr(case.module)
    assert text.startswith(type(case.module).__name__)
    assert "tensor(" not in text  # no buffer or parameter dumped into it


@pytest.mark.parametrize("name", ALL)
def test_copies_and_pickles_hold_no_batch_after_scoring(name):
    case = build(name)
    case.module.train()  # batch norm in training mode: batch statistics must not be kept
    # What a user pickles: the object, or the guide that holds a view's transform (its parts
    # keep Pyro's weak references to unconstrained parameters).
    saved = case.module if case.spec.view is not None else case.obj
    empty = len(pickle.dumps(saved))
    keys = set(case.module.state_dict())
    x = case.points(4000)
    losses = [case.output(x).mean()]
    if case.has_rsample():  # IAF: score its own samples (the shortcut that remembers them)
        q = case.dist()
        losses.append(q.log_prob(q.rsample((4000,))).mean())
    for loss in losses:
        if loss.requires_grad:  # not for a layer without parameters (permute)
            loss.backward()
    if not case.spec.copyable:  # declared: Pyro's AffineAutoregressive keeps a graph
        with pytest.raises(RuntimeError, match="deepcopy"):
            copy.deepcopy(case)
        return
    clone = copy.deepcopy(case)  # a non-leaf tensor in the state would raise here
    assert len(pickle.dumps(saved)) <= empty + 2000  # not the 4000-row batch (>= 32 kB)
    assert set(case.module.state_dict()) == keys
    torch.testing.assert_close(clone.output(x[:5]), case.output(x[:5]))


# -------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("name", NETWORKS)
def test_network_autoregressive_in_its_order_under_every_mask(name):
    case = build(name)
    net = case.obj
    for _ in range(getattr(net, "num_masks", 1)):
        dep = check_autoregressive(net, case.input_dim, context=case.context, num_points=8)
        assert dep.any()  # the check saw dependencies: it could have found a wrong one
        if hasattr(net, "next_mask"):
            net.next_mask()


# ------------------------------------------------------------------------------ transforms
@pytest.mark.parametrize("name", TRANSFORMS)
def test_round_trips(name):
    case = build(name)
    t = case.obj
    u = torch.randn(6, case.input_dim)
    x = t(u.clone())
    assert torch.allclose(t.inv(x.clone()), u, rtol=0, atol=tol(1e-10))
    x0 = torch.randn(6, case.input_dim)
    u0 = t.inv(x0.clone())
    assert torch.allclose(t(u0.clone()), x0, rtol=0, atol=tol(1e-10))
    with torch.no_grad():  # the no-grad path of the sequential solve (the fast engine)
        assert torch.allclose(t(u.clone()), x, rtol=0, atol=tol(1e-10))
        assert torch.allclose(t.inv(x0.clone()), u0, rtol=0, atol=tol(1e-10))


@pytest.mark.parametrize("name", TRANSFORMS)
def test_log_det_matches_autograd_jacobian(name):
    case = build(name)
    t = case.obj
    for _ in range(2):
        u = torch.randn(case.input_dim)
        jac = torch.autograd.functional.jacobian(lambda v: t(v.clone()), u)
        sign, logdet = torch.linalg.slogdet(jac)
        # Triangular layers have a positive diagonal (they declare sign = +1).
        assert not case.spec.triangular or sign > 0
        ladj = t.log_abs_det_jacobian(u.clone(), t(u.clone()))
        assert torch.allclose(ladj, logdet, rtol=0, atol=tol(1e-8))


@pytest.mark.parametrize("name", names("transform", triangular=True))
def test_jacobian_triangular_in_made_order(name):
    case = build(name)
    t, order = case.obj, case.order
    degree = torch.empty_like(order)
    degree[order] = torch.arange(1, order.numel() + 1)
    allowed = degree.unsqueeze(1) >= degree.unsqueeze(0)  # x_i may depend on u_j
    seen = torch.zeros_like(allowed)
    for _ in range(3):
        u = torch.randn(case.input_dim)
        jac = torch.autograd.functional.jacobian(lambda v: t(v.clone()), u)
        seen |= jac.abs() > 0
    assert not (seen & ~allowed).any()
    assert seen.diagonal().all()


def test_permute_jacobian_is_its_permutation_matrix():
    case = build("permute")
    u = torch.randn(4)
    jac = torch.autograd.functional.jacobian(case.obj, u)
    expected = torch.eye(4)[case.obj.permutation]
    assert torch.equal(jac, expected)


# ----------------------------------------------------------------------------------- flows
@pytest.mark.parametrize("name", FLOWS)
def test_flow_round_trip_and_log_prob_is_base_plus_log_det(name):
    case = build(name)
    q, f = _forward_chain(case)
    x = torch.randn(3, case.input_dim)
    u = _inverse_chain(q, x)
    assert torch.allclose(f(u), x, rtol=0, atol=tol(1e-10))
    with torch.no_grad():
        assert torch.allclose(_inverse_chain(q, x), u, rtol=0, atol=tol(1e-10))
        assert torch.allclose(f(u), x, rtol=0, atol=tol(1e-10))
    lp = case.obj.log_prob(x.clone(), case.context)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(f, u[i])
        expected = q.base_dist.log_prob(u[i]) - torch.linalg.slogdet(jac)[1]
        assert torch.allclose(lp[i], expected, rtol=0, atol=tol(1e-8))


# ------------------------------------------------------ density models: flows and estimators
def _all_binary(d: int) -> torch.Tensor:
    grid = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * d)
    return grid.reshape(-1, d)


def _small_weights(case, factor: float):
    with torch.no_grad():
        for p in case.module.parameters():
            p.mul_(factor)
    return case


def _grid_density(case, lim: float = 10.0, n: int = 401):
    g = torch.linspace(-lim, lim, n)
    x = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)  # (n, n, 2)
    with torch.no_grad():
        p = case.obj.log_prob(x, case.context).exp()
    return g, x, p


def _continuous_2d(name):
    """A 2-d model whose mass lies well inside the integration grid, whatever the seed.

    Smaller weights keep every conditional of a MADE estimator, and every layer of a flow (a
    stack compounds the spread), inside the grid; normalization holds for any weights.
    """
    if REGISTRY[name].kind == "flow":  # flows keep their alternating orders
        return _small_weights(build(name, dim=2), 0.25)
    return _small_weights(build(name, dim=2, permutation=[1, 0]), 0.5)  # second dimension first


@pytest.mark.parametrize("name", MODELS)
def test_normalized(name):
    if REGISTRY[name].discrete:
        case = build(name, dim=4, permutation="random")
        with torch.no_grad():
            total = case.obj.log_prob(_all_binary(4), case.context).logsumexp(0).exp()
        assert math.isclose(float(total), 1.0, rel_tol=tol(1e-9, 1e-6))
        return
    case = _continuous_2d(name)
    g, _, p = _grid_density(case)
    total = torch.trapezoid(torch.trapezoid(p, g, dim=1), g, dim=0)
    assert abs(float(total) - 1.0) < 1e-3


@pytest.mark.parametrize("name", names(("flow", "density"), discrete=False))
def test_samples_match_density(name):
    case = _continuous_2d(name)
    g, x, p = _grid_density(case)
    samples = case.obj.sample((20000,), case.context)
    for i in range(2):
        marginal = torch.trapezoid(p, g, dim=1 - i)  # density of x_i on the grid
        cdf = torch.cumulative_trapezoid(marginal, g)  # P(x_i < g[j + 1])
        for q in (0.05, 0.25, 0.5, 0.75, 0.95):
            j = int(torch.searchsorted(cdf, torch.tensor(q)))
            empirical = (samples[:, i] < g[j + 1]).double().mean()
            assert abs(float(empirical) - float(cdf[j])) < 0.015, (i, q)
    # A joint moment, so the conditional of the second dimension is checked too.
    h = g[1] - g[0]
    prod = (x[..., 0] * x[..., 1] * p).sum() * h * h
    emp = (samples[:, 0] * samples[:, 1]).mean()
    se = (samples[:, 0] * samples[:, 1]).std() / math.sqrt(len(samples))
    assert abs(float(emp - prod)) < 5 * float(se) + 1e-3


@pytest.mark.parametrize("name", names(("flow", "density"), discrete=True))
def test_sample_frequencies_match_probabilities(name):
    case = build(name, dim=3, permutation=[2, 0, 1])
    with torch.no_grad():  # sharpen the conditionals so that every pattern is distinctive
        case.module.made.output_layer.weight.mul_(3)
    n = 20000
    samples = case.obj.sample((n,), case.context)
    codes = (samples * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=8).double() / n
    p = case.obj.log_prob(_all_binary(3), case.context).exp().double()
    tolerance = 5 * (p * (1 - p) / n).sqrt() + 1e-3
    assert (freq - p).abs().le(tolerance).all(), (freq, p)


@pytest.mark.parametrize("name", MODELS)
def test_pyro_sample_with_obs_and_in_plate(name):
    case = build(name)
    x = case.points(4)
    context = torch.randn(4, CONTEXT_DIM) if case.spec.conditional else None

    def model(obs):
        with pyro.plate("data", 4):
            return pyro.sample("x", case.obj(context), obs=obs)

    trace = poutine.trace(model).get_trace(x)
    trace.compute_log_prob()
    torch.testing.assert_close(trace.nodes["x"]["log_prob"], case.obj.log_prob(x, context))
    drawn = model(None)
    assert drawn.shape == (4, case.input_dim)
    assert torch.isfinite(case.obj.log_prob(drawn, context)).all()


@pytest.mark.parametrize("name", MODELS)
def test_transformed_distribution_base(name):
    case = build(name)
    d = case.input_dim
    scale = torch.tensor([2.0, 0.5, 4.0, 0.25])[:d]  # powers of two keep 0/1 exact
    affine = dist.transforms.AffineTransform(torch.zeros(d), scale, event_dim=1)
    q = case.obj(case.context)
    td = dist.TransformedDistribution(q, [affine])
    y = td.sample((5,))
    assert y.shape == (5, d)
    expected = case.obj.log_prob(y / scale, case.context) - scale.log().sum()
    torch.testing.assert_close(td.log_prob(y), expected)
    assert td.has_rsample == q.has_rsample


@pytest.mark.parametrize("name", MODELS)
def test_support_and_expand(name):
    case = build(name)
    d = case.obj(case.context).expand((2, 5))
    assert d.batch_shape == (2, 5)
    assert d.sample().shape == (2, 5, case.input_dim)
    assert d.log_prob(case.points()).shape == (2, 5)
    x = case.points()
    assert bool(d.support.check(x))
    if case.spec.discrete:
        assert not bool(d.support.check(x + 0.5))


@pytest.mark.parametrize("name", MODELS)
def test_bad_inputs_raise_clearly(name):
    case = build(name, dim=3)
    est, ctx = case.obj, case.contexts(4)
    with pytest.raises(ValueError, match="last dimension input_dim=3"):
        est.log_prob(case.points(4)[:, :2], ctx)
    for bad in (math.nan, math.inf, -math.inf):
        x = case.points(4)
        x[1, 2] = bad
        x[3, 0] = bad
        with pytest.raises(ValueError, match=r"NaN or Inf in 2 row\(s\) \(batch indices 1, 3\)"):
            est.log_prob(x, ctx)
    if not case.spec.conditional:
        with pytest.raises(ValueError, match="context_dim=0"):
            est.log_prob(case.points(4), torch.randn(4, 2))
        return
    with pytest.raises(ValueError, match="conditional"):
        est.log_prob(case.points(4))
    with pytest.raises(ValueError, match="conditional"):
        est.sample((2,))
    with pytest.raises(ValueError, match="conditional"):
        est()
    with pytest.raises(ValueError, match=f"context_dim={CONTEXT_DIM}"):
        est.sample((2,), torch.randn(4, CONTEXT_DIM + 1))


# -------------------------------------------------------------------------------- registry
def test_registry_covers_every_kind_and_capability():
    assert set(NETWORKS) | set(TRANSFORMS) | set(MODELS) == set(REGISTRY)
    assert set(MODELS) == set(FLOWS) | set(DENSITIES)
    for kind in KINDS:
        assert names(kind), kind
        assert names(kind, conditional=True), kind
    assert names("density", discrete=True) and not names(("transform", "flow"), discrete=True)
    assert {"maf", "iaf", "iaf_stable", "permute", "batchnorm_eval"} <= set(TRANSFORMS)
    assert {"flow_maf", "flow_iaf", "flow_maf_mog", "flow_conditional_maf"} <= set(FLOWS)
    assert {"maf_on_madeflow_arn", "pyro_affine_on_pyro_arn", "autoiaf"} <= set(TRANSFORMS)
    assert {"made", "conditional_made", "arn_madeflow", "arn_pyro"} <= set(NETWORKS)
    for name in ALL:  # what a kind declares matches what it builds
        case = build(name)
        assert (case.context is not None) == case.spec.conditional, name
        assert (case.order is not None) == (case.kind in ("network", "transform")), name
