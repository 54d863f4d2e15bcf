"""MAFTransform and ConditionalMAFTransform: the formulas, the one-pass density, the solve."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from conftest import tol
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN

import madeflow.transforms.affine as ar
from madeflow import MADE
from madeflow.transforms import ConditionalMAFTransform, MAFTransform, maf_transform
from madeflow.transforms.factories import conditional_maf_transform


def _counting_solve(monkeypatch):
    calls = []
    real = ar.autoregressive_solve

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ar, "autoregressive_solve", counting)
    return calls


class _CountingMADE(MADE):
    calls = 0

    def forward(self, x, context=None):
        type(self).calls += 1
        return super().forward(x, context)


def test_density_direction_is_the_paper_formula():
    made = MADE(4, [16])
    t = MAFTransform(made, log_scale_min_clip=None, log_scale_max_clip=None)
    x = torch.randn(5, 4)
    mean, log_scale = made(x)
    assert torch.allclose(t.inv(x), (x - mean) * torch.exp(-log_scale), rtol=0, atol=tol(1e-14))
    assert torch.allclose(t.log_abs_det_jacobian(t.inv(x), x), log_scale.sum(-1))


def test_scoring_is_one_network_pass():
    made = _CountingMADE(3, [16])
    q = dist.TransformedDistribution(
        dist.Normal(torch.zeros(3), 1.0).to_event(1), [MAFTransform(made)]
    )
    _CountingMADE.calls = 0
    q.log_prob(torch.randn(10, 3))
    assert _CountingMADE.calls == 1


def test_sampling_goes_through_autoregressive_solve(monkeypatch):
    calls = _counting_solve(monkeypatch)
    t = MAFTransform(MADE(3, [16]))
    u = torch.randn(4, 3)
    x = t(u)
    assert len(calls) == 1
    assert torch.allclose(t.inv(x.clone()), u, rtol=0, atol=tol(1e-10))


def test_non_made_conditioner_uses_its_own_loop(monkeypatch):
    calls = _counting_solve(monkeypatch)
    arn = AutoRegressiveNN(3, [16], permutation=torch.tensor([2, 0, 1]))
    t = MAFTransform(arn)
    u = torch.randn(4, 3)
    x = t(u)
    assert not calls
    assert torch.allclose(t.inv(x.clone()), u, rtol=0, atol=tol(1e-10))


def test_log_scale_is_clamped_in_value_with_gradient_passing():
    made = MADE(3, [8])
    with torch.no_grad():
        made.output_layer.bias[3:].fill_(10.0)  # rows D..2D-1 are the log-scales
    t = MAFTransform(made)
    u = torch.randn(4, 3)
    x = t(u)
    assert torch.allclose(t.inv(x.clone()), u, rtol=0, atol=tol(1e-10))
    ladj = t.log_abs_det_jacobian(u, x.clone())
    assert torch.allclose(ladj, torch.full_like(ladj, 9.0))
    ladj.sum().backward()
    assert made.output_layer.bias.grad[3:].abs().sum() > 0


def test_rejects_wrong_networks():
    with pytest.raises(ValueError, match="param_dims"):
        MAFTransform(MADE(3, [8], param_dims=(1, 1, 1)))
    with pytest.raises(ValueError, match="ConditionalMAFTransform"):
        MAFTransform(MADE(3, [8], context_dim=2))


def test_conditional_equals_unconditional_with_that_context():
    made = MADE(3, [16], context_dim=2)
    cond = ConditionalMAFTransform(made)
    c = torch.randn(2)
    t = cond.condition(c)
    assert t.nn is made
    assert {id(p) for p in t.parameters()} == {id(p) for p in cond.parameters()}
    x = torch.randn(5, 3)
    mean, log_scale = made(x, c)
    expected = (x - mean) * torch.exp(log_scale.clamp(-5, 3).neg())
    assert torch.allclose(t.inv(x), expected, rtol=0, atol=tol(1e-14))


def test_batched_context_matches_row_by_row():
    cond = ConditionalMAFTransform(MADE(3, [16], context_dim=2))
    c = torch.randn(4, 2)
    u = torch.randn(4, 3)
    x = cond.condition(c)(u)
    for i in range(4):
        assert torch.allclose(cond.condition(c[i])(u[i]), x[i], rtol=0, atol=tol(1e-12))


def test_condition_errors_name_the_problem():
    cond = ConditionalMAFTransform(MADE(3, [8], context_dim=2))
    with pytest.raises(ValueError, match="is conditional .context_dim=2.: pass context"):
        cond.condition(None)
    with pytest.raises(ValueError, match="context_dim=2"):
        cond.condition(torch.randn(5, 3))


def test_pyro_conditional_arn_works():
    arn = ConditionalAutoRegressiveNN(3, 2, [16])
    t = ConditionalMAFTransform(arn).condition(torch.randn(2))
    u = torch.randn(4, 3)
    assert torch.allclose(t.inv(t(u).clone()), u, rtol=0, atol=tol(1e-10))


def test_factories_defaults_and_routing():
    t = maf_transform(4, permutation="random", log_scale_max_clip=1.0)
    assert t.nn.hidden_dims == (13,)
    assert t.log_scale_max_clip == 1.0
    assert sorted(t.nn.get_permutation().tolist()) == [0, 1, 2, 3]
    c = conditional_maf_transform(3, 2)
    assert c.nn.hidden_dims == (30,) and c.nn.context_dim == 2
