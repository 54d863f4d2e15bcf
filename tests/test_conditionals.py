"""Exact marginals and conditionals of the MADE estimators (madeflow.distributions.conditionals).

Marginals are checked against what they must equal by definition: numerical integration of the
full density over the unobserved inputs (continuous, 2-3 D, Simpson's rule on a grid) and exact
enumeration (binary). Conditional draws are checked against the conditional density computed
independently from ``log_prob`` (enumeration, or a grid), with tolerances from the sampling error.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from madeflow import impute
from madeflow.distributions import BernoulliMADE, GaussianMADE, GaussianMixtureMADE


@pytest.fixture(autouse=True)
def default_dtype():
    """float64 whatever ``--dtype``: these are exact checks against integration and enumeration,
    with statistical bounds sized for float64 models (float32 is tested explicitly below)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)


NAN = float("nan")


# ---------------------------------------------------------------------------------- helpers
def spread(model, scale):
    """Scale every parameter: sharper, more distinctive densities than at initialization."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def simpson(n, low, high):
    """Nodes and Simpson weights on ``[low, high]`` (``n`` odd): error O(h^4)."""
    nodes = torch.linspace(low, high, n)
    h = (high - low) / (n - 1)
    w = torch.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return nodes, w * h / 3


def integrate_out(log_density, x_obs, observed, n=301, box=9.0):
    """log of the integral of ``exp(log_density)`` over the unobserved inputs, at ``x_obs``.

    ``x_obs``: ``(D,)`` with the observed values; the others (1 or 2 of them) span a grid.
    """
    d = x_obs.numel()
    free = torch.nonzero(~observed).flatten().tolist()
    nodes, w = simpson(n, -box, box)
    grids = torch.meshgrid(*([nodes] * len(free)), indexing="ij")
    weight = math.prod(torch.meshgrid(*([w] * len(free)), indexing="ij")).reshape(-1)
    x = x_obs.expand(weight.numel(), d).clone()
    for j, g in zip(free, grids):
        x[:, j] = g.reshape(-1)
    return torch.logsumexp(log_density(x) + weight.log(), 0)


def all_binary(d):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))


def with_nan(x, observed):
    return torch.where(observed, x, torch.full_like(x, NAN))


def mixture_log_prob(est, x, masks, context=None):
    """log of the mean over ``masks`` of each mask's density (computed mask by mask)."""
    terms = []
    for k in masks:
        est.made.set_mask(k)
        terms.append(est.log_prob(x, context))
    est.made.set_mask(0)
    return (torch.logsumexp(torch.stack(terms), 0) - math.log(len(masks))).detach()


def ks_distance(samples, grid, cdf):
    """sup |empirical CDF - reference CDF| (reference interpolated on ``grid``)."""
    s = torch.sort(samples.detach()).values
    n = s.numel()
    ref = torch.from_numpy(np.interp(s.numpy(), grid.detach().numpy(), cdf.detach().numpy()))
    upper = torch.arange(1, n + 1) / n - ref
    lower = ref - torch.arange(0, n) / n
    return float(torch.maximum(upper, lower).max())


# A KS distance over n draws exceeds 1.95 / sqrt(n) with probability 0.001 under the null
# (Kolmogorov's limit law); the seed is fixed, so a pass is reproducible and a real bias of
# that size is caught.
def ks_bound(n):
    return 1.95 / math.sqrt(n)


# ------------------------------------------------------------- marginals: continuous models
CONTINUOUS = {
    "gaussian": lambda **kw: GaussianMADE(hidden_dims=[16], **kw),
    "mixture": lambda **kw: GaussianMixtureMADE(hidden_dims=[16], num_components=3, **kw),
}


@pytest.mark.parametrize("name", CONTINUOUS)
@pytest.mark.parametrize(
    "d, perm, observed",
    [
        (2, [1, 0], [False, True]),
        (3, [2, 0, 1], [False, False, True]),
        (3, [0, 2, 1], [True, False, True]),
    ],
)
def test_marginal_matches_numerical_integration(name, d, perm, observed):
    est = spread(CONTINUOUS[name](input_dim=d, permutation=perm), 0.7)
    observed = torch.tensor(observed)
    n = 2001 if (~observed).sum() == 1 else 301
    x = torch.randn(3, d)
    got = est.marginal_log_prob(with_nan(x, observed), observed)
    want = torch.stack([integrate_out(est.log_prob, row, observed, n=n) for row in x])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # Not vacuous: the marginal is not the joint, nor the same for every row.
    assert not torch.allclose(got, est.log_prob(x), atol=1e-2)
    assert got.std() > 1e-2


