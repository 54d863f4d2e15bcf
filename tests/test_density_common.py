"""Generic checks of every MADE density estimator, driven by one registry."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from madeflow import check_autoregressive
from madeflow.distributions import BernoulliMADE, GaussianMADE, GaussianMixtureMADE, MADEDensity
from madeflow.solve import naive_autoregressive_solve

# name -> constructor(input_dim, hidden_dims, context_dim, **made_kwargs)
ESTIMATORS = {
    "bernoulli": lambda d, h, c=0, **kw: BernoulliMADE(d, h, context_dim=c, **kw),
    "gaussian": lambda d, h, c=0, **kw: GaussianMADE(d, h, context_dim=c, **kw),
    "mixture": lambda d, h, c=0, **kw: GaussianMixtureMADE(
        d, h, num_components=3, context_dim=c, **kw
    ),
}
NAMES = list(ESTIMATORS)
CONTINUOUS = ["gaussian", "mixture"]


def build(name, d=3, h=(16, 16), c=0, device="cpu", dtype=torch.float64, **kw) -> MADEDensity:
    return ESTIMATORS[name](d, list(h), c, **kw).to(device=device, dtype=dtype)


def data(name, shape, device="cpu", dtype=torch.float64) -> torch.Tensor:
    if name == "bernoulli":
        return torch.randint(0, 2, shape, device=device).to(dtype)
    return torch.randn(shape, device=device, dtype=dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sample_shape", [(), (5,), (2, 3)])
@pytest.mark.parametrize("batch", [(), (3,), (3, 4)])
def test_sample_and_log_prob_shapes(name, dtype, sample_shape, batch, device):
    c = 2 if batch else 0
    est = build(name, c=c, device=device, dtype=dtype)
    context = torch.randn(*batch, 2, device=device, dtype=dtype) if c else None
    x = est.sample(sample_shape, context)
    assert x.shape == (*sample_shape, *batch, 3)
    assert x.dtype == dtype and x.device.type == device.type
    lp = est.log_prob(x, context)
    assert lp.shape == (*sample_shape, *batch)
    assert torch.isfinite(lp).all()
    d = est(context)
    assert d.batch_shape == batch and d.event_shape == (3,)
    assert d.sample(sample_shape).shape == (*sample_shape, *batch, 3)
    torch.testing.assert_close(d.log_prob(x), lp)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("conditional", [False, True])
def test_log_prob_is_sum_of_one_at_a_time_conditionals(name, conditional, device):
    d = 4
    est = build(
        name,
        d=d,
        c=2 if conditional else 0,
        device=device,
        permutation="random",
        num_masks=3,
        skip_connections=True,
    )
    est.made.next_mask()
    context = torch.randn(6, 2, device=device) if conditional else None
    x = data(name, (6, d), device)
    perm = est.made.get_permutation().tolist()
    total = torch.zeros(6, device=device)
    for k, i in enumerate(perm):
        # Inputs that do not precede i get unrelated values: conditional i must not see them.
        probe = data(name, (6, d), device)
        probe[:, perm[:k]] = x[:, perm[:k]]
        total = total + est.conditionals(probe, context).log_prob(x)[:, i]
    torch.testing.assert_close(total, est.log_prob(x, context))


@pytest.mark.parametrize("name", NAMES)
def test_made_is_autoregressive(name, device):
    est = build(name, d=5, device=device, permutation="random", skip_connections=True)
    dep = check_autoregressive(est.made, 5)
    assert dep.any()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("conditional", [False, True])
def test_sample_goes_through_solver_like_naive_loop(name, conditional, device):
    est = build(name, d=4, c=2 if conditional else 0, device=device, permutation="random")
    context = torch.randn(5, 2, device=device) if conditional else None
    noise = est.draw_noise(torch.Size((7, 5, 4)) if conditional else torch.Size((7, 4)))
    # Under no_grad the solver may take its fast path; with grad it must stay differentiable.
    with torch.no_grad():
        fast = est.sample_from_noise(noise, context)
        naive = naive_autoregressive_solve(est.made, est.step, noise, context)
    torch.testing.assert_close(fast, naive)
    torch.testing.assert_close(est.sample_from_noise(noise, context), naive)
    # The same seed gives the same sample through the public sampler.
    torch.manual_seed(3)
    a = est.sample((7,), context)
    torch.manual_seed(3)
    b = est.sample((7,), context)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name, device):
    kw = dict(d=4, c=2, device=device, permutation="random", num_masks=3)
    a = build(name, seed=1, **kw)
    a.made.next_mask()
    b = build(name, seed=2, **kw)
    b.load_state_dict(a.state_dict())
    x = data(name, (6, 4), device)
    context = torch.randn(6, 2, device=device)
    torch.testing.assert_close(b.log_prob(x, context), a.log_prob(x, context), rtol=0, atol=0)
    torch.testing.assert_close(
        b.ensemble_log_prob(x, context), a.ensemble_log_prob(x, context), rtol=0, atol=0
    )


@pytest.mark.parametrize("name", NAMES)
def test_ensemble_log_prob_averages_densities_and_restores_mask(name, device):
    est = build(name, d=3, device=device, permutation="random", num_masks=4)
    est.made.set_mask(2)
    x = data(name, (5, 3), device)
    terms = []
    for k in range(4):
        est.made.set_mask(k)
        terms.append(est.log_prob(x))
    est.made.set_mask(2)
    expected = torch.stack(terms).exp().mean(0).log()
    torch.testing.assert_close(est.ensemble_log_prob(x), expected)
    assert int(est.made.mask_index) == 2
    single = build(name, d=3, device=device)
    torch.testing.assert_close(single.ensemble_log_prob(x), single.log_prob(x))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("conditional", [False, True])
def test_pyro_sample_with_obs_and_in_plate(name, conditional, device):
    est = build(name, d=3, c=2 if conditional else 0, device=device)
    x = data(name, (4, 3), device)
    context = torch.randn(4, 2, device=device) if conditional else None

    def model(obs):
        with pyro.plate("data", 4):
            return pyro.sample("x", est(context), obs=obs)

    trace = poutine.trace(model).get_trace(x)
    trace.compute_log_prob()
    torch.testing.assert_close(trace.nodes["x"]["log_prob"], est.log_prob(x, context))
    drawn = model(None)
    assert drawn.shape == (4, 3)
    assert torch.isfinite(est.log_prob(drawn, context)).all()


@pytest.mark.parametrize("name", NAMES)
def test_transformed_distribution_base(name, device):
    est = build(name, d=3, device=device)
    scale = torch.tensor([2.0, 0.5, 4.0], device=device)  # powers of two keep 0/1 exact
    affine = dist.transforms.AffineTransform(torch.zeros(3, device=device), scale, event_dim=1)
    td = dist.TransformedDistribution(est(), [affine])
    y = td.sample((5,))
    assert y.shape == (5, 3)
    expected = est.log_prob(y / scale) - scale.log().sum()
    torch.testing.assert_close(td.log_prob(y), expected)
    assert td.has_rsample == est.has_rsample


@pytest.mark.parametrize("name", NAMES)
def test_support_and_expand(name, device):
    est = build(name, d=3, device=device)
    d = est().expand((2, 5))
    assert d.batch_shape == (2, 5)
    assert d.sample().shape == (2, 5, 3)
    assert d.log_prob(data(name, (3,), device)).shape == (2, 5)
    x = data(name, (3,), device)
    assert bool(d.support.check(x))
    if name == "bernoulli":
        assert not bool(d.support.check(x + 0.5))


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_clearly(name, device):
    est = build(name, d=3, device=device)
    with pytest.raises(ValueError, match="last dimension input_dim=3"):
        est.log_prob(data(name, (4, 2), device))
    for bad in (math.nan, math.inf, -math.inf):
        x = data(name, (4, 3), device)
        x[1, 2] = bad
        x[3, 0] = bad
        with pytest.raises(ValueError, match=r"NaN or Inf in 2 row\(s\) \(batch indices 1, 3\)"):
            est.log_prob(x)
    with pytest.raises(ValueError, match="context_dim=0"):
        est.log_prob(data(name, (4, 3), device), torch.randn(4, 2, device=device))
    cond = build(name, d=3, c=2, device=device)
    with pytest.raises(ValueError, match="conditional"):
        cond.log_prob(data(name, (4, 3), device))
    with pytest.raises(ValueError, match="conditional"):
        cond.sample((2,))
    with pytest.raises(ValueError, match="conditional"):
        cond()
    with pytest.raises(ValueError, match="context_dim=2"):
        cond.sample((2,), torch.randn(4, 3, device=device))
    with pytest.raises(TypeError, match="param_dims"):
        ESTIMATORS[name](3, [8], 0, param_dims=(1,))


@pytest.mark.parametrize("name", CONTINUOUS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_inputs_give_finite_log_prob_and_gradients(name, dtype, device):
    est = build(name, d=3, c=2, device=device, dtype=dtype, skip_connections=True)
    x = torch.tensor(
        [[1e6, -1e6, 1e6], [0.0, 1e6, -1.0], [-1e6, 0.5, 0.0]], device=device, dtype=dtype
    )
    context = torch.tensor([[1e6, -1e6]], device=device, dtype=dtype).expand(3, 2)
    lp = est.log_prob(x, context)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    for p in est.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


# ------------------------------------------------ continuous: normalization and sampling
def _grid(est: MADEDensity, lim: float = 10.0, n: int = 401):
    g = torch.linspace(-lim, lim, n)
    x = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)  # (n, n, 2)
    with torch.no_grad():
        p = est.log_prob(x).exp()
    return g, x, p


def _small_weights(est: MADEDensity, factor: float = 0.5) -> MADEDensity:
    # Keeps every conditional well inside the integration grid.
    with torch.no_grad():
        for p in est.parameters():
            p.mul_(factor)
    return est


@pytest.mark.parametrize("name", CONTINUOUS)
def test_density_integrates_to_one(name):
    est = _small_weights(build(name, d=2, h=(16,), permutation=[1, 0]))
    g, _, p = _grid(est)
    total = torch.trapezoid(torch.trapezoid(p, g, dim=1), g, dim=0)
    assert abs(float(total) - 1.0) < 1e-3


@pytest.mark.parametrize("name", CONTINUOUS)
def test_samples_match_density(name):
    est = _small_weights(build(name, d=2, h=(16,)))
    g, x, p = _grid(est)
    samples = est.sample((20000,))
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
