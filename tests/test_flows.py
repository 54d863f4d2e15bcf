"""MAF and IAF flow modules: construction, orderings, bad inputs, Pyro registration, training."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.params.param_store import param_with_module_name

from madeflow.distributions import GaussianMixtureMADE
from madeflow.flows import IAF, MAF
from madeflow.transforms import BatchNormTransform, MAFTransform


def test_orderings_alternate():
    flow = MAF(4, num_transforms=3, hidden_dims=[8])
    perms = [t.nn.get_permutation().tolist() for t in flow.transforms]
    assert perms == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]
    iaf = IAF(3, num_transforms=2, hidden_dims=[8], permutation="random", seed=5)
    assert not torch.equal(iaf.transforms[0].nn.permutation, iaf.transforms[1].nn.permutation)


def test_batch_norm_sits_between_layers():
    flow = MAF(3, num_transforms=3, hidden_dims=[8], batch_norm=True)
    kinds = [type(t) for t in flow.transforms]
    assert kinds == [
        MAFTransform,
        BatchNormTransform,
        MAFTransform,
        BatchNormTransform,
        MAFTransform,
    ]


def test_batch_norm_flow_trains_and_scores():
    flow = MAF(2, num_transforms=2, hidden_dims=[8], batch_norm=True)
    x = torch.randn(64, 2) * 3
    flow.log_prob(x)
    bn = flow.transforms[1]
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    flow.eval()
    u = flow.sample((5,))
    assert torch.isfinite(flow.log_prob(u)).all()


def test_mog_base():
    flow = MAF(3, num_transforms=2, hidden_dims=[8], base="mog")
    assert isinstance(flow.base_density, GaussianMixtureMADE)
    assert flow.base_density.num_components == 10
    assert flow.sample((4,)).shape == (4, 3)


def test_bad_inputs_are_named():
    flow = MAF(3, num_transforms=1, hidden_dims=[8])
    x = torch.randn(5, 3)
    x[1, 0] = float("nan")
    x[3, 2] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or Inf in 2 row\(s\) \(batch indices 1, 3\)"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match="input_dim=3"):
        flow.log_prob(torch.randn(5, 4))
    with pytest.raises(ValueError, match="context_dim=0"):
        flow.log_prob(torch.randn(5, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="base must be"):
        MAF(3, base="laplace")


def test_conditional_flow_context_errors():
    for cls in (MAF, IAF):
        flow = cls(3, num_transforms=1, hidden_dims=[8], context_dim=2)
        x = torch.randn(5, 3)
        with pytest.raises(ValueError, match="pass context"):
            flow.log_prob(x)
        with pytest.raises(ValueError, match="context_dim=2"):
            flow.log_prob(x, torch.randn(5, 3))
        with pytest.raises(ValueError, match="pass context"):
            flow.sample((2,))


def test_pyro_module_sees_every_parameter():
    pyro.clear_param_store()
    flow = MAF(3, num_transforms=2, hidden_dims=[8], base="mog", batch_norm=True)
    pyro.module("flow", flow)
    names = set(pyro.get_param_store().keys())
    expected = {param_with_module_name("flow", n) for n, _ in flow.named_parameters()}
    assert names == expected and len(names) == 14
    assert {"loc", "scale"}.isdisjoint(n for n, _ in flow.named_parameters())
    pyro.clear_param_store()


def test_base_follows_device_and_dtype():
    device = torch.get_default_device()  # the suite's --device
    with torch.device("cpu"):
        flow = IAF(3, num_transforms=1, hidden_dims=[8])
    flow.to(device=device, dtype=torch.float32)
    q = flow()
    assert q.base_dist.mean.dtype == torch.float32
    assert q.base_dist.mean.device.type == device.type
    z = flow.rsample((4,))
    assert z.dtype == torch.float32 and z.requires_grad
    assert not flow.sample((4,)).requires_grad


def test_maf_fits_a_correlated_gaussian():
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    target = torch.distributions.MultivariateNormal(torch.zeros(2), cov)
    data = target.sample((256,))
    flow = MAF(2, num_transforms=2, hidden_dims=[16])
    opt = torch.optim.Adam(flow.parameters(), lr=3e-2)
    before = -flow.log_prob(data).mean().item()
    for _ in range(80):
        opt.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        opt.step()
    after = -flow.log_prob(data).mean().item()
    entropy = target.entropy().item()
    assert after < before - 0.5
    assert abs(after - entropy) < 0.15
