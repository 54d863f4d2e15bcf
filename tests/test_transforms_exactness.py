"""Generic exactness checks, driven by the one registry in ``tests/registry.py``."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from registry import FLOWS, REGISTRY, TRANSFORMS, build

BATCH_SHAPES = [(), (3,), (3, 4)]


def _td(case, batch_shape=()):
    d = case.input_dim
    ref = next(iter(case.obj.parameters()), None)
    kw = {"dtype": torch.get_default_dtype()} if ref is None else {"dtype": ref.dtype}
    device = case.context.device if case.context is not None else None
    if ref is not None:
        device = ref.device
    base = dist.Normal(torch.zeros(d, device=device, **kw), 1.0).to_event(1)
    return dist.TransformedDistribution(base.expand(batch_shape), [case.obj])


def _flow_dist(case, batch_shape=()):
    if case.context is None:
        return case.obj(), torch.Size(batch_shape)
    ctx = case.context.expand(*batch_shape, case.context.shape[-1])
    return case.obj(ctx), torch.Size()


def _forward_chain(case):
    """u -> x through the flow's transforms, calling each on fresh tensors."""
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


# ---------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_shapes(name, batch_shape, device):
    case = build(name, device)
    td = _td(case, batch_shape)
    x = td.sample()
    assert x.shape == (*batch_shape, case.input_dim)
    assert td.log_prob(x).shape == batch_shape
    y = td.rsample((2,)) if td.has_rsample else td.sample((2,))
    assert td.log_prob(y.clone()).shape == (2, *batch_shape)
    ladj = case.obj.log_abs_det_jacobian(x, case.obj(x))
    assert ladj.shape == batch_shape


