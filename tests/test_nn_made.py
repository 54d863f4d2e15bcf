import warnings

import pyro.distributions as dist
import pytest
import torch
from conftest import float64_init, tol
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro.distributions.transforms import (
    AffineAutoregressive,
    ConditionalAffineAutoregressive,
    SplineAutoregressive,
)
from pyro.nn import AutoRegressiveNN

from madeflow import MADE, check_autoregressive

CONFIGS = [
    dict(),
    dict(permutation="random"),
    dict(permutation=[2, 0, 4, 1, 3]),
    dict(hidden_degrees="random", permutation="random"),
    dict(skip_connections=True),
    dict(residual=True),
    dict(context_dim=3),
    dict(context_dim=2, residual=True, skip_connections=True, hidden_degrees="random"),
    dict(num_masks=3, permutation="random", hidden_degrees="random"),
    dict(activation=torch.nn.Tanh()),
    dict(activation=torch.tanh),
]


def _context(made, batch=()):
    return torch.randn(*batch, made.context_dim) if made.context_dim else None


@pytest.mark.parametrize("kwargs", CONFIGS)
@pytest.mark.parametrize("hidden", [[16], [20, 20]])
def test_autoregressive_and_fully_connected(kwargs, hidden):
    with warnings.catch_warnings(), float64_init():  # dead ReLU units depend on the draw
        warnings.simplefilter("ignore")  # random degrees may leave a level empty; checked below
        made = MADE(5, hidden, **kwargs)
    made.to(torch.get_default_dtype())
    for _ in range(made.num_masks):
        ctx = _context(made)
        dep = check_autoregressive(made, 5, context=ctx, num_points=20)
        deg = made.input_degree.cpu()
        full = deg.unsqueeze(1) > deg.unsqueeze(0)
        blind = made.blind_outputs().cpu()
        # Wide enough: every output that is not reported blind sees all of its predecessors.
        assert torch.equal(dep[~blind], full[~blind])
        assert not torch.equal(dep[blind], full[blind]) or not blind.any()
        made.next_mask()


def test_every_output_sees_the_context():
    made = MADE(4, [12, 12], context_dim=2, permutation="random", activation=torch.nn.Tanh)
    x = torch.randn(4)

    def f(c):
        return torch.stack(made(x, c))

    for _ in range(3):
        jac = torch.autograd.functional.jacobian(f, torch.randn(2))
        # (P, D, C): each output, the first in the ordering included, depends on the context.
        assert bool((jac.abs().sum((0, 2)) > 0).all())


def test_narrow_widths_warn_and_stay_autoregressive():
    with pytest.warns(UserWarning, match="cannot see all of their predecessors"):
        made = MADE(10, [3, 3])
    dep = check_autoregressive(made, 10)
    deg = made.input_degree
    assert not torch.equal(dep, deg.unsqueeze(1) > deg.unsqueeze(0))


