"""BernoulliMADE: exact normalization, binary validation (sampling frequencies: test_generic)."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from conftest import tol
from hypothesis import given, settings
from hypothesis import strategies as st

from madeflow.distributions import BernoulliMADE


def all_binary(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))


@pytest.mark.parametrize("d", [1, 4, 10])
def test_probabilities_sum_to_one(d):
    est = BernoulliMADE(d, [max(d, 2) * 2], permutation="random", skip_connections=True)
    x = all_binary(d)
    total = est.log_prob(x).logsumexp(0).exp()
    torch.testing.assert_close(total, torch.ones(()))


def test_ensemble_probabilities_sum_to_one():
    est = BernoulliMADE(
        6,
        [20, 20],
        num_masks=5,
        permutation="random",
        hidden_degrees="random",
        skip_connections=True,
    )
    x = all_binary(6)
    total = est.ensemble_log_prob(x).logsumexp(0).exp()
    torch.testing.assert_close(total, torch.ones(()))
    # Not trivially so: the masks give different distributions.
    assert not torch.allclose(est.ensemble_log_prob(x), est.log_prob(x))


def test_conditional_probabilities_sum_to_one_for_every_context():
    est = BernoulliMADE(5, [16], context_dim=3)
    x = all_binary(5).unsqueeze(1)  # (32, 1, 5) against 4 contexts
    context = torch.randn(4, 3)
    lp = est.log_prob(x, context)
    assert lp.shape == (32, 4)
    torch.testing.assert_close(lp.logsumexp(0).exp(), torch.ones(4))
    # The context matters.
    assert not torch.allclose(lp[:, 0], lp[:, 1])


def test_integer_and_bool_data_are_converted():
    est = BernoulliMADE(4, [8])
    x = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]])
    expected = est.log_prob(x.double())
    torch.testing.assert_close(est.log_prob(x), expected)
    torch.testing.assert_close(est.log_prob(x.bool()), expected)


def test_non_binary_data_raise():
    est = BernoulliMADE(4, [8])
    with pytest.raises(ValueError, match="binary"):
        est.log_prob(torch.tensor([[0.0, 0.5, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="binary"):
        est.log_prob(torch.tensor([[0, 2, 1, 0]]))


def test_samples_are_binary_and_rsample_is_absent():
    est = BernoulliMADE(5, [8], context_dim=2)
    x = est.sample((100,), torch.randn(3, 2))
    assert ((x == 0) | (x == 1)).all()
    with pytest.raises(NotImplementedError):
        est.rsample((2,), torch.randn(2))


def test_log_prob_matches_closed_form_for_one_dimension():
    # With D = 1 the single logit is constant: p(1) = sigmoid(logit).
    est = BernoulliMADE(1, [4])
    logit = est.made(torch.zeros(1, 1))[0, 0]
    lp = est.log_prob(torch.tensor([[1.0], [0.0]]))
    expected = torch.stack([torch.sigmoid(logit).log(), torch.sigmoid(-logit).log()])
    torch.testing.assert_close(lp, expected)


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 5),
    width=st.integers(1, 12),
    layers=st.integers(1, 2),
    num_masks=st.integers(1, 3),
    context_dim=st.integers(0, 2),
    skip=st.booleans(),
    random_order=st.booleans(),
    random_degrees=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_normalization_over_random_configurations(
    d, width, layers, num_masks, context_dim, skip, random_order, random_degrees, seed
):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # Narrow layers warn about restricted conditionals; those must still normalize.
        warnings.simplefilter("ignore", UserWarning)
        est = BernoulliMADE(
            d,
            [width] * layers,
            context_dim=context_dim,
            skip_connections=skip,
            num_masks=num_masks,
            permutation="random" if random_order else None,
            hidden_degrees="random" if random_degrees else "equal",
            seed=seed,
        )
    x = all_binary(d)
    context = torch.randn(context_dim) if context_dim else None
    with torch.no_grad():
        for _ in range(num_masks):
            total = est.log_prob(x, context).logsumexp(0).exp()
            assert math.isclose(float(total), 1.0, rel_tol=tol(1e-9))
            est.made.next_mask()
        total = est.ensemble_log_prob(x, context).logsumexp(0).exp()
        assert math.isclose(float(total), 1.0, rel_tol=tol(1e-9))