@pytest.mark.parametrize("name", CONTINUOUS)
def test_marginal_with_context_matches_integration(name):
    est = spread(CONTINUOUS[name](input_dim=3, context_dim=2, permutation=[1, 2, 0]), 0.7)
    observed = torch.tensor([False, True, False])
    x = torch.randn(2, 3)
    contexts = torch.randn(2, 2)
    got = est.marginal_log_prob(with_nan(x, observed), observed, contexts)
    want = torch.stack(
        [
            integrate_out(lambda z, c=c: est.log_prob(z, c), row, observed, n=301)
            for row, c in zip(x, contexts)
        ]
    )
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # The context matters.
    swapped = est.marginal_log_prob(with_nan(x, observed), observed, contexts.flip(0))
    assert not torch.allclose(got, swapped, atol=1e-3)


def test_multi_mask_marginal_is_the_covering_mixtures_marginal():
    # Masks 0 and 1 start with inputs {0, 1} (in both orders); mask 2 does not.
    # p_O = (p_0 + p_1) / 2. (A single first input would not do: with no context, the first
    # conditional is the output bias alone, the same in every mask.)
    est = spread(GaussianMADE(3, [16], permutation=[[1, 0, 2], [0, 1, 2], [2, 1, 0]]), 0.7)
    observed = torch.tensor([True, True, False])
    assert est.covering_masks(observed) == [0, 1]
    x = torch.randn(3, 3)
    got = est.marginal_log_prob(with_nan(x, observed), observed)

    def covering_mixture(z):
        return mixture_log_prob(est, z, [0, 1])

    want = torch.stack([integrate_out(covering_mixture, row, observed, n=2001) for row in x])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # It is the mean of the two masks' marginals, and neither mask's alone.
    singles = []
    for k in (0, 1):
        est.made.set_mask(k)
        singles.append(est.conditionals(x).log_prob(x)[:, :2].sum(-1))
    est.made.set_mask(0)
    mean = torch.logsumexp(torch.stack(singles), 0) - math.log(2)
    torch.testing.assert_close(got, mean)
    assert (singles[0] - singles[1]).abs().max() > 1e-2


def test_full_and_empty_observation():
    est = GaussianMixtureMADE(3, [16], num_components=2, num_masks=3, permutation="random")
    x = torch.randn(4, 3)
    everything, nothing = torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)
    torch.testing.assert_close(est.marginal_log_prob(x, everything), est.ensemble_log_prob(x))
    torch.testing.assert_close(est.marginal_log_prob(x, nothing), torch.zeros(4))
    torch.testing.assert_close(est.conditional_log_prob(x, nothing), est.ensemble_log_prob(x))
    torch.testing.assert_close(est.conditional_log_prob(x, everything), torch.zeros(4))


# ------------------------------------------------------------------ marginals: binary models
@pytest.mark.parametrize("context_dim", [0, 2])
def test_binary_marginal_matches_enumeration(context_dim):
    est = spread(BernoulliMADE(5, [32], context_dim=context_dim, permutation=[3, 1, 0, 4, 2]), 3.0)
    context = torch.randn(context_dim) if context_dim else None
    observed = torch.tensor([False, True, False, True, False])
    full = all_binary(5)
    log_p = est.log_prob(full, context)
    for bits in itertools.product([0.0, 1.0], repeat=2):
        x = torch.tensor([NAN, bits[0], NAN, bits[1], NAN])
        match = (full[:, 1] == bits[0]) & (full[:, 3] == bits[1])
        want = log_p[match].logsumexp(0)
        torch.testing.assert_close(est.marginal_log_prob(x, observed, context), want)


def test_binary_multi_mask_marginal_matches_enumeration():
    perms = torch.tensor([[0, 2, 1, 3], [2, 0, 3, 1], [1, 0, 2, 3], [3, 2, 1, 0]])
    est = spread(BernoulliMADE(4, [24], permutation=perms, skip_connections=True), 3.0)
    observed = torch.tensor([True, False, True, False])
    assert est.covering_masks(observed) == [0, 1]
    full = all_binary(4)
    log_p = mixture_log_prob(est, full, [0, 1])
    for a, b in itertools.product([0.0, 1.0], repeat=2):
        match = (full[:, 0] == a) & (full[:, 2] == b)
        got = est.marginal_log_prob(torch.tensor([a, NAN, b, NAN]), observed)
        torch.testing.assert_close(got, log_p[match].logsumexp(0))


