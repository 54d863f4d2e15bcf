"""AutoIAF: an autoguide that trains with SVI on constrained latents without sequential solves."""

from __future__ import annotations

import inspect

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import tol
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide.initialization import init_to_median, init_to_value

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
def test_svi_improves_the_elbo_without_sequential_solves(stable, monkeypatch):
    calls = []
    real = ar.autoregressive_solve
    monkeypatch.setattr(ar, "autoregressive_solve", lambda *a, **k: calls.append(1) or real(*a))
    data = torch.tensor(DATA)
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


def test_starts_at_the_autonormal_initialisation():
    guide = AutoIAF(model, init_scale=0.1)
    guide(torch.tensor(DATA))
    q = guide.get_posterior()
    z = q.sample((7,))
    expected = dist.Normal(guide.loc, guide.scale).to_event(1).log_prob(z)
    assert torch.allclose(q.log_prob(z.clone()), expected, atol=tol(1e-10))
    assert torch.allclose(guide.scale, torch.full_like(guide.scale, 0.1))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_transforms"):
        AutoIAF(model, num_transforms=0)
    with pytest.raises(ValueError, match="init_scale"):
        AutoIAF(model, init_scale=0.0)


# ------------------------------------------------ Pyro's AutoIAFNormal arguments and defaults
def _made_widths(guide):
    return [tuple(t.nn.hidden_dims) for t in guide.iafs]


def test_hidden_dim_is_pyros_name_for_hidden_dims():
    data = torch.tensor(DATA)
    for kwargs, widths in [
        ({}, (10,)),  # [3 * D + 1], D = 3
        ({"hidden_dim": 8}, (8,)),
        ({"hidden_dim": [8, 6]}, (8, 6)),
        ({"hidden_dims": [5]}, (5,)),
    ]:
        guide = AutoIAF(model, num_transforms=2, **kwargs)
        guide(data)
        assert _made_widths(guide) == [widths] * 2, kwargs
    with pytest.raises(TypeError, match="hidden_dim.*hidden_dims"):
        AutoIAF(model, hidden_dim=[8], hidden_dims=[8])
    with pytest.raises(ValueError, match="hidden_dim"):
        AutoIAF(model, hidden_dim=[8, 0])


def test_pyro_positional_order():
    from pyro.infer.autoguide import AutoIAFNormal

    ours = list(inspect.signature(AutoIAF).parameters)[:4]
    assert ours == list(inspect.signature(AutoIAFNormal).parameters)[:4]
    values = {"sigma": torch.tensor(2.0), "rate": torch.tensor(1.5), "mu": torch.tensor(0.7)}
    guide = AutoIAF(model, [8], init_to_value(values=values), 3)
    guide(torch.tensor(DATA))
    assert _made_widths(guide) == [(8,)] * 3
    # init_loc_fn is honoured (Pyro's AutoIAFNormal ignores it): loc is the unconstrained value.
    expected = torch.stack([torch.tensor(2.0).log(), torch.tensor(1.5).log(), torch.tensor(0.7)])
    assert torch.allclose(guide.loc.detach(), expected)
    # Pyro's own default, init_loc_fn=None, means AutoIAF's default.
    AutoIAF(model, None, None, 1)(torch.tensor(DATA))


def test_transform_and_made_keywords_reach_their_layers():
    guide = AutoIAF(
        model,
        stable=True,
        log_scale_min_clip=-2.0,
        log_scale_max_clip=1.0,
        sigmoid_bias=1.5,
        skip_connections=True,
        permutation=[2, 0, 1],
    )
    guide(torch.tensor(DATA))
    for t in guide.iafs:
        assert (t.stable, t.log_scale_min_clip, t.log_scale_max_clip) == (True, -2.0, 1.0)
        assert t.sigmoid_bias == 1.5
        assert t.nn.skip_connections
        assert t.nn.permutation.tolist() == [2, 0, 1]
    default = AutoIAF(model, num_transforms=3)
    default(torch.tensor(DATA))
    orders = [t.nn.permutation.tolist() for t in default.iafs]
    assert orders == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]
    assert [(t.stable, t.log_scale_min_clip, t.log_scale_max_clip) for t in default.iafs] == [
        (False, -5.0, 3.0)
    ] * 3


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"hidden_size": 8}, "'hidden_size'"),
        ({"param_dims": (1, 1)}, "'param_dims'.*param_dims=\\(1, 1\\)"),
        ({"context_dim": 2}, "'context_dim'"),
        ({"nonlinearity": torch.nn.Tanh()}, "'nonlinearity'.*activation"),
    ],
)
def test_unknown_keywords_are_refused_at_construction(kwargs, named):
    with pytest.raises(TypeError, match=named):
        AutoIAF(model, **kwargs)


def test_default_start_is_the_documented_one():
    """AutoIAF(model): one identity IAF layer of width 3 D + 1 on N(loc, 0.5^2), loc by median."""
    data = torch.tensor(DATA)
    torch.manual_seed(1)
    guide = AutoIAF(model)
    guide(data)
    torch.manual_seed(1)
    by_median = AutoIAF(model, init_loc_fn=init_to_median)
    by_median(data)
    assert torch.equal(guide.loc, by_median.loc)
    assert not torch.allclose(guide.loc, torch.zeros(3))  # not init_to_feasible's zeros
    assert torch.allclose(guide.scale, torch.full((3,), 0.5))
    assert _made_widths(guide) == [(10,)]
    q = guide.get_posterior()
    z = q.sample((7,))
    expected = dist.Normal(guide.loc, 0.5).to_event(1).log_prob(z)
    assert torch.allclose(q.log_prob(z.clone()), expected, atol=tol(1e-10))


def _funnel(dim=3):
    def funnel():
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        scale = torch.exp(v / 2).unsqueeze(-1).expand(*v.shape, dim - 1)
        pyro.sample("x", dist.Normal(0.0, scale).to_event(1))

    return funnel


def _funnel_kl(make, seed, steps=150):
    funnel = _funnel()
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make(funnel)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=0)
    svi = SVI(funnel, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    for _ in range(steps):
        svi.step()
    final = Trace_ELBO(num_particles=2000, vectorize_particles=True, max_plate_nesting=0)
    with torch.no_grad():
        return final.loss(funnel, guide)  # = KL(q || p): the funnel's evidence is 1


def test_defaults_fit_a_small_funnel_at_least_as_well_as_autoiafnormal():
    """A short version of the docs' comparison: both guides at their defaults, four seeds."""
    from pyro.infer.autoguide import AutoIAFNormal

    ours = [_funnel_kl(AutoIAF, seed) for seed in range(4)]
    pyros = [_funnel_kl(AutoIAFNormal, seed) for seed in range(4)]
    assert sum(ours) < sum(pyros), (ours, pyros)