@pytest.mark.parametrize("name", TRANSFORMS)
def test_round_trips(name, device):
    case = build(name, device)
    t = case.obj
    u = torch.randn(6, case.input_dim, device=device)
    x = t(u.clone())
    assert torch.allclose(t.inv(x.clone()), u, rtol=0, atol=1e-10)
    x0 = torch.randn(6, case.input_dim, device=device)
    u0 = t.inv(x0.clone())
    assert torch.allclose(t(u0.clone()), x0, rtol=0, atol=1e-10)
    with torch.no_grad():  # the no-grad path of the sequential solve (the fast engine)
        assert torch.allclose(t(u.clone()), x, rtol=0, atol=1e-10)
        assert torch.allclose(t.inv(x0.clone()), u0, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_log_det_matches_autograd_jacobian(name, device):
    case = build(name, device)
    t = case.obj
    for _ in range(2):
        u = torch.randn(case.input_dim, device=device)
        jac = torch.autograd.functional.jacobian(lambda v: t(v.clone()), u)
        sign, logdet = torch.linalg.slogdet(jac)
        assert name == "permute" or sign > 0  # every other transform declares sign = +1
        ladj = t.log_abs_det_jacobian(u.clone(), t(u.clone()))
        assert torch.allclose(ladj, logdet, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", [n for n in TRANSFORMS if n != "permute"])
def test_jacobian_triangular_in_made_order(name, device):
    case = build(name, device)
    t, order = case.obj, case.order.to(device)
    degree = torch.empty_like(order)
    degree[order] = torch.arange(1, order.numel() + 1, device=device)
    allowed = degree.unsqueeze(1) >= degree.unsqueeze(0)  # x_i may depend on u_j
    seen = torch.zeros_like(allowed)
    for _ in range(3):
        u = torch.randn(case.input_dim, device=device)
        jac = torch.autograd.functional.jacobian(lambda v: t(v.clone()), u)
        seen |= jac.abs() > 0
    assert not (seen & ~allowed).any()
    assert seen.diagonal().all()


def test_permute_jacobian_is_its_permutation_matrix(device):
    case = build("permute", device)
    u = torch.randn(4, device=device)
    jac = torch.autograd.functional.jacobian(case.obj, u)
    expected = torch.eye(4, device=device)[case.obj.permutation]
    assert torch.equal(jac, expected)


@pytest.mark.parametrize("name", [n for n in TRANSFORMS if n != "permute"])
def test_every_parameter_gets_a_gradient(name, device):
    case = build(name, device)
    params = list(case.obj.parameters())
    assert params
    td = _td(case, (5,))
    loss = td.log_prob(torch.randn(5, case.input_dim, device=device)).sum()
    if td.has_rsample:
        loss = loss + td.rsample().square().sum()
    loss.backward()
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("name", TRANSFORMS)
def test_state_dict_round_trip(name, device):
    torch.manual_seed(1)
    a = build(name, device)
    torch.manual_seed(2)
    b = build(name, device)
    b.obj.load_state_dict(a.obj.state_dict())
    x = torch.randn(7, a.input_dim, device=device)
    assert torch.equal(_td(a).log_prob(x.clone()), _td(b).log_prob(x.clone()))
    u = torch.randn(7, a.input_dim, device=device)
    assert torch.equal(a.obj(u.clone()), b.obj(u.clone()))


@pytest.mark.parametrize("name", TRANSFORMS)
def test_float32(name, device):
    torch.set_default_dtype(torch.float32)  # the autouse fixture restores float64
    case = build(name, device, torch.float32)
    t = case.obj
    u = torch.randn(6, case.input_dim, device=device)
    x = t(u.clone())
    assert x.dtype == torch.float32
    assert torch.allclose(t.inv(x.clone()), u, rtol=0, atol=1e-4)
    v = u[0]
    jac = torch.autograd.functional.jacobian(lambda w: t(w.clone()), v)
    ladj = t.log_abs_det_jacobian(v.clone(), t(v.clone()))
    assert torch.allclose(ladj, torch.linalg.slogdet(jac)[1], rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------- flows
@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_flow_shapes(name, batch_shape, device):
    case = build(name, device)
    q, sample_shape = _flow_dist(case, batch_shape)
    x = q.sample(sample_shape)
    assert x.shape == (*batch_shape, case.input_dim)
    assert q.log_prob(x.clone()).shape == batch_shape
    ctx = None if case.context is None else case.context.expand(*batch_shape, -1)
    assert case.obj.log_prob(x.clone(), ctx).shape == batch_shape
    assert case.obj.sample(sample_shape, ctx).shape == x.shape


@pytest.mark.parametrize("name", FLOWS)
def test_flow_round_trip_and_log_prob_is_base_plus_log_det(name, device):
    case = build(name, device)
    q, f = _forward_chain(case)
    x = torch.randn(3, case.input_dim, device=device)
    u = _inverse_chain(q, x)
    assert torch.allclose(f(u), x, rtol=0, atol=1e-10)
    with torch.no_grad():
        assert torch.allclose(_inverse_chain(q, x), u, rtol=0, atol=1e-10)
        assert torch.allclose(f(u), x, rtol=0, atol=1e-10)
    lp = case.obj.log_prob(x.clone(), case.context)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(f, u[i])
        expected = q.base_dist.log_prob(u[i]) - torch.linalg.slogdet(jac)[1]
        assert torch.allclose(lp[i], expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", FLOWS)
def test_flow_integrates_to_one(name, device):
    case = build(name, device, dim=2)
    n, half = 241, 9.0
    g = torch.linspace(-half, half, n, device=device)
    grid = torch.cartesian_prod(g, g)
    with torch.no_grad():
        lp = case.obj.log_prob(grid, case.context)
    mass = lp.exp().sum() * (2 * half / (n - 1)) ** 2
    assert math.isclose(mass.item(), 1.0, abs_tol=5e-3)


@pytest.mark.parametrize("name", FLOWS)
def test_flow_every_parameter_gets_a_gradient(name, device):
    case = build(name, device)
    x = torch.randn(5, case.input_dim, device=device)
    loss = case.obj.log_prob(x, case.context).sum()
    if case.obj.has_rsample:
        loss = loss + case.obj.rsample((5,), case.context).square().sum()
    loss.backward()
    for pname, p in case.obj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", FLOWS)
def test_flow_state_dict_round_trip(name, device):
    torch.manual_seed(1)
    a = build(name, device)
    torch.manual_seed(2)
    b = build(name, device)
    x = torch.randn(7, a.input_dim, device=device)
    assert not torch.equal(a.obj.log_prob(x, a.context), b.obj.log_prob(x, b.context))
    b.obj.load_state_dict(a.obj.state_dict())
    assert torch.equal(a.obj.log_prob(x, a.context), b.obj.log_prob(x, b.context))


@pytest.mark.parametrize("name", FLOWS)
def test_flow_float32(name, device):
    torch.set_default_dtype(torch.float32)
    case = build(name, device, torch.float32)
    x = case.obj.sample((6,), case.context)
    assert x.dtype == torch.float32
    q, f = _forward_chain(case)
    u = _inverse_chain(q, x)
    assert torch.allclose(f(u), x, rtol=0, atol=1e-4)
    assert torch.isfinite(case.obj.log_prob(x, case.context)).all()


def test_registry_names_are_unique_and_cover_both_kinds():
    assert set(TRANSFORMS).isdisjoint(FLOWS)
    assert len(TRANSFORMS) + len(FLOWS) == len(REGISTRY)
    assert {"maf", "iaf", "iaf_stable", "permute", "batchnorm_eval"} <= set(TRANSFORMS)
    assert {"flow_maf", "flow_iaf", "flow_maf_mog", "flow_conditional_maf"} <= set(FLOWS)