# ----------------------------------------------------------------------- conditional draws
def exact_conditional(est, x_obs, observed, masks, context=None):
    """p_O(completion | x_O) for every completion, by enumeration: ``(rows, probs)``."""
    d = observed.numel()
    full = all_binary(d)
    rows = full[(full[:, observed] == x_obs[observed]).all(-1)]
    log_p = mixture_log_prob(est, rows, masks, context)
    return rows, (log_p - log_p.logsumexp(0)).exp()


def frequencies(draws, rows):
    return torch.stack([(draws == r).all(-1).double().mean() for r in rows])


# Each frequency over n draws has standard deviation <= 0.5 / sqrt(n); 5 of them bound the
# deviation of every one of a handful of frequencies with probability > 1 - 1e-5 (fixed seed).
def freq_bound(n):
    return 5 * 0.5 / math.sqrt(n)


@pytest.mark.parametrize("context_dim", [0, 3])
def test_binary_conditional_draws_match_enumeration(context_dim):
    est = spread(BernoulliMADE(5, [32], context_dim=context_dim, permutation=[4, 1, 0, 2, 3]), 3.0)
    context = torch.randn(context_dim) if context_dim else None
    observed = torch.tensor([False, True, False, False, True])
    x = torch.tensor([NAN, 1.0, NAN, NAN, 0.0])
    n = 20000
    draws = est.conditional_sample(x, observed, (n,), context)
    assert draws.shape == (n, 5)
    assert (draws[:, 1] == 1).all() and (draws[:, 4] == 0).all()
    rows, probs = exact_conditional(est, torch.nan_to_num(x), observed, [0], context)
    assert (frequencies(draws, rows) - probs).abs().max() < freq_bound(n)
    # Not vacuous: a sampler that ignored the model (uniform completions) would be caught.
    assert (probs - 1 / 8).abs().max() > 3 * freq_bound(n)


def test_binary_multi_mask_draws_weight_masks_by_their_marginals():
    perms = torch.tensor([[0, 2, 1, 3], [2, 0, 3, 1], [1, 0, 2, 3]])
    est = spread(BernoulliMADE(4, [24], permutation=perms, skip_connections=True), 3.0)
    observed = torch.tensor([True, False, True, False])
    x = torch.tensor([1.0, NAN, 0.0, NAN])
    n = 40000
    draws = est.conditional_sample(x, observed, (n,))
    rows, probs = exact_conditional(est, torch.nan_to_num(x), observed, [0, 1])
    assert (frequencies(draws, rows) - probs).abs().max() < freq_bound(n)
    # Picking the masks uniformly instead would be caught: its answer lies far away.
    uniform = 0.5 * sum(
        exact_conditional(est, torch.nan_to_num(x), observed, [k])[1] for k in (0, 1)
    )
    assert (uniform - probs).abs().max() > 3 * freq_bound(n)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_continuous_conditional_draws_pass_a_pit_test(name):
    # Ordering [1, 2, 0] with input 1 observed: x2 | x1 is conditional 2 and x0 | x1, x2 is
    # conditional 0, so u = (F_2(x2 | x1), F_0(x0 | x1, x2)) are independent uniforms exactly
    # when the draws follow the conditional (the probability integral transform).
    est = spread(CONTINUOUS[name](input_dim=3, context_dim=2, permutation=[1, 2, 0]), 0.7)
    observed = torch.tensor([False, True, False])
    x = torch.tensor([NAN, 0.4, NAN])
    context = torch.randn(2)
    n = 8000
    draws = est.conditional_sample(x, observed, (n,), context)
    assert (draws[:, 1] == 0.4).all()
    u = est.conditionals(draws, context).cdf(draws)[:, [2, 0]]
    grid = torch.linspace(0, 1, 101)
    for j in range(2):
        assert ks_distance(u[:, j], grid, grid) < ks_bound(n)
    # Independence of the two uniforms (rank correlation of a dependent pair would show).
    assert abs(float(torch.corrcoef(u.detach().T)[0, 1])) < 5 / math.sqrt(n)


