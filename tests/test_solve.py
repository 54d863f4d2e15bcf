"""The fast solver against the naive D-pass reference, over every MADE option."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import tol

from madeflow import MADE
from madeflow.solve import autoregressive_solve, naive_autoregressive_solve
from madeflow.solve.engine import fast_autoregressive_solve


def affine_step(params, noise):
    """MAF sampling step x = noise * exp(scale) + shift; reduces (p, 1) params by a sum."""
    if isinstance(params, tuple):
        first, last = params[0], params[-1]
        if first.dim() > noise.dim():
            first, last = first.sum(-2), last.sum(-2)
        return noise * torch.exp(torch.tanh(last)) + first
    if params.dim() > noise.dim():
        params = params.sum(-2)
    return noise + params


def make(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # narrow layers warn about restricted conditionals
        made = MADE(seed=3, **kwargs)
    if made.num_masks > 1:
        made.next_mask()
    return made


CONFIGS = [
    dict(input_dim=1, hidden_dims=[4]),
    dict(input_dim=2, hidden_dims=[5, 5]),
    dict(input_dim=5, hidden_dims=[16, 16]),
    dict(input_dim=5, hidden_dims=[16, 16], permutation="random"),
    dict(input_dim=4, hidden_dims=[9], permutation=[2, 0, 3, 1]),
    dict(input_dim=6, hidden_dims=[13, 7], hidden_degrees="random", permutation="random"),
    dict(input_dim=7, hidden_dims=[3, 4], permutation="random"),  # widths below D
    dict(input_dim=20, hidden_dims=[6, 11], permutation="random"),  # widths below D
    dict(input_dim=5, hidden_dims=[12, 12], skip_connections=True, permutation="random"),
    dict(input_dim=5, hidden_dims=[12, 12, 12], residual=True, hidden_degrees="random"),
    dict(input_dim=4, hidden_dims=[10], context_dim=3),
    dict(input_dim=1, hidden_dims=[4], context_dim=2, skip_connections=True),
    dict(input_dim=6, hidden_dims=[14, 14], context_dim=2, residual=True, skip_connections=True),
    dict(input_dim=6, hidden_dims=[14, 9], num_masks=3, permutation="random"),
    dict(
        input_dim=6,
        hidden_dims=[14, 14],
        num_masks=4,
        hidden_degrees="random",
        permutation="random",
        residual=True,
        context_dim=2,
    ),
    dict(input_dim=3, hidden_dims=[8], param_dims=(1,)),
    dict(input_dim=3, hidden_dims=[8], param_dims=(3,)),
    dict(input_dim=4, hidden_dims=[8], param_dims=(3, 3, 3), permutation="random"),
    dict(input_dim=4, hidden_dims=[8], param_dims=(8, 8, 7, 8), skip_connections=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_engine_matches_naive(config, batch):
    made = make(**config)
    noise = torch.randn(*batch, made.input_dim)
    context = None
    if made.context_dim:
        context = torch.randn(*batch, made.context_dim)
    with torch.no_grad():
        expected = naive_autoregressive_solve(made, affine_step, noise, context)
        got = autoregressive_solve(made, affine_step, noise, context)
    assert got.shape == expected.shape == noise.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=tol(1e-10))


@pytest.mark.parametrize("block", [1, 2, 3, 100])
def test_block_size_does_not_change_result(block):
    made = make(input_dim=7, hidden_dims=[15, 15], permutation="random", context_dim=1)
    noise = torch.randn(4, 7)
    context = torch.randn(4, 1)
    expected = naive_autoregressive_solve(made, affine_step, noise, context).detach()
    got = fast_autoregressive_solve(made, affine_step, noise, context, block=block)
    torch.testing.assert_close(got, expected, rtol=0, atol=tol(1e-10))


def test_float32():
    made = make(input_dim=6, hidden_dims=[20, 20], permutation="random").float()
    noise = torch.randn(5, 6, dtype=torch.float32)
    with torch.no_grad():
        expected = naive_autoregressive_solve(made, affine_step, noise)
        got = autoregressive_solve(made, affine_step, noise)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_context_broadcast():
    made = make(input_dim=3, hidden_dims=[9], context_dim=2)
    noise = torch.randn(4, 3)
    context = torch.randn(1, 2)
    with torch.no_grad():
        expected = naive_autoregressive_solve(made, affine_step, noise, context)
        got = autoregressive_solve(made, affine_step, noise, context)
    torch.testing.assert_close(got, expected, rtol=0, atol=tol(1e-10))


def test_solution_satisfies_recursion():
    made = make(input_dim=5, hidden_dims=[12, 12], permutation="random")
    noise = torch.randn(6, 5)
    with torch.no_grad():
        x = autoregressive_solve(made, affine_step, noise)
        assert torch.allclose(affine_step(made(x), noise), x, atol=tol(1e-12))


def test_cache_follows_weights_and_masks():
    made = make(input_dim=5, hidden_dims=[14, 14], num_masks=2, permutation="random")
    noise = torch.randn(3, 5)
    with torch.no_grad():
        for _ in range(2):
            made.next_mask()
            for p in made.parameters():
                p.add_(0.1 * torch.randn_like(p))  # in place: same storage, new version
            expected = naive_autoregressive_solve(made, affine_step, noise)
            got = autoregressive_solve(made, affine_step, noise)
            torch.testing.assert_close(got, expected, rtol=0, atol=tol(1e-10))


def test_gradients_flow_through_the_solve():
    made = make(input_dim=4, hidden_dims=[10, 10], context_dim=1)
    noise = torch.randn(3, 4, requires_grad=True)
    context = torch.randn(3, 1)
    x = autoregressive_solve(made, affine_step, noise, context)
    x.square().sum().backward()
    grads = [noise.grad, *(p.grad for p in made.parameters())]
    assert all(g is not None for g in grads)
    expected = naive_autoregressive_solve(made, affine_step, noise, context)
    # Gradients against the reference: test_solve_gradients.py.
    torch.testing.assert_close(x, expected, rtol=0, atol=tol(1e-12))
    assert noise.grad.abs().sum() > 0


def test_each_unit_computed_once(monkeypatch):
    made = make(input_dim=9, hidden_dims=[20, 20], permutation="random")
    rows = []
    original = torch.Tensor.addmm_

    def counting(self, a, b, **kwargs):
        rows.append(a.shape[0] * a.shape[1])
        return original(self, a, b, **kwargs)

    monkeypatch.setattr(torch.Tensor, "addmm_", counting)
    with torch.no_grad():
        fast_autoregressive_solve(made, affine_step, torch.randn(2, 9))
    # Every unmasked weight entry is multiplied exactly once over the whole solve.
    nonzero = sum(int(layer.mask.sum()) for layer in [*made.layers, made.output_layer])
    assert sum(rows) == nonzero


def test_subclass_with_own_forward_uses_naive():
    class Shifted(MADE):
        def forward(self, x, context=None):
            mean, log_scale = super().forward(x, context)
            return mean + 1.0, log_scale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = Shifted(4, [10], seed=0)
    noise = torch.randn(3, 4)
    with torch.no_grad():
        x = autoregressive_solve(made, affine_step, noise)
        torch.testing.assert_close(affine_step(made(x), noise), x, rtol=0, atol=tol(1e-12))


def test_nested_solve_gets_its_own_buffers():
    made = make(input_dim=4, hidden_dims=[10, 10], permutation="random")
    noise = torch.randn(3, 4)
    inner = []

    def step(params, eps):
        if not inner:  # a solve inside a solve must not clobber the outer one's workspace
            inner.append(autoregressive_solve(made, affine_step, noise))
        return affine_step(params, eps)

    with torch.no_grad():
        expected = naive_autoregressive_solve(made, affine_step, noise)
        got = autoregressive_solve(made, step, noise)
    torch.testing.assert_close(got, expected, rtol=0, atol=tol(1e-10))
    torch.testing.assert_close(inner[0], expected, rtol=0, atol=tol(1e-10))
