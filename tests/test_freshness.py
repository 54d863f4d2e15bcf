"""No cache goes stale: every way of changing weights, masks or mask index is seen by the next
sample or inverse, and repeated scoring of the same input builds a fresh graph each time."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from conftest import tol

from madeflow import MADE
from madeflow.solve import naive_autoregressive_solve
from madeflow.transforms import IAFTransform, MAFTransform, PermuteTransform

WIDE = 512


def _data_in_place(module):
    for p in module.parameters():
        p.data.mul_(0.5).add_(0.1)  # EMA / Polyak style: invisible to version counters


def _copy(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)


def _load_state_dict(module):
    other = {
        k: torch.randn_like(v) * 0.3 if v.is_floating_point() else v
        for k, v in module.state_dict().items()
    }
    module.load_state_dict(other)


def _optimizer_step(module):
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    for p in module.parameters():
        p.grad = torch.randn_like(p)
    opt.step()


def _assign_data(module):
    for p in module.parameters():
        p.data = torch.randn_like(p) * 0.3  # new storage under the same Parameter


def _to_other_dtype_and_back(module):
    dtype = torch.get_default_dtype()
    module.to(torch.float32 if dtype == torch.float64 else torch.float64)
    _data_in_place(module)
    module.to(dtype)


WEIGHT_ROUTES = [
    _data_in_place,
    _copy,
    _load_state_dict,
    _optimizer_step,
    _assign_data,
    _to_other_dtype_and_back,
]


def _next_mask(made):
    made.next_mask()


def _set_mask(made):
    made.set_mask(2)


def _load_mask_index(made):
    state = made.state_dict()
    state["mask_index"] = torch.tensor(1)
    made.load_state_dict(state)


MASK_ROUTES = [_next_mask, _set_mask, _load_mask_index]


def _made(width, **kw):
    return MADE(5, [width, width], permutation="random", seed=1, **kw)


def _engine_matches_naive(t, u):
    with torch.no_grad():
        got = t(u)  # the engine
        want = naive_autoregressive_solve(t.nn, t._forward_step, u)
    torch.testing.assert_close(got, want, rtol=tol(1e-9), atol=tol(1e-10))


@pytest.mark.parametrize("width", [16, WIDE])
@pytest.mark.parametrize("route", WEIGHT_ROUTES, ids=lambda f: f.__name__)
def test_maf_sample_sees_every_weight_change(route, width):
    t = MAFTransform(_made(width))
    u = torch.randn(4, 5)
    _engine_matches_naive(t, u)  # warms every cache
    route(t)
    _engine_matches_naive(t, u)


@pytest.mark.parametrize("route", MASK_ROUTES, ids=lambda f: f.__name__)
def test_maf_sample_and_forward_see_every_mask_change(route):
    made = _made(WIDE, num_masks=3)
    t = MAFTransform(made)
    u = torch.randn(4, 5)
    _engine_matches_naive(t, u)
    x = torch.randn(3, 5)
    made(x)
    route(made)
    _engine_matches_naive(t, u)
    got = made(x)
    for layer in [*made.layers, made.output_layer]:
        layer.grouped = False
    for g, w in zip(got, made(x)):
        torch.testing.assert_close(g, w, rtol=tol(1e-9), atol=tol(1e-12))


def test_hand_edited_mask_is_solved_exactly():
    made = _made(16)
    t = MAFTransform(made)
    u = torch.randn(4, 5)
    _engine_matches_naive(t, u)
    made.layers[1].mask[:, :3] = False  # sparser than the degrees say: still autoregressive
    _engine_matches_naive(t, u)


@pytest.mark.cuda
def test_maf_sample_follows_device_moves():
    with torch.device("cpu"):  # whatever the suite's default device
        t = MAFTransform(_made(WIDE))
        u = torch.randn(4, 5)
        _engine_matches_naive(t, u)
    t.to("cuda")
    with torch.device("cuda"):
        _engine_matches_naive(t, u.cuda())
    t.to("cpu")
    with torch.device("cpu"):
        _data_in_place(t)
        _engine_matches_naive(t, u)


def _iaf_flow(width):
    t = IAFTransform(_made(width))
    base = dist.Normal(torch.zeros(5), torch.ones(5)).to_event(1)
    return t, dist.TransformedDistribution(base, [t])


@pytest.mark.parametrize("route", WEIGHT_ROUTES, ids=lambda f: f.__name__)
def test_iaf_scores_its_own_sample_with_the_current_weights(route):
    t, q = _iaf_flow(16)
    x = q.rsample((6,))
    route(t)
    got = q.log_prob(x)  # x is the layer's remembered sample, but the weights changed
    want = q.log_prob(x.clone())  # an outside point: solved
    torch.testing.assert_close(got, want, rtol=tol(1e-9), atol=tol(1e-9))


def test_iaf_shortcut_is_exact_and_skips_the_solve(monkeypatch):
    import madeflow.transforms.affine as affine

    t, q = _iaf_flow(16)
    calls = []
    real = affine._solve
    monkeypatch.setattr(affine, "_solve", lambda *a: calls.append(1) or real(*a))
    x = q.rsample((6,))
    lp = q.log_prob(x)
    assert not calls
    torch.testing.assert_close(lp, q.log_prob(x.clone()), rtol=tol(1e-9), atol=tol(1e-9))
    assert len(calls) == 1


@pytest.mark.parametrize("layer", ["iaf", "maf"])
def test_repeated_log_prob_and_backward_on_the_same_input(layer):
    cls = IAFTransform if layer == "iaf" else MAFTransform
    t = cls(_made(16))
    base = dist.Normal(torch.zeros(5), torch.ones(5)).to_event(1)
    q = dist.TransformedDistribution(base, [t])
    x = torch.randn(4, 5)
    grads = []
    for _ in range(2):  # no parameter update in between
        t.zero_grad()
        q.log_prob(x).sum().backward()
        grads.append([p.grad.clone() for p in t.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_permute_inverse_follows_a_loaded_permutation():
    t = PermuteTransform([2, 0, 1, 3])
    u = torch.randn(3, 4)
    x = t(u)
    t.load_state_dict({"permutation": torch.tensor([3, 2, 1, 0])})
    torch.testing.assert_close(t.inv(x), x.flip(-1))
    y = t(u)
    assert t.inv(y) is u  # its own output still maps back to the very input


def test_autoiaf_posterior_scores_its_own_sample_after_loc_changes():
    import pyro

    from madeflow import AutoIAF

    def model():
        pyro.sample("a", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    pyro.clear_param_store()
    guide = AutoIAF(model, hidden_dim=[16])
    guide()
    q = guide.get_posterior()
    z = q.rsample((4,))
    guide.loc.data.add_(0.5)  # invisible to version counters, and to torch's affine cache
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z.clone()), rtol=tol(1e-9), atol=tol(1e-9))
    pyro.clear_param_store()