def test_continuous_multi_mask_draws_match_the_mixture_conditional():
    # Two masks start with inputs {0, 1} (mask 2 does not); the draws of (x2, x3) given (x0, x1)
    # must follow (w0 p_0 + w1 p_1)(x2, x3 | x0, x1), w_k proportional to p_k(x0, x1). Its
    # marginal CDFs in x2 and x3 come from the joint densities on a grid, independently of the
    # sampler.
    perms = [[0, 1, 2, 3], [1, 0, 3, 2], [3, 2, 1, 0]]
    est = spread(GaussianMADE(4, [16], permutation=perms), 2.0)
    observed = torch.tensor([True, True, False, False])
    given = torch.tensor([0.8, -0.5])
    n = 20000
    draws = est.conditional_sample(torch.cat([given, torch.full((2,), NAN)]), observed, (n,))
    assert (draws[:, :2] == given).all()

    nodes, w = simpson(401, -9.0, 9.0)
    g2, g3 = torch.meshgrid(nodes, nodes, indexing="ij")
    pts = torch.cat([given.expand(g2.numel(), 2), g2.reshape(-1, 1), g3.reshape(-1, 1)], -1)
    joints = [mixture_log_prob(est, pts, [k]).exp().reshape(401, 401) for k in (0, 1)]
    # p_k(x0, x1): each mask's joint integrated over (x2, x3) on the grid.
    masses = torch.stack([(joint * w.outer(w)).sum() for joint in joints])
    given_k = [joint / mass for joint, mass in zip(joints, masses)]  # p_k(x2, x3 | x0, x1)

    def conditional_cdfs(weights):
        dens = sum(wk * cond for wk, cond in zip(weights, given_k))
        out = []
        for axis in (1, 0):  # marginal of x2 (integrate x3 out), then of x3
            marginal = (dens * w.unsqueeze(0 if axis == 1 else 1)).sum(axis)  # Simpson
            steps = (marginal[1:] + marginal[:-1]) / 2  # cumulative trapezoid: error O(h^2)
            cdf = torch.cat([marginal.new_zeros(1), steps.cumsum(0)])
            out.append(cdf / cdf[-1])
        return out

    cdfs = conditional_cdfs(masses / masses.sum())
    for j, cdf in zip((2, 3), cdfs):
        assert ks_distance(draws[:, j], nodes, cdf) < ks_bound(n)
    # Uniform weights would be caught: their CDFs lie farther away than the bound.
    uniform = conditional_cdfs([0.5, 0.5])
    gap = max(float((a - b).abs().max()) for a, b in zip(cdfs, uniform))
    assert gap > 2 * ks_bound(n)


# ------------------------------------------------------------ observed entries, shapes, costs
ALL = {
    "bernoulli": lambda **kw: BernoulliMADE(hidden_dims=[16], **kw),
    **CONTINUOUS,
}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("batch", [(), (3,), (3, 4)])
@pytest.mark.parametrize("sample_shape", [(), (2,)])
def test_observed_entries_untouched_and_shapes(name, batch, sample_shape):
    est = ALL[name](input_dim=4, context_dim=2, permutation=[2, 0, 3, 1])
    observed = torch.tensor([True, False, True, False])
    x = torch.rand(*batch, 4) if name != "bernoulli" else torch.randint(0, 2, (*batch, 4)).double()
    x = with_nan(x, observed)
    before = x.clone()
    context = torch.randn(2)  # broadcast against every batch shape
    draws = est.conditional_sample(x, observed, sample_shape, context)
    assert draws.shape == (*sample_shape, *batch, 4)
    assert torch.equal(draws[..., observed], x[..., observed].expand_as(draws[..., observed]))
    assert draws.isfinite().all()
    assert torch.equal(x.isnan(), before.isnan()) and torch.equal(
        x.nan_to_num(), before.nan_to_num()
    )
    assert est.marginal_log_prob(x, observed, context).shape == batch
    full = draws.reshape(-1, 4)[: max(1, math.prod(batch))].reshape(*batch, 4)
    assert est.conditional_log_prob(full, observed, context).shape == batch


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_dtype_computes_in_its_own_precision(name, dtype):
    # The same weights in float32 and float64: results in the model's dtype, and the float32
    # values within float32 rounding of the float64 ones (so nothing is computed in a wrong
    # precision, and nothing silently upcast or truncated).
    ref = spread(ALL[name](input_dim=4, context_dim=2, permutation=[[2, 0, 3, 1], [0, 2, 1, 3]]), 2)
    est = copy.deepcopy(ref).to(dtype)
    observed = torch.tensor([True, False, True, False])
    x = torch.rand(5, 4) if name != "bernoulli" else torch.randint(0, 2, (5, 4)).double()
    context = torch.randn(5, 2)
    tol = {"atol": 1e-4, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0, "rtol": 0}
    for method in ("marginal_log_prob", "conditional_log_prob"):
        got = getattr(est, method)(x.to(dtype), observed, context.to(dtype))
        want = getattr(ref, method)(x, observed, context)
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, **tol)
    draws = est.conditional_sample(
        with_nan(x, observed).to(dtype), observed, (3,), context.to(dtype)
    )
    assert draws.dtype == dtype and draws.isfinite().all()
    assert torch.equal(draws[..., observed], x[:, observed].to(dtype).expand(3, 5, 2))
    filled = impute(est, with_nan(x, observed).to(dtype), (3,), context.to(dtype), reduce="mean")
    assert filled.dtype == dtype and torch.equal(filled[:, observed], x[:, observed].to(dtype))


