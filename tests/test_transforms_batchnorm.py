"""BatchNormTransform: batch statistics in training, running averages and exact inverse in eval."""

from __future__ import annotations

import pytest
import torch
from conftest import tol

from madeflow.transforms import BatchNormTransform


def _bn(d=3):
    bn = BatchNormTransform(d, momentum=0.25)
    with torch.no_grad():
        bn.log_gamma.copy_(torch.tensor([0.1, -0.2, 0.3][:d]))
        bn.beta.copy_(torch.tensor([0.5, 0.0, -1.0][:d]))
    return bn


def test_training_normalizes_the_batch_and_updates_running_averages():
    bn = _bn().train()
    x = torch.randn(200, 3) * 3 + 2
    u = bn.inv(x)
    assert torch.allclose(u.mean(0), bn.beta.detach(), atol=tol(1e-10))
    assert torch.allclose(u.std(0, unbiased=False), bn.log_gamma.detach().exp(), atol=tol(1e-6))
    assert torch.allclose(bn.running_mean, 0.25 * x.mean(0))
    assert torch.allclose(bn.running_var, 0.75 + 0.25 * x.var(0))


def test_training_log_det_uses_the_batch_variance():
    bn = _bn().train()
    x = torch.randn(50, 3) * 2
    u = bn.inv(x)
    var = x.var(0, unbiased=False)
    expected = (0.5 * torch.log(var + bn.eps) - bn.log_gamma).sum()
    assert torch.allclose(bn.log_abs_det_jacobian(u, x), expected.expand(50))
    # per row, with the statistics held fixed, d u / d x is diagonal exp(gamma) / std
    jac_diag = bn.log_gamma.exp() / torch.sqrt(var + bn.eps)
    assert torch.allclose(-jac_diag.log().sum(), expected)


def test_eval_is_an_exact_fixed_bijection():
    bn = _bn()
    bn.inv(torch.randn(64, 3) * 2 + 1)  # one training update
    bn.eval()
    stats = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(5, 3)
    u = bn.inv(x)
    assert torch.allclose(bn(u.clone()), x, rtol=0, atol=tol(1e-12))
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    jac = torch.autograd.functional.jacobian(lambda v: bn(v.clone()), u[0])
    assert torch.allclose(bn.log_abs_det_jacobian(u[0], x[0]), torch.linalg.slogdet(jac)[1])


def test_training_needs_two_rows():
    bn = BatchNormTransform(3)
    with pytest.raises(ValueError, match="at least 2 rows"):
        bn.inv(torch.randn(1, 3))


def test_state_dict_holds_statistics_and_parameters():
    bn = BatchNormTransform(3)
    assert set(bn.state_dict()) == {"log_gamma", "beta", "running_mean", "running_var"}
    with pytest.raises(ValueError, match="momentum"):
        BatchNormTransform(3, momentum=1.5)
