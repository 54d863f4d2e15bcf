"""What every MADE density estimator (``madeflow.distributions``) shares, over the registry.

The checks of the density-model contract that flows share too (shapes, normalization, sampling,
Pyro's ``sample``/``plate``/``expand``, bad inputs) run in ``test_generic.py``; here are those of
:class:`madeflow.distributions.MADEDensity` itself: one-at-a-time conditionals, the sequential
solve, mask ensembles, and the constructor.
"""

from __future__ import annotations

import pytest
import torch
from registry import CONTEXT_DIM, DENSITIES, REGISTRY, build

from madeflow import check_autoregressive
from madeflow.solve import naive_autoregressive_solve


def _context(case, *batch: int) -> torch.Tensor | None:
    return torch.randn(*batch, CONTEXT_DIM) if case.spec.conditional else None


@pytest.mark.parametrize("name", DENSITIES)
def test_log_prob_is_sum_of_one_at_a_time_conditionals(name):
    d = 4
    case = build(name, dim=d, permutation="random", num_masks=3, skip_connections=True)
    est = case.obj
    est.made.next_mask()
    context = _context(case, 6)
    x = case.points(6)
    perm = est.made.get_permutation().tolist()
    total = torch.zeros(6)
    for k, i in enumerate(perm):
        # Inputs that do not precede i get unrelated values: conditional i must not see them.
        probe = case.points(6)
        probe[:, perm[:k]] = x[:, perm[:k]]
        total = total + est.conditionals(probe, context).log_prob(x)[:, i]
    torch.testing.assert_close(total, est.log_prob(x, context))


@pytest.mark.parametrize("name", DENSITIES)
def test_made_is_autoregressive(name):
    case = build(name, dim=5, permutation="random", skip_connections=True)
    dep = check_autoregressive(case.obj.made, 5, context=_context(case))
    assert dep.any()


@pytest.mark.parametrize("name", DENSITIES)
def test_sample_goes_through_solver_like_naive_loop(name):
    case = build(name, dim=4, permutation="random")
    est = case.obj
    context = _context(case, 5)
    noise = est.draw_noise(torch.Size((7, 5, 4)) if context is not None else torch.Size((7, 4)))
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


@pytest.mark.parametrize("name", DENSITIES)
def test_state_dict_round_trip_keeps_the_mask_schedule(name):
    kw = dict(dim=4, permutation="random", num_masks=3)
    a = build(name, seed=1, **kw)
    a.obj.made.next_mask()
    b = build(name, seed=2, **kw)
    b.obj.load_state_dict(a.obj.state_dict())
    x = a.points(6)
    context = _context(a, 6)
    torch.testing.assert_close(
        b.obj.log_prob(x, context), a.obj.log_prob(x, context), rtol=0, atol=0
    )
    torch.testing.assert_close(
        b.obj.ensemble_log_prob(x, context), a.obj.ensemble_log_prob(x, context), rtol=0, atol=0
    )


@pytest.mark.parametrize("name", DENSITIES)
def test_ensemble_log_prob_averages_densities_and_restores_mask(name):
    case = build(name, permutation="random", num_masks=4)
    est = case.obj
    est.made.set_mask(2)
    x = case.points(5)
    context = _context(case, 5)
    terms = []
    for k in range(4):
        est.made.set_mask(k)
        terms.append(est.log_prob(x, context))
    est.made.set_mask(2)
    expected = torch.stack(terms).exp().mean(0).log()
    torch.testing.assert_close(est.ensemble_log_prob(x, context), expected)
    assert int(est.made.mask_index) == 2
    single = build(name).obj
    torch.testing.assert_close(single.ensemble_log_prob(x, context), single.log_prob(x, context))


@pytest.mark.parametrize("name", DENSITIES)
def test_constructor_refuses_param_dims(name):
    with pytest.raises(TypeError, match="param_dims"):
        REGISTRY[name].make(3, hidden_dims=[8], param_dims=(1,))
