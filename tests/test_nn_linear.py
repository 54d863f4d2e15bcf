"""MaskedLinear: the grouped (block-sparse) product against the dense masked one."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import tol

import madeflow.nn.grouped as grouped
from madeflow import MADE
from madeflow.nn.grouped import group_plan, grouped_masked_linear
from madeflow.nn.linear import MaskedLinear
from madeflow.nn.masks import mask_from_degrees


@pytest.fixture
def small_layers_grouped(monkeypatch):
    monkeypatch.setattr(grouped, "MIN_ELEMENTS", 0)


def prefix_mask(out_f, in_f, permutation=None, strict=False):
    in_deg = torch.arange(1, in_f + 1)
    if permutation is not None:
        in_deg = in_deg[permutation]
    out_deg = torch.randint(0 if strict else 1, in_f + 1, (out_f,))
    return mask_from_degrees(out_deg, in_deg, strict=strict)


def dense_and_grouped(mask, groups=None, bias=True, batch=(5,)):
    out_f, in_f = mask.shape
    weight = torch.randn(out_f, in_f, requires_grad=True)
    b = torch.randn(out_f, requires_grad=True) if bias else None
    x = torch.randn(*batch, in_f, requires_grad=True)
    plan = group_plan(mask, groups)
    assert plan is not None
    upstream = torch.randn(*batch, out_f)
    leaves = [t for t in (x, weight, b) if t is not None]
    y_dense = F.linear(x, weight * mask, b)
    g_dense = torch.autograd.grad((y_dense * upstream).sum(), leaves)
    y = grouped_masked_linear(x, weight, b, plan)
    g = torch.autograd.grad((y * upstream).sum(), leaves)
    return (y_dense, *g_dense), (y, *g)


@pytest.mark.parametrize("groups", [1, 2, 3, 8])
@pytest.mark.parametrize("permuted", [False, True])
@pytest.mark.parametrize("strict", [False, True])
def test_grouped_matches_dense(small_layers_grouped, groups, permuted, strict):
    permutation = torch.randperm(9) if permuted else None
    mask = prefix_mask(13, 9, permutation, strict)
    expected, got = dense_and_grouped(mask, groups)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=tol(1e-12))


@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
def test_grouped_batch_shapes_and_no_bias(small_layers_grouped, batch):
    mask = prefix_mask(10, 6, torch.randperm(6))
    expected, got = dense_and_grouped(mask, 3, bias=False, batch=batch)
    assert got[0].shape == (*batch, 10)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=tol(1e-12))


def test_non_prefix_mask_runs_dense(small_layers_grouped):
    mask = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)  # supports are not nested
    assert group_plan(mask) is None


def test_small_or_dense_layers_run_dense():
    assert group_plan(prefix_mask(16, 16)) is None  # too small to gain
    assert group_plan(prefix_mask(1024, 1024)) is not None
    assert group_plan(torch.ones(512, 512, dtype=torch.bool)) is None  # nothing to skip


def test_masked_linear_layer_uses_groups(small_layers_grouped):
    layer = MaskedLinear(300, 260)
    layer.set_mask(prefix_mask(260, 300, torch.randperm(300)))
    assert layer.group_plan() is not None
    x = torch.randn(4, 300, requires_grad=True)
    y = layer(x)
    y.square().sum().backward()
    grads = [x.grad, layer.weight.grad, layer.bias.grad]
    expected = F.linear(x, layer.masked_weight(), layer.bias)
    torch.testing.assert_close(y, expected, rtol=0, atol=tol(1e-12))
    x.grad = None
    layer.zero_grad()
    layer.grouped = False
    layer(x).square().sum().backward()
    for g, e in zip(grads, [x.grad, layer.weight.grad, layer.bias.grad]):
        torch.testing.assert_close(g, e, rtol=0, atol=tol(1e-12))
    assert (layer.weight.grad[~layer.mask] == 0).all()


def test_plan_follows_mask_changes(small_layers_grouped):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = MADE(6, [12, 12], num_masks=3, permutation="random", seed=0)
    x = torch.randn(5, 6)
    for _ in range(3):
        made.next_mask()
        got = made(x)
        for layer in [*made.layers, made.output_layer]:
            layer.grouped = False
        expected = made(x)
        for layer in [*made.layers, made.output_layer]:
            layer.grouped = True
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=0, atol=tol(1e-12))


def test_plan_follows_set_mask_even_at_a_reused_address():
    layer = MaskedLinear(600, 600).double()
    deg_a = torch.sort(torch.randint(1, 10, (600,))).values
    deg_b = torch.sort(torch.randint(1, 10, (600,))).values
    x = torch.randn(3, 600, dtype=torch.float64)
    for deg in (deg_a, deg_b, deg_a):
        mask = mask_from_degrees(deg, deg)
        layer.set_mask(mask)
        want = torch.nn.functional.linear(x, layer.weight * mask, layer.bias)
        assert torch.allclose(layer(x), want, atol=tol(1e-10))
        # Reuse the tensor in place: the plan must notice.
        layer.mask.copy_(mask_from_degrees(torch.full_like(deg, int(deg.max())), deg))
        want = torch.nn.functional.linear(x, layer.weight * layer.mask, layer.bias)
        assert torch.allclose(layer(x), want, atol=tol(1e-10))


def assert_grouped_exact(mask, groups):
    expected, got = dense_and_grouped(mask, groups, batch=(7,))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=tol(1e-12))
    return got


@pytest.mark.parametrize("groups", [4, 8])
def test_diagonal_blocks_of_differing_widths(small_layers_grouped, groups):
    # Skewed degrees: the groups' diagonal blocks (and their masked parts) differ in width.
    out_deg = torch.cat([torch.randint(1, 4, (20,)), torch.randint(4, 31, (28,))])
    out_deg = out_deg[torch.randperm(48)]
    mask = mask_from_degrees(out_deg, torch.randperm(30) + 1)
    plan = group_plan(mask, groups)
    widths = [c - s for (_, _, c), s in zip(plan.groups, plan.shared)]
    assert len(set(widths)) > 1
    sorted_mask = mask[plan.row_order][:, plan.col_order]
    for g, ((r0, r1, c), s, block) in enumerate(zip(plan.groups, plan.shared, plan.blocks)):
        assert s == (plan.groups[g - 1][2] if g else 0)
        assert sorted_mask[r0:r1, :s].all() and not sorted_mask[r0:r1, c:].any()
        assert torch.equal(block, ~sorted_mask[r0:r1, s:c])
    assert_grouped_exact(mask, groups)


def test_equal_rows_give_empty_diagonal_blocks(small_layers_grouped):
    mask = mask_from_degrees(torch.full((16,), 5), torch.arange(1, 9))
    plan = group_plan(mask, 4)
    assert [c - s for (_, _, c), s in zip(plan.groups, plan.shared)] == [5, 0, 0, 0]
    assert_grouped_exact(mask, 4)


def test_unseen_columns_get_zero_gradients(small_layers_grouped):
    # Strict mask: the input of the highest degree feeds no row; rows of degree 0 see nothing.
    mask = mask_from_degrees(
        torch.tensor([0, 3, 1, 5, 2, 0, 4, 5]), torch.arange(1, 7), strict=True
    )
    _, grad_x, grad_w, _ = assert_grouped_exact(mask, 3)
    assert (grad_x[:, 4:] == 0).all()
    assert (grad_w[~mask] == 0).all()


@pytest.mark.parametrize("groups", [4, 8])
def test_output_layer_row_gather_with_gradients(small_layers_grouped, monkeypatch, groups):
    monkeypatch.setattr(grouped, "DEFAULT_GROUPS", groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = MADE(7, [16, 16], param_dims=(2, 1), permutation="random", seed=1)
    assert made.output_layer.group_plan().row_order is not None  # rows are p * D + i
    x = torch.randn(5, 7, requires_grad=True)
    layers = [*made.layers, made.output_layer]
    results = []
    for use_groups in (True, False):
        for layer in layers:
            layer.grouped = use_groups
        out = made(x)
        loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in out)
        params = [x, *(p for layer in layers for p in (layer.weight, layer.bias))]
        results.append(torch.autograd.grad(loss, params))
    for g, e in zip(*results):
        torch.testing.assert_close(g, e, rtol=0, atol=tol(1e-12))


@pytest.mark.parametrize("strict", [False, True])
def test_grouped_product_is_differentiable_to_every_order(small_layers_grouped, strict):
    # Permuted rows and columns: the gathers into sorted order are part of what is checked.
    mask = prefix_mask(11, 7, torch.randperm(7), strict)
    plan = group_plan(mask, 3)
    assert plan.row_order is not None and plan.col_order is not None
    f64 = dict(dtype=torch.float64, requires_grad=True)  # gradcheck's finite differences need it
    x = torch.randn(4, 7, **f64)
    weight = torch.randn(11, 7, **f64)
    bias = torch.randn(11, **f64)

    def f(x, w, b):
        return grouped_masked_linear(x, w, b, plan)

    assert torch.autograd.gradcheck(f, (x, weight, bias))
    assert torch.autograd.gradgradcheck(f, (x, weight, bias))
    assert torch.autograd.gradcheck(
        f,
        (x, weight, bias),
        check_forward_ad=True,
        check_backward_ad=False,
        check_undefined_grad=False,
    )

    def gradient_norm(x, w, b):
        gx, gw = torch.autograd.grad(f(x, w, b).square().sum(), (x, w), create_graph=True)
        return gx.square().sum() + gw.square().sum()

    assert torch.autograd.gradgradcheck(gradient_norm, (x, weight, bias))  # third order


def test_dense_mask_factor_follows_the_mask_dtype_and_inference_mode():
    """The cached 0/1 factor of the dense path is never stale and never an inference tensor."""
    layer = MaskedLinear(6, 5)
    layer.grouped = False
    layer.set_mask(torch.rand(5, 6) > 0.5)
    x = torch.randn(3, 6)

    def expected():
        return F.linear(x.to(layer.weight.dtype), layer.weight * layer.mask, layer.bias)

    with torch.inference_mode():
        layer(x)  # must not leave an inference tensor behind
    out = layer(x)
    out.sum().backward()  # would raise on a cached inference tensor
    torch.testing.assert_close(out, expected())
    layer.mask[0] = ~layer.mask[0]  # an in-place edit bumps the version
    torch.testing.assert_close(layer(x), expected())
    layer.set_mask(torch.ones(5, 6, dtype=torch.bool))
    torch.testing.assert_close(layer(x), expected())
    layer.float()
    assert layer(x.float()).dtype == torch.float32
    torch.testing.assert_close(layer(x.float()), expected().float())
