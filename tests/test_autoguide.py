"""AutoIAF: an autoguide that trains with SVI on constrained latents without sequential solves."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import madeflow.transforms.affine as ar
from madeflow.autoguide import AutoIAF

DATA = [0.3, -1.2, 2.5, 0.8, -0.4]


def model(data):
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0))
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("obs", dist.Normal(mu, sigma * rate.sqrt()), obs=data)


@pytest.fixture(autouse=True)
def clean_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _elbo(guide, data, n=1000):
    loss = Trace_ELBO(num_particles=n, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        return -loss.loss(model, guide, data)


@pytest.mark.parametrize("stable", [False, True])
def test_svi_improves_the_elbo_without_sequential_solves(stable, monkeypatch, device):
    calls = []
    real = ar.autoregressive_solve
    monkeypatch.setattr(ar, "autoregressive_solve", lambda *a, **k: calls.append(1) or real(*a))
    data = torch.tensor(DATA, device=device)
    guide = AutoIAF(model, num_transforms=2, hidden_dims=[16], stable=stable)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), elbo)
    svi.step(data)
    start = _elbo(guide, data)
    initial = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    for _ in range(150):
        svi.step(data)
    assert _elbo(guide, data) > start + 0.5
    assert not calls
    for name, value in pyro.get_param_store().items():
        assert not torch.equal(value.detach(), initial[name]), name
    samples = guide.get_posterior().sample((500,))
    with torch.no_grad():
        draws = [guide(data) for _ in range(200)]
    assert all(d["sigma"] > 0 and d["rate"] > 0 for d in draws)
    assert samples.shape == (500, 3)


def test_starts_at_the_autonormal_initialisation(device):
    guide = AutoIAF(model, init_scale=0.1)
    guide(torch.tensor(DATA, device=device))
    q = guide.get_posterior()
    z = q.sample((7,))
    expected = dist.Normal(guide.loc, guide.scale).to_event(1).log_prob(z)
    assert torch.allclose(q.log_prob(z.clone()), expected, atol=1e-10)
    assert torch.allclose(guide.scale, torch.full_like(guide.scale, 0.1))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_transforms"):
        AutoIAF(model, num_transforms=0)
    with pytest.raises(ValueError, match="init_scale"):
        AutoIAF(model, init_scale=0.0)
