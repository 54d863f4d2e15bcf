"""madeflow.impute: rows with different missing patterns, exact conditional draws, clear errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from madeflow import covering_orderings, impute
from madeflow.distributions import BernoulliMADE, GaussianMADE
from madeflow.imputation import missing_patterns

NAN = float("nan")


def sharpen(model, scale=3.0):
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def exact_completion_probs(est, x):
    """p(completion | observed entries of x) over every binary completion, by enumeration."""
    d = x.numel()
    full = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))
    observed = ~x.isnan()
    rows = full[(full[:, observed] == x[observed]).all(-1)]
    terms = []  # the mixture of the masks whose ordering starts with the observed inputs
    for k in est.covering_masks(observed):
        est.made.set_mask(k)
        terms.append(est.log_prob(rows))
    est.made.set_mask(0)
    log_p = torch.stack(terms).logsumexp(0).detach()
    return rows, (log_p - log_p.logsumexp(0)).exp()


def test_missing_patterns_group_rows():
    x = torch.tensor([[1.0, NAN, 2.0], [NAN, NAN, NAN], [3.0, NAN, 4.0], [1.0, 2.0, 3.0]])
    patterns, which = missing_patterns(x)
    assert patterns.tolist() == [[False, False, False], [True, False, True], [True, True, True]]
    assert which.tolist() == [1, 0, 1, 2]


def test_each_pattern_gets_its_own_exact_conditional():
    # Orderings cover both patterns; each row's draws follow p(missing | its observed entries).
    perms = covering_orderings(4, [[0, 1], [3]], seed=0)
    est = sharpen(BernoulliMADE(4, [24], permutation=perms, skip_connections=True))
    x = torch.tensor([[1.0, 0.0, NAN, NAN], [NAN, NAN, NAN, 1.0], [0.0, 1.0, NAN, NAN]])
    n = 20000
    draws = impute(est, x, (n,))
    assert draws.shape == (n, 3, 4)
    bound = 5 * 0.5 / math.sqrt(n)  # 5 standard deviations of a frequency over n draws
    for i in range(3):
        observed = ~x[i].isnan()
        assert torch.equal(draws[:, i, observed], x[i, observed].expand(n, -1))
        rows, probs = exact_completion_probs(est, x[i])
        freq = torch.stack([(draws[:, i] == r).all(-1).double().mean() for r in rows])
        assert (freq - probs).abs().max() < bound
    # Rows 0 and 2 share a pattern but not their values: their conditionals differ.
    p0, p2 = exact_completion_probs(est, x[0])[1], exact_completion_probs(est, x[2])[1]
    assert (p0 - p2).abs().max() > 3 * bound


def test_mean_is_the_conditional_mean():
    est = sharpen(BernoulliMADE(3, [16], permutation=[1, 0, 2]))
    x = torch.tensor([NAN, 1.0, NAN])
    n = 20000
    mean = impute(est, x, (n,), reduce="mean")
    rows, probs = exact_completion_probs(est, x)
    want = (rows * probs.unsqueeze(-1)).sum(0)
    assert mean[1] == 1.0
    assert (mean - want).abs().max() < 5 * 0.5 / math.sqrt(n)


def test_complete_rows_are_unchanged_and_empty_rows_are_plain_draws():
    est = sharpen(BernoulliMADE(3, [16], permutation=[2, 0, 1]))
    complete = torch.tensor([1.0, 0.0, 1.0])
    x = torch.stack([complete, torch.full((3,), NAN)])
    n = 20000
    draws = impute(est, x, (n,))
    assert torch.equal(draws[:, 0], complete.expand(n, 3))
    rows = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    freq = torch.stack([(draws[:, 1] == r).all(-1).double().mean() for r in rows])
    assert (freq - est.log_prob(rows).exp()).abs().max() < 5 * 0.5 / math.sqrt(n)


def test_no_missing_values_returns_the_input_untouched():
    est = GaussianMADE(3, [8])
    x = torch.randn(5, 3)
    assert torch.equal(impute(est, x), x)
    assert torch.equal(impute(est, x, (2,), reduce="mean"), x)
    assert torch.equal(impute(est, x, (2,)), x.expand(2, 5, 3))


def test_shapes_context_and_batch():
    est = GaussianMADE(3, [8], context_dim=2, permutation=[[0, 1, 2], [2, 1, 0]])
    x = torch.randn(2, 4, 3)
    x[0, 1, 1:] = NAN
    x[1, 3, :2] = NAN
    context = torch.randn(4, 2)
    out = impute(est, x, (5,), context=context)
    assert out.shape == (5, 2, 4, 3) and out.isfinite().all()
    keep = ~x.isnan()
    assert torch.equal(out[:, keep], x[keep].expand(5, -1))
    assert impute(est, x, context=context).shape == (2, 4, 3)
    assert impute(est, x, (5,), context=context, reduce="mean").shape == (2, 4, 3)


def test_uncovered_patterns_are_refused_before_any_draw():
    est = GaussianMADE(4, [8])  # identity ordering: only prefixes are covered
    x = torch.tensor(
        [[0.1, NAN, NAN, NAN], [NAN, 0.2, NAN, NAN], [0.3, 0.1, NAN, NAN], [NAN, 0.5, NAN, NAN]]
    )
    state = torch.random.get_rng_state()
    with pytest.raises(ValueError) as info:
        impute(est, x)
    message = str(info.value)
    assert "cannot impute 2 row(s) (batch indices 1, 3)" in message
    assert "observed inputs [1]" in message and "covering_orderings(4, subsets)" in message
    assert torch.equal(torch.random.get_rng_state(), state)  # nothing was drawn


@pytest.mark.parametrize(
    "x, kwargs, error, match",
    [
        (torch.tensor([[0.0, float("inf"), 0.0]]), {}, ValueError, "refuses Inf"),
        (torch.zeros(2, 4), {}, ValueError, "last dimension input_dim=3"),
        ([[0.0, NAN, 0.0]], {}, TypeError, "must be a torch.Tensor"),
        (torch.zeros(1, 3), {"reduce": "median"}, ValueError, "reduce must be None or 'mean'"),
    ],
)
def test_bad_inputs(x, kwargs, error, match):
    est = GaussianMADE(3, [8])
    with pytest.raises(error, match=match):
        impute(est, x, **kwargs)


def test_context_errors():
    est = GaussianMADE(3, [8], context_dim=2)
    x = torch.tensor([[0.0, NAN, NAN]])
    with pytest.raises(ValueError, match="is conditional"):
        impute(est, x)
    with pytest.raises(ValueError, match="does not match"):
        impute(est, x.expand(3, 3), context=torch.zeros(2, 2))
