import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from madeflow.nn.masks import (
    as_permutation,
    connectivity,
    hidden_degrees,
    input_degrees,
    mask_from_degrees,
)


def test_golden_masks_d3_h2():
    # D=3, one hidden layer of 2 units, identity order: degrees 1, 2.
    inp = input_degrees(torch.arange(3))
    hid = hidden_degrees(2, 1, 2, "equal")
    assert hid.tolist() == [1, 2]
    assert mask_from_degrees(hid, inp).int().tolist() == [[1, 0, 0], [1, 1, 0]]
    assert mask_from_degrees(inp, hid, strict=True).int().tolist() == [[0, 0], [1, 0], [1, 1]]


def test_golden_masks_reversed_order():
    inp = input_degrees(torch.tensor([2, 1, 0]))
    assert inp.tolist() == [3, 2, 1]
    hid = torch.tensor([1, 2])
    assert mask_from_degrees(hid, inp).int().tolist() == [[0, 0, 1], [0, 1, 1]]
    assert mask_from_degrees(inp, hid, strict=True).int().tolist() == [[1, 1], [1, 0], [0, 0]]


def test_input_degrees_inverts_permutation():
    perm = torch.randperm(9)
    deg = input_degrees(perm)
    assert deg[perm].tolist() == list(range(1, 10))


@pytest.mark.parametrize("width", [1, 3, 7, 8, 20])
def test_equal_degrees_sorted_spread_and_in_range(width):
    deg = hidden_degrees(width, 1, 7, "equal")
    assert deg.shape == (width,)
    assert bool((deg[1:] >= deg[:-1]).all())
    assert int(deg.min()) >= 1 and int(deg.max()) <= 7
    counts = torch.bincount(deg - 1, minlength=7)
    if width >= 7:
        assert int(counts.min()) >= 1  # every level present
    assert int(counts.max()) - int(counts[counts > 0].min()) <= 1  # evenly spread


def test_random_degrees_in_range_and_seeded():
    device = torch.get_default_device()  # the generator must live where the draw happens
    g1, g2 = torch.Generator(device).manual_seed(3), torch.Generator(device).manual_seed(3)
    a = hidden_degrees(500, 2, 6, "random", g1)
    b = hidden_degrees(500, 2, 6, "random", g2)
    assert torch.equal(a, b)
    assert set(a.tolist()) == {2, 3, 4, 5, 6}


def test_unknown_degree_mode():
    with pytest.raises(ValueError, match="equal' or 'random"):
        hidden_degrees(4, 1, 3, "uniform")


@pytest.mark.parametrize(
    "perm, match",
    [
        ([0, 1], "input_dim=3 entries"),
        ([0, 1, 1], "repeats \\[1\\]"),
        ([0, 1, 3], "lie in \\[0, 2\\]"),
        ([-1, 0, 1], "lie in"),
        ([0.0, 1.0, 2.0], "integers"),
    ],
)
def test_as_permutation_rejects(perm, match):
    with pytest.raises(ValueError, match=match):
        as_permutation(perm, 3)


def _brute_force_reach(inp, layers, skip):
    """Reachability by boolean matrix products; reach = max input degree seen, -1 if none."""
    reach_mat = mask_from_degrees(layers[0], inp).double()
    below = layers[0]
    for deg in layers[1:]:
        reach_mat = (mask_from_degrees(deg, below).double() @ reach_mat).clamp(max=1)
        below = deg
    out = (mask_from_degrees(inp, below, strict=True).double() @ reach_mat).clamp(max=1)
    if skip:
        out = torch.maximum(out, mask_from_degrees(inp, inp, strict=True).double())
    seen = torch.where(out > 0, inp.double().expand_as(out), torch.zeros_like(out))
    reach = seen.max(1).values.long()
    sees_unit = mask_from_degrees(inp, below, strict=True).any(1) | (skip & (inp > 1))
    return torch.where(sees_unit, reach, torch.full_like(reach, -1))


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(1, 8),
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    skip=st.booleans(),
    low0=st.integers(0, 1),
    seed=st.integers(0, 10_000),
)
def test_connectivity_matches_brute_force(d, widths, skip, low0, seed):
    gen = torch.Generator(torch.get_default_device()).manual_seed(seed)
    inp = input_degrees(torch.randperm(d, generator=gen))
    layers, low = [], min(low0, d - 1)
    for w in widths:
        deg = hidden_degrees(w, low, d - 1, "random", gen)
        layers.append(deg)
        low = int(deg.min())
    got = connectivity(inp, layers, skip)
    want = _brute_force_reach(inp, layers, skip)
    # Units of degree 0 see no input: reach 0 and "sees no input" coincide in the brute force.
    assert torch.equal(got.clamp(min=0), want.clamp(min=0))
    assert torch.equal(got >= 0, (want >= 0) | (got == 0))
