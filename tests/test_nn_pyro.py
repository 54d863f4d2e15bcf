"""The same checks on Pyro's AutoRegressiveNN classes and madeflow's drop-ins, side by side.

Any divergence from Pyro (signature, output structure, autoregressive structure, or how Pyro's
own transforms use the network) fails here for one column and not the other. The transforms built
on either network (Pyro's ``AffineAutoregressive``, madeflow's MAF and IAF layers, conditional or
not) are registry entries ``<layer>_on_<side>_arn``: every generic check of ``test_generic.py``
runs on both columns.
"""

from __future__ import annotations

import inspect

import pyro.distributions as dist
import pyro.nn
import pytest
import torch
from conftest import float64_init
from pyro.distributions.transforms import SplineAutoregressive

import madeflow

PAIRS = {
    "pyro": (pyro.nn.AutoRegressiveNN, pyro.nn.ConditionalAutoRegressiveNN),
    "madeflow": (madeflow.AutoRegressiveNN, madeflow.ConditionalAutoRegressiveNN),
}
SIDES = list(PAIRS)
D, C = 5, 3


def arn(side, *args, **kwargs):
    return PAIRS[side][0](*args, **kwargs)


def carn(side, *args, **kwargs):
    return PAIRS[side][1](*args, **kwargs)


@pytest.mark.parametrize("index", [0, 1])
def test_signatures_match_pyro_argument_for_argument(index):
    ours = inspect.signature(PAIRS["madeflow"][index].__init__).parameters
    theirs = inspect.signature(PAIRS["pyro"][index].__init__).parameters
    assert list(ours) == list(theirs)
    for name in theirs:
        mine, pyros = ours[name].default, theirs[name].default
        if name == "param_dims":
            assert list(mine) == list(pyros)
        elif name == "nonlinearity":  # Pyro shares one ReLU instance; we make one per network
            assert mine is None and isinstance(pyros, torch.nn.ReLU)
        else:
            assert mine == pyros or (mine is pyros), name


PARAM_DIMS = [[1], [1, 1], [3], [1, 5, 3], [2, 2]]


def structure(out):
    if isinstance(out, torch.Tensor):
        return ("tensor", tuple(out.shape))
    return (type(out).__name__, tuple(tuple(o.shape) for o in out))


@pytest.mark.parametrize("param_dims", PARAM_DIMS, ids=str)
@pytest.mark.parametrize("batch", [(), (4,), (2, 3)], ids=str)
def test_output_structure_is_pyros(param_dims, batch):
    x, ctx = torch.randn(*batch, D), torch.randn(*batch, C)
    got = {
        side: (
            structure(arn(side, D, [16], param_dims=param_dims)(x)),
            structure(carn(side, D, C, [16], param_dims=param_dims)(x, context=ctx)),
        )
        for side in SIDES
    }
    assert got["madeflow"] == got["pyro"]


@pytest.mark.parametrize("side", SIDES)
def test_positional_arguments_mean_what_pyro_says(side):
    perm = torch.tensor([3, 1, 4, 0, 2])
    net = arn(side, D, [16], [1, 1], perm, True, torch.nn.Tanh())
    assert torch.equal(net.get_permutation(), perm)
    assert net.skip_layer is not None
    assert isinstance(net.f, torch.nn.Tanh)
    cnet = carn(side, D, C, [16], [1], perm)
    assert cnet.context_dim == C and torch.equal(cnet.get_permutation(), perm)


@pytest.mark.parametrize("side", SIDES)
def test_default_ordering_is_random_and_reproducible(side):
    perms = [arn(side, 8, [24]).get_permutation() for _ in range(4)]
    assert any(not torch.equal(p, torch.arange(8)) for p in perms)
    for p in perms:
        assert sorted(p.tolist()) == list(range(8))
    torch.manual_seed(7)
    first = arn(side, 8, [24]).get_permutation()
    torch.manual_seed(7)
    assert torch.equal(arn(side, 8, [24]).get_permutation(), first)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("conditional", [False, True])
def test_autoregressive_in_the_networks_order(side, conditional):
    with float64_init():  # whether a ReLU path is dead at the probe point depends on the draw
        net = carn(side, D, C, [20, 20]) if conditional else arn(side, D, [20, 20])
    net.to(torch.get_default_dtype())
    ctx = torch.randn(C)

    def mean(v):
        return (net(v, ctx) if conditional else net(v))[0]

    jac = torch.autograd.functional.jacobian(mean, torch.randn(D))
    order = net.get_permutation()
    assert torch.all(jac[order][:, order].triu() == 0)
    assert jac.abs().sum() > 0
    if conditional:  # every output, the first in the ordering included, sees the context
        cj = torch.autograd.functional.jacobian(lambda c: net(torch.randn(D), c)[0], ctx)
        assert (cj.abs().sum(-1) > 0).all()


@pytest.mark.parametrize("side", SIDES)
def test_pyro_spline_autoregressive_accepts_the_network(side):
    bins = 4
    net = arn(side, D, [24], param_dims=[bins, bins, bins - 1, bins])
    t = SplineAutoregressive(D, net, count_bins=bins, bound=3.0)
    base = dist.Normal(torch.zeros(D), torch.ones(D)).to_event(1)
    flow = dist.TransformedDistribution(base, [t])
    x = flow.sample((6,))
    assert flow.log_prob(x).shape == (6,)
    torch.testing.assert_close(t._inverse(t._call(x)), x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("side", SIDES)
def test_conditional_order_is_input_context_hidden(side):
    # ConditionalAutoRegressiveNN(D, C, H): reading C as hidden widths would be silent in MADE.
    net = carn(side, D, C, [16])
    assert net.context_dim == C and list(net.hidden_dims) == [16]
    with pytest.raises((ValueError, TypeError)):
        carn(side, D, [16], [1, 1])
