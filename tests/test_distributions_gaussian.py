"""GaussianMADE: closed form, soft-clamped log-scales, reparameterized sampling."""

from __future__ import annotations

import pytest
import torch
from conftest import tol
from torch.distributions import Normal

from madeflow.distributions import GaussianMADE, soft_clamp


def test_one_dimension_matches_normal():
    est = GaussianMADE(1, [4], log_scale_bound=3.0)
    loc, raw = est.made(torch.zeros(1, 1))
    x = torch.randn(7, 1)
    expected = Normal(loc[0, 0], (3.0 * torch.tanh(raw[0, 0] / 3.0)).exp()).log_prob(x[:, 0])
    torch.testing.assert_close(est.log_prob(x), expected)


def test_log_scales_stay_within_the_bound():
    est = GaussianMADE(3, [8], log_scale_bound=0.5)
    with torch.no_grad():
        est.made.output_layer.bias.fill_(100.0)
    cond = est.conditionals(torch.randn(4, 3))
    log_scale = cond.scale.log()
    assert (log_scale <= 0.5 + tol(1e-12, 1e-6)).all() and (log_scale > 0.49).all()
    with pytest.raises(ValueError, match="log_scale_bound"):
        GaussianMADE(3, [8], log_scale_bound=0.0)


def test_soft_clamp_is_identity_near_zero_and_bounded():
    x = torch.tensor([-1e9, -0.01, 0.0, 0.01, 1e9])
    y = soft_clamp(x, 5.0)
    torch.testing.assert_close(y[1:4], x[1:4], rtol=1e-5, atol=0)
    assert y.abs().max() <= 5.0


def test_rsample_is_reparameterized():
    est = GaussianMADE(3, [8], context_dim=2)
    context = torch.randn(4, 2)
    torch.manual_seed(1)
    x = est.rsample((5,), context)
    assert x.shape == (5, 4, 3) and x.requires_grad
    x.pow(2).sum().backward()
    grads = [p.grad for p in est.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    torch.manual_seed(1)
    torch.testing.assert_close(est.sample((5,), context), x.detach())
    assert est(context).has_rsample


def test_rsample_gradient_of_location_is_one():
    # x = loc + scale * eps, so d mean(x_0) / d loc_bias_0 = 1 for the first dimension.
    est = GaussianMADE(2, [4])
    est.rsample((50,))[:, 0].mean().backward()
    torch.testing.assert_close(est.made.output_layer.bias.grad[0], torch.tensor(1.0))


def test_integer_data_raise_and_float32_data_are_converted():
    est = GaussianMADE(3, [8])
    with pytest.raises(TypeError, match="dequantization"):
        est.log_prob(torch.zeros(2, 3, dtype=torch.long))
    x = torch.randn(2, 3)
    torch.testing.assert_close(est.log_prob(x.float()), est.log_prob(x.float().double()))
