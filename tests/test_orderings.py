"""Orderings for exact conditioning (madeflow.nn.orderings) and MADE with one ordering per mask."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from madeflow import MADE, check_autoregressive, covering_orderings
from madeflow.distributions import GaussianMADE
from madeflow.nn.orderings import as_subset, covering_masks


def brute_force_covers(perm, observed):
    m = int(observed.sum())
    return set(perm[:m].tolist()) == set(torch.nonzero(observed).flatten().tolist())


def test_covering_masks_agrees_with_the_definition_on_every_subset():
    perms = torch.stack([torch.randperm(5) for _ in range(6)])
    for bits in itertools.product([False, True], repeat=5):
        observed = torch.tensor(bits)
        want = [brute_force_covers(p, observed) for p in perms]
        assert covering_masks(perms, observed).tolist() == want
    # The empty set and the full set are covered by every ordering.
    assert covering_masks(perms, torch.zeros(5, dtype=torch.bool)).all()
    assert covering_masks(perms, torch.ones(5, dtype=torch.bool)).all()


def test_covering_orderings_put_each_subset_first():
    subsets = [[4, 1], torch.tensor([True, False, False, False, False]), (2, 3, 0)]
    perms = covering_orderings(5, subsets, per_subset=2, num_random=3, seed=0)
    assert perms.shape == (2 * 3 + 3, 5)
    for p in perms:
        assert sorted(p.tolist()) == list(range(5))
    for s in subsets:
        observed = as_subset(s, 5)
        assert covering_masks(perms, observed).sum() >= 2
    # Seeded: the same seed gives the same orderings, another seed others.
    assert torch.equal(perms, covering_orderings(5, subsets, 2, 3, seed=0))
    assert not torch.equal(perms, covering_orderings(5, subsets, 2, 3, seed=1))


def test_covering_orderings_from_patterns_merge_duplicates_and_keep_order_without_shuffle():
    patterns = torch.tensor([[True, True, False, False]] * 3 + [[False, False, True, True]])
    perms = covering_orderings(4, patterns, shuffle=False, seed=0)
    assert perms.tolist() == [[0, 1, 2, 3], [2, 3, 0, 1]]  # first occurrences, in order


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: covering_orderings(3, []), "at least one subset"),
        (lambda: covering_orderings(3, [[0, 3]]), r"lie in \[0, 2\]"),
        (lambda: covering_orderings(3, [[0, 0]]), "repeat"),
        (lambda: covering_orderings(3, [[0.5]]), "must be integers"),
        (lambda: covering_orderings(3, torch.ones(2, 3)), "must be boolean"),
        (lambda: covering_orderings(3, [torch.ones(4, dtype=torch.bool)]), r"shape \(3,\)"),
        (lambda: covering_orderings(3, torch.ones(2, 4, dtype=torch.bool)), r"shape \(N, 3\)"),
        (lambda: covering_orderings(3, [[0]], per_subset=0), "per_subset must be"),
    ],
)
def test_covering_orderings_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_made_takes_one_ordering_per_mask():
    perms = covering_orderings(5, [[1, 3], [0]], num_random=1, seed=3)
    made = MADE(5, [20, 20], permutation=perms, hidden_degrees="random")
    assert made.num_masks == 3
    assert torch.equal(made.permutations, perms)
    for k in range(3):
        made.set_mask(k)
        assert made.get_permutation().tolist() == perms[k].tolist()
        check_autoregressive(made, 5, permutation=perms[k])
    # A nested list works as well, and so does an explicit, matching num_masks.
    assert MADE(3, [8], permutation=[[0, 1, 2], [2, 1, 0]], num_masks=2).num_masks == 2


def test_existing_permutation_forms_still_work():
    assert MADE(3, [8]).permutations.tolist() == [[0, 1, 2]]
    assert MADE(3, [8], num_masks=2).permutations.tolist() == [[0, 1, 2]] * 2
    assert MADE(3, [8], permutation=[2, 0, 1], num_masks=2).permutations.tolist() == [[2, 0, 1]] * 2
    # A single row is a single ordering, shared by every mask as before.
    one_row = MADE(3, [8], permutation=torch.tensor([[2, 0, 1]]), num_masks=3)
    assert one_row.permutations.tolist() == [[2, 0, 1]] * 3
    assert MADE(3, [8], permutation="random", num_masks=4, seed=0).num_masks == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(permutation=[[0, 1, 2], [2, 1, 0]], num_masks=3), "holds 2 orderings .* num_masks=3"),
        (dict(permutation=[[0, 1, 2], [2, 2, 0]]), r"repeats \[2\]"),
        (dict(permutation=[[0, 1], [1, 0]]), "input_dim=3 entries, got 2"),
        (dict(num_masks=0), "num_masks must be an integer >= 1"),
    ],
)
def test_made_ordering_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MADE(3, [8], **kwargs)


def test_state_dict_round_trip_is_exact():
    perms = covering_orderings(4, [[3], [1, 2]], per_subset=2, seed=5)
    est = GaussianMADE(4, [16], permutation=perms, hidden_degrees="random", seed=1)
    est.made.set_mask(2)
    buffer = io.BytesIO()
    torch.save(est.state_dict(), buffer)
    buffer.seek(0)
    # Another model of the same shape (other seed, other orderings) becomes the same model.
    other = GaussianMADE(4, [16], num_masks=4, permutation="random", hidden_degrees="random")
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other.made.permutations, perms)
    assert int(other.made.mask_index) == 2
    x = torch.randn(6, 4)
    assert torch.equal(other.ensemble_log_prob(x), est.ensemble_log_prob(x))
    observed = torch.tensor([False, True, True, False])
    assert torch.equal(other.marginal_log_prob(x, observed), est.marginal_log_prob(x, observed))