def test_observed_values_survive_a_float32_model_bit_for_bit():
    est = GaussianMADE(3, [8], permutation=[1, 0, 2]).float()
    x = torch.tensor([NAN, 0.1234567, NAN], dtype=torch.float32)
    draws = est.conditional_sample(x, torch.tensor([False, True, False]), (5,))
    assert draws.dtype == torch.float32 and (draws[:, 1] == x[1]).all()


def test_empty_batches():
    est = GaussianMADE(3, [8])
    observed = torch.tensor([True, False, False])
    assert est.marginal_log_prob(torch.zeros(0, 3), observed).shape == (0,)
    assert est.conditional_sample(torch.zeros(0, 3), observed, (2,)).shape == (2, 0, 3)


def test_nothing_observed_is_plain_sampling_everything_observed_is_a_copy():
    est = BernoulliMADE(3, [12], permutation=[2, 0, 1])
    spread(est, 3.0)
    nothing, everything = torch.zeros(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)
    n = 20000
    draws = est.conditional_sample(torch.full((3,), NAN), nothing, (n,))
    rows = all_binary(3)
    probs = est.log_prob(rows).exp()
    assert (frequencies(draws, rows) - probs).abs().max() < freq_bound(n)
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert torch.equal(est.conditional_sample(x, everything, (4,)), x.expand(4, 2, 3))


def test_marginal_is_differentiable_in_parameters_and_data():
    est = GaussianMixtureMADE(3, [16], num_components=2, context_dim=1, permutation=[0, 2, 1])
    observed = torch.tensor([True, False, True])
    x = torch.tensor([[0.3, NAN, -0.2]], requires_grad=True)
    context = torch.randn(1, 1, requires_grad=True)
    est.marginal_log_prob(x, observed, context).sum().backward()
    assert all(p.grad is not None for p in est.parameters() if p.requires_grad)
    assert torch.isfinite(x.grad[:, observed]).all() and (x.grad[:, ~observed] == 0).all()
    assert context.grad is not None and context.grad.abs().sum() > 0


def test_current_mask_is_restored():
    est = GaussianMADE(3, [16], permutation=[[0, 1, 2], [0, 2, 1], [2, 1, 0]])
    est.made.set_mask(2)
    observed = torch.tensor([True, False, False])
    x = torch.tensor([0.5, NAN, NAN])
    est.marginal_log_prob(x, observed)
    est.conditional_sample(x, observed, (10,))
    assert int(est.made.mask_index) == 2
    assert est.made.get_permutation().tolist() == [2, 1, 0]


def test_conditional_draws_take_the_one_pass_solve(monkeypatch):
    # The D-pass reference loop must not run (eager mode, a plain MADE): the engine does.
    import madeflow.solve as solve

    def refuse(*args, **kwargs):
        raise AssertionError("the reference loop ran")

    monkeypatch.setattr(solve, "naive_autoregressive_solve", refuse)
    est = GaussianMADE(5, [16], permutation=[[3, 1, 0, 2, 4], [1, 3, 4, 2, 0]])
    x = torch.tensor([NAN, 0.2, NAN, -1.0, NAN])
    draws = est.conditional_sample(x, torch.tensor([False, True, False, True, False]), (7,))
    assert draws.shape == (7, 5)


# ----------------------------------------------------------------------------------- errors
def test_uncovered_subset_names_the_inputs_and_the_remedy():
    est = GaussianMADE(4, [16], permutation=[[0, 1, 2, 3], [3, 2, 1, 0]])
    observed = torch.tensor([False, True, False, True])
    x = torch.zeros(4)
    for call in (
        lambda: est.marginal_log_prob(x, observed),
        lambda: est.conditional_log_prob(x, observed),
        lambda: est.conditional_sample(x, observed),
        lambda: est.covering_masks(observed),
    ):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "observed inputs [1, 3]" in message
        assert "[0, 1]; [3, 2]" in message  # what the masks start with instead
        assert "e.g. [1, 3, 0, 2]" in message  # an ordering that would work
        assert "covering_orderings(4, subsets)" in message  # how to train one