@pytest.mark.parametrize("kwargs", [dict(), dict(context_dim=2), dict(skip_connections=True)])
def test_wide_enough_does_not_warn(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MADE(6, [6], **kwargs)
        MADE(1, [4], **kwargs)


def test_skip_connections_restore_full_view_for_narrow_widths():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = MADE(10, [2], skip_connections=True)
    deg = made.input_degree
    assert torch.equal(check_autoregressive(made, 10), deg.unsqueeze(1) > deg.unsqueeze(0))


@pytest.mark.parametrize("param_dims", [(1,), (1, 1), (3,), (1, 1, 1), (2, 1, 3), (8, 8, 7, 8)])
@pytest.mark.parametrize("batch", [(), (3,), (3, 4)])
def test_output_structure_matches_pyro(param_dims, batch):
    ours = MADE(5, [20], param_dims=param_dims)
    theirs = AutoRegressiveNN(5, [20], param_dims=list(param_dims))
    x = torch.randn(*batch, 5)
    a, b = ours(x), theirs(x)
    assert type(a) is type(b)
    if isinstance(a, tuple):
        assert [t.shape for t in a] == [t.shape for t in b]
    else:
        assert a.shape == b.shape


def test_context_broadcasts_like_pyro():
    made = MADE(3, [10], context_dim=2)
    out = made(torch.randn(4, 5, 3), torch.randn(2))
    assert out[0].shape == (4, 5, 3)
    out = made(torch.randn(5, 3), torch.randn(4, 1, 2))
    assert out[0].shape == (4, 5, 3)


def test_first_output_ignores_x_but_depends_on_bias_only():
    made = MADE(3, [8])
    a, b = made(torch.randn(3)), made(torch.randn(3))
    first = int(made.permutation[0])
    assert torch.equal(a[0][first], b[0][first])
    assert not torch.equal(a[0], b[0])


def test_units_sorted_by_degree_for_one_mask():
    made = MADE(7, [30, 30], hidden_degrees="random", permutation="random")
    for deg in made.hidden_degrees():
        assert bool((deg[1:] >= deg[:-1]).all())
    # Random degrees follow the paper: each layer's lowest degree is the floor of the next one.
    low = made.hidden_degrees()[0].min()
    assert bool((made.hidden_degrees()[1] >= low).all())


def test_mask_schedule_is_seeded_cycles_and_differs():
    kw = dict(num_masks=4, permutation="random", hidden_degrees="random", seed=11)
    a, b = MADE(6, [24], **kw), MADE(6, [24], **kw)
    seen = []
    for k in range(4):
        assert int(a.mask_index) == k
        assert torch.equal(a.permutation, b.permutation)
        assert torch.equal(a.layers[0].mask, b.layers[0].mask)
        seen.append(a.permutation.tolist())
        assert a.next_mask() == (k + 1) % 4
        b.next_mask()
    assert len({tuple(p) for p in seen}) > 1
    assert a.permutation.tolist() == seen[0]  # cycled back


def test_connectivity_agnostic_masks_vary_with_fixed_order():
    made = MADE(6, [24], num_masks=3, seed=0)
    masks = []
    for _ in range(3):
        masks.append(made.layers[0].mask.clone())
        made.next_mask()
    assert not torch.equal(masks[0], masks[1])
    assert torch.equal(made.permutation, torch.arange(6))


def test_set_mask_bounds():
    made = MADE(3, [8], num_masks=2)
    made.set_mask(1)
    assert int(made.mask_index) == 1
    with pytest.raises(IndexError):
        made.set_mask(2)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_state_dict_round_trip_any_seed(kwargs):
    made = MADE(5, [16, 16], param_dims=(1, 2), seed=1, **kwargs)
    made.next_mask()
    fresh = MADE(5, [16, 16], param_dims=(1, 2), seed=99, **kwargs)
    fresh.load_state_dict(made.state_dict())
    x, ctx = torch.randn(7, 5), _context(made, (7,))
    for a, b in zip(made(x, ctx), fresh(x, ctx)):
        assert torch.equal(a, b)
    assert torch.equal(fresh.permutation, made.permutation)
    assert int(fresh.mask_index) == int(made.mask_index)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    made = MADE(4, [10], context_dim=1).to(dtype)
    m, s = made(torch.randn(2, 4, dtype=dtype), torch.randn(2, 1, dtype=dtype))
    assert m.dtype == dtype and s.device.type == torch.get_default_device().type


def test_pyro_affine_autoregressive_drop_in():
    t = AffineAutoregressive(MADE(5, [40], permutation="random"))
    x = torch.randn(6, 5)
    y = t(x)
    assert torch.allclose(t._inverse(y.clone()), x, atol=tol(1e-10))
    flow = dist.TransformedDistribution(dist.Normal(torch.zeros(5), 1.0).to_event(1), [t])
    assert bool(torch.isfinite(flow.log_prob(y.detach())).all())


def test_pyro_spline_autoregressive_drop_in():
    b = 6
    made = MADE(4, [30], param_dims=[b, b, b - 1, b])
    t = SplineAutoregressive(4, made, count_bins=b)
    x = torch.randn(5, 4)
    y = t(x)
    assert torch.allclose(t._inverse(y.clone()), x, atol=tol(1e-8))
    assert t.log_abs_det_jacobian(x, y).shape == (5,)


def test_pyro_conditional_drop_in():
    t = ConditionalAffineAutoregressive(MADE(3, [20], context_dim=2))
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    d = dist.ConditionalTransformedDistribution(base, [t]).condition(torch.randn(2))
    y = d.sample((4,))
    assert y.shape == (4, 3)
    assert bool(torch.isfinite(d.log_prob(y)).all())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden_dims=[]), "hidden_dims must not be empty"),
        (dict(hidden_dims=[8, 0]), "hidden_dims must be an integer >= 1"),
        (dict(input_dim=0), "input_dim"),
        (dict(param_dims=()), "param_dims"),
        (dict(permutation=[0, 0, 1]), "not a permutation"),
        (dict(permutation="reverse"), "permutation must be None, 'random'"),
        (dict(hidden_degrees="sorted"), "hidden_degrees"),
        (dict(residual=True, hidden_dims=[8, 9]), "equal hidden widths"),
        (dict(num_masks=0), "num_masks"),
    ],
)
def test_bad_construction(kwargs, match):
    args = dict(input_dim=3, hidden_dims=[8]) | kwargs
    with pytest.raises(ValueError, match=match):
        MADE(**args)


