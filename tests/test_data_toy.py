import pytest
import torch

from madeflow.data.toy import TOY_DATASETS, toy_data


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_shape_dtype_finite_and_seeded(name):
    state = torch.get_rng_state()
    x = toy_data(name, 500, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert x.shape == (500, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, toy_data(name, 500, seed=3))
    assert not torch.equal(x, toy_data(name, 500, seed=4))
    assert 0.3 < x.std(0).min() and x.abs().max() < 20  # spread out, on a sensible scale
    assert toy_data(name, 10, dtype=torch.float64).dtype == torch.float64


def test_shapes_are_not_gaussian():
    # Each density is structured: e.g. rings has almost no mass at the origin.
    rings = toy_data("rings", 4000)
    assert (rings.norm(dim=1) < 0.5).float().mean() < 0.01
    moons = toy_data("moons", 4000)
    assert moons.mean(0).abs().max() < 0.3
    eight = toy_data("8gaussians", 4000)
    assert (eight.norm(dim=1) - 2).abs().median() < 0.3


def test_aliases_and_errors():
    assert torch.equal(toy_data("two_moons", 20), toy_data("moons", 20))
    with pytest.raises(ValueError, match="unknown toy dataset"):
        toy_data("banana", 10)
    with pytest.raises(ValueError, match="n must be"):
        toy_data("moons", 0)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_independent_of_default_dtype(name):
    a = toy_data(name, 50, seed=1, dtype=torch.float64)  # the suite's default is float64
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        b = toy_data(name, 50, seed=1, dtype=torch.float64)
    finally:
        torch.set_default_dtype(old)
    assert torch.equal(a, b)