@pytest.mark.parametrize(
    "observed, error, match",
    [
        ([True, False, True], TypeError, r"observed must be a boolean tensor of shape \(3,\)"),
        (torch.tensor([1, 0, 1]), TypeError, r"boolean tensor .* got torch.int64"),
        (torch.tensor([True, False]), ValueError, r"observed must have shape \(3,\)"),
        (torch.ones(1, 3, dtype=torch.bool), ValueError, r"got \(1, 3\)"),
    ],
)
def test_malformed_observed(observed, error, match):
    est = GaussianMADE(3, [8])
    for call in (est.marginal_log_prob, est.conditional_sample, est.conditional_log_prob):
        with pytest.raises(error, match=match):
            call(torch.zeros(3), observed)


def test_bad_points():
    est = GaussianMADE(3, [8], context_dim=2)
    observed = torch.tensor([True, False, True])
    c = torch.zeros(2)
    with pytest.raises(ValueError, match=r"x \(observed entries\) contains NaN or Inf in 1 row"):
        est.marginal_log_prob(torch.tensor([[0.0, 0.0, 0.0], [NAN, 0.0, 0.0]]), observed, c)
    with pytest.raises(ValueError, match=r"batch indices 1\)"):
        est.conditional_sample(
            torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, float("inf")]]), observed, context=c
        )
    with pytest.raises(ValueError, match="last dimension input_dim=3"):
        est.marginal_log_prob(torch.zeros(2), observed.new_ones(3)[:3], c)
    with pytest.raises(ValueError, match="is conditional"):
        est.marginal_log_prob(torch.zeros(3), observed)
    with pytest.raises(ValueError, match="does not match"):
        est.marginal_log_prob(torch.zeros(4, 3), observed, torch.zeros(5, 2))
    with pytest.raises(TypeError, match="continuous density"):
        est.marginal_log_prob(torch.zeros(3, dtype=torch.int64), observed, c)
    with pytest.raises(ValueError, match="contains NaN"):  # every entry is scored here
        est.conditional_log_prob(torch.tensor([0.0, NAN, 0.0]), observed, c)
    binary = BernoulliMADE(3, [8], permutation=[2, 0, 1])
    with pytest.raises(ValueError, match="needs binary x"):
        binary.marginal_log_prob(torch.tensor([0.5, NAN, 1.0]), observed)
    # Unobserved entries are ignored whatever they hold.
    binary.marginal_log_prob(torch.tensor([1.0, 0.5, 1.0]), observed)


@pytest.mark.parametrize("name", ALL)
def test_runs_on_the_chosen_device(name, device):
    # --device cuda runs the whole path (coverage, weights, one solve per mask, imputation) there.
    est = ALL[name](input_dim=4, context_dim=1, permutation=[[1, 0, 2, 3], [0, 1, 3, 2]])
    est = est.to(device)
    observed = torch.tensor([True, True, False, False], device=device)
    x = torch.tensor([[1.0, 0.0, NAN, NAN]] * 3, device=device)
    context = torch.randn(3, 1, device=device)
    assert est.marginal_log_prob(x, observed, context).device.type == device.type
    draws = est.conditional_sample(x, observed, (5,), context)
    assert draws.device.type == device.type and torch.equal(
        draws[..., :2], x[..., :2].expand(5, 3, 2)
    )
    filled = impute(est, x, (5,), context=context, reduce="mean")
    assert filled.device.type == device.type and filled.isfinite().all()


def test_overflow_is_a_numerical_error_as_in_log_prob():
    from madeflow.validation import NumericalError

    est = GaussianMADE(2, [8], permutation=[1, 0])
    with torch.no_grad():
        est.made.output_layer.bias.fill_(float("nan"))  # the model's values break, not the data
    observed = torch.tensor([False, True])
    with pytest.raises(NumericalError, match="NaN or Inf on finite data"):
        est.marginal_log_prob(torch.tensor([[NAN, 0.5]]), observed)
    with pytest.raises(NumericalError, match="NaN or Inf on finite data"):
        est.conditional_log_prob(torch.tensor([[0.1, 0.5]]), observed)