def test_bad_forward_inputs():
    made = MADE(3, [8])
    with pytest.raises(ValueError, match="last dimension input_dim=3"):
        made(torch.randn(2, 4))
    with pytest.raises(ValueError, match="context_dim=0 but a context"):
        made(torch.randn(2, 3), torch.randn(2, 1))
    cond = MADE(3, [8], context_dim=2)
    with pytest.raises(ValueError, match="pass context"):
        cond(torch.randn(2, 3))
    with pytest.raises(ValueError, match="context_dim=2"):
        cond(torch.randn(2, 3), torch.randn(2, 5))


def _structural_dependency(made):
    """Which outputs can reach which inputs (and the context) through the masks."""
    reach = made.layers[0].mask.double()
    for layer in made.layers[1:]:
        step = layer.mask.double()
        if made.residual:
            step = step + torch.eye(step.shape[0], dtype=step.dtype)
        reach = (step @ reach).clamp(max=1)
    out_mask = made.output_layer.mask[: made.input_dim].double()
    dep = (out_mask @ reach) > 0
    sees_context = out_mask.sum(1) > 0
    if made.skip_layer is not None:
        dep |= made.skip_layer.mask[: made.input_dim]
    return dep, sees_context


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 6),
    widths=st.lists(st.integers(1, 10), min_size=1, max_size=3),
    context_dim=st.integers(0, 2),
    skip=st.booleans(),
    degrees=st.sampled_from(["equal", "random"]),
    residual=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_hypothesis_autoregressive_and_warning_is_truthful(
    d, widths, context_dim, skip, degrees, residual, seed
):
    if residual:
        widths = [widths[0]] * len(widths)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = MADE(
            d,
            widths,
            context_dim=context_dim,
            skip_connections=skip,
            hidden_degrees=degrees,
            residual=residual,
            permutation="random",
            seed=seed,
        )
    warned = any("cannot see" in str(w.message) for w in caught)
    ctx = torch.randn(context_dim) if context_dim else None
    probed = check_autoregressive(made, d, context=ctx)  # raises if any output looks ahead
    structural, sees_context = _structural_dependency(made)
    assert not bool((probed & ~structural).any())
    deg = made.input_degree
    full = torch.equal(structural, deg.unsqueeze(1) > deg.unsqueeze(0))
    if context_dim:
        full = full and bool(sees_context.all())
    assert warned == (not full)
