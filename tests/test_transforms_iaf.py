"""IAFTransform: one-pass sampling, free scoring of its own samples, the stable variant."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from conftest import tol

import madeflow.transforms.affine as ar
from madeflow import MADE
from madeflow.transforms import ConditionalIAFTransform, IAFTransform, iaf_transform
from madeflow.transforms.factories import conditional_iaf_transform


@pytest.fixture
def solve_calls(monkeypatch):
    calls = []
    real = ar.autoregressive_solve

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ar, "autoregressive_solve", counting)
    return calls


def _q(t, d):
    return dist.TransformedDistribution(dist.Normal(torch.zeros(d), 1.0).to_event(1), [t])


def test_forward_is_the_paper_formula():
    made = MADE(4, [16])
    t = IAFTransform(made)
    u = torch.randn(5, 4)
    mean, s = made(u)
    assert torch.allclose(t(u), mean + torch.exp(s) * u, rtol=0, atol=tol(1e-14))
    assert torch.allclose(t.log_abs_det_jacobian(u, t(u)), s.sum(-1), rtol=0, atol=tol(1e-14))


def test_stable_is_the_gated_update():
    made = MADE(4, [16])
    t = IAFTransform(made, stable=True)
    assert "_call" not in vars(t) and "_inverse" not in vars(t)  # no method swapping
    u = torch.randn(5, 4)
    mean, s = made(u)
    g = torch.sigmoid(s + 2.0)
    assert torch.allclose(t(u), g * u + (1 - g) * mean, rtol=0, atol=tol(1e-14))
    ladj = t.log_abs_det_jacobian(u.clone(), t(u.clone()))
    assert torch.allclose(ladj, F.logsigmoid(s + 2.0).sum(-1), rtol=0, atol=tol(1e-12))
    assert torch.allclose(t.inv(t(u).clone()), u, rtol=0, atol=tol(1e-10))


def test_stable_starts_near_identity():
    made = MADE(4, [16])
    with torch.no_grad():
        made.output_layer.weight.zero_()
        made.output_layer.bias.zero_()
    t = IAFTransform(made, stable=True, sigmoid_bias=2.0)
    u = torch.randn(5, 4)
    assert torch.allclose(t(u), torch.sigmoid(torch.tensor(2.0)) * u)


def test_scoring_own_samples_needs_no_solve(solve_calls):
    q = _q(IAFTransform(MADE(3, [16])), 3)
    z = q.rsample((8,))
    q.log_prob(z)
    assert not solve_calls
    q.log_prob(z.clone())  # an outside point (same values, new tensor) needs the solve
    assert len(solve_calls) == 1


def test_cache_is_dropped_after_an_optimizer_step():
    t = IAFTransform(MADE(3, [16]))
    q = _q(t, 3)
    z = q.rsample((4,))
    opt = torch.optim.SGD(t.parameters(), lr=0.05)
    (-q.log_prob(z).sum() + z.square().sum()).backward()
    opt.step()
    fresh = q.log_prob(z.detach().clone())
    assert torch.allclose(q.log_prob(z), fresh, rtol=0, atol=tol(1e-12))  # same tensor as cached


def test_network_is_a_submodule_not_an_inverse():
    made = MADE(3, [8])
    t = IAFTransform(made)
    assert t.nn is made
    assert {n for n, _ in t.named_parameters()} == {f"nn.{n}" for n, _ in made.named_parameters()}


def test_conditional_condition_errors_and_sharing():
    made = MADE(3, [8], context_dim=2)
    cond = ConditionalIAFTransform(made, stable=True)
    with pytest.raises(ValueError, match="is conditional .context_dim=2.: pass context"):
        cond.condition(None)
    with pytest.raises(ValueError, match="context_dim=2"):
        cond.condition(torch.randn(4))
    c = torch.randn(2)
    t = cond.condition(c)
    assert t.nn is made and t.stable
    u = torch.randn(3, 3)
    mean, s = made(u, c)
    g = torch.sigmoid(s + 2.0)
    assert torch.allclose(t(u), g * u + (1 - g) * mean, rtol=0, atol=tol(1e-14))


def test_conditional_without_context_fails_clearly():
    with pytest.raises(ValueError, match="ConditionalIAFTransform"):
        IAFTransform(MADE(3, [8], context_dim=2))


def test_factories():
    t = iaf_transform(3, stable=True, skip_connections=True)
    assert t.stable and t.nn.skip_layer is not None and t.nn.hidden_dims == (10,)
    c = conditional_iaf_transform(3, 4, hidden_dims=[8])
    assert c.nn.context_dim == 4 and c.nn.hidden_dims == (8,)
