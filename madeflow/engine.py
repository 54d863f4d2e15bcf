r"""One-pass-cost solver of a MADE's autoregressive recursion.

Solving :math:`x_d = g(\theta_d(x_{<d}), \varepsilon_d)` by running the whole MADE once per
dimension costs ``D`` network passes. But a hidden unit of degree ``k`` depends only on inputs of
degree ``<= k``, so it can be computed exactly once, as soon as those inputs are known. This module
computes every hidden unit and every output row once over the whole solve:

* Everything is laid out in *degree order*: inputs by their position in the ordering, hidden
  units sorted by degree (per mask; ``num_masks > 1`` is handled by the same gather), output rows
  grouped by the degree of the input they parametrize. Each degree is then a contiguous row range
  and each unit sees a prefix of the layer below.
* Stage ``s = 0 .. D-1`` computes the units of degree ``s`` of every layer, then the parameters of
  the input of degree ``s + 1`` and calls ``step`` on them. The bias and the context contribution
  are added once, up front.
* Stages are processed in blocks. At the start of a block, one matrix product per layer adds the
  contribution of every source unit already known to all targets of the block (an efficient GEMM);
  inside the block each stage only adds the few sources of the block itself. This keeps the total
  work at about half a network pass in GEMMs plus small per-stage products.

Buffers are stored transposed, ``(units, batch)``, so every range of units is a contiguous slice.
The plan (gathered weights, row ranges) is cached per MADE and rebuilt when a weight, buffer or
the mask changes; the buffers and all their views are kept with it and reused while the batch
shape stays the same (a nested or concurrent solve gets its own), so the loop only launches
kernels. The solve writes into buffers in place and is therefore not differentiable;
:func:`madeflow.inversion.autoregressive_solve` falls back to the naive solver when a gradient is
needed.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import torch

from madeflow.nn.made import MADE
from madeflow.nn.masks import mask_from_degrees

__all__ = ["block_size", "fast_autoregressive_solve"]

Params = Union[torch.Tensor, tuple[torch.Tensor, ...]]
Step = Callable[[Params, torch.Tensor], torch.Tensor]


class _Ordered:
    """A weight or bias in degree order, always equal to the live parameter.

    When no reordering is needed ``value`` is a view of the parameter itself, so every in-place
    change (an optimizer step, an edit through ``.data``) is seen by construction. Otherwise
    ``value`` is a buffer that :meth:`refresh` refills from the parameter at the start of every
    solve; the plan's views into it stay valid because the buffer is never reallocated.
    """

    def __init__(
        self, param: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None = None
    ) -> None:
        self.param, self.rows, self.cols = param, _unless_identity(rows), _unless_identity(cols)
        self.value = param.detach()
        if self.rows is not None or self.cols is not None:
            self.value = self._gather().contiguous()

    def _gather(self) -> torch.Tensor:
        value = self.param.detach()
        if self.rows is not None:
            value = value.index_select(0, self.rows)
        if self.cols is not None:
            value = value.index_select(1, self.cols)
        return value

    def refresh(self) -> None:
        """Copy the parameter's current values into the buffer (a no-op for a view)."""
        if self.rows is not None or self.cols is not None:
            self.value.copy_(self._gather())


def _unless_identity(index: torch.Tensor | None) -> torch.Tensor | None:
    if index is None or torch.equal(index, torch.arange(index.numel(), device=index.device)):
        return None
    return index


@dataclass
class _Map:
    """One masked linear map in degree order.

    ``weight.value`` is ``(targets, sources)``, rows and columns sorted by degree. At stage ``s``
    the targets ``rows[s]`` (a ``(start, stop)`` range) are due, and they may read the first
    ``seen[s]`` sources. Every entry a stage reads is one the mask keeps, so the raw weight is
    used: no masked copy is needed.
    """

    weight: _Ordered
    bias: _Ordered | None
    rows: list[tuple[int, int]]
    seen: list[int]


@dataclass
class _Plan:
    """Everything derived from the MADE's masks and parameter storage, cached between calls.

    Values are never cached: views alias the parameters and gathered copies are refilled by
    :meth:`refresh` at every solve, so the plan cannot hand back stale weights.
    """

    hidden: list[_Map]
    output: _Map
    skip: _Map | None
    context_weight: _Ordered | None  # (H0, C), rows in degree order
    permutation: list[int]  # permutation[s] is the input of degree s + 1
    permutation_index: torch.Tensor  # the same as a (D,) long tensor on the weights' device
    to_input_order: torch.Tensor  # (D,) long: column of the degree-ordered x for each input
    schedules: dict = field(default_factory=dict)  # block size -> _schedule's result
    workspace: Any = None  # the last call's _Workspace, reused when the batch shape matches
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ordered(self) -> list[_Ordered]:
        maps = [*self.hidden, self.output] + ([self.skip] if self.skip is not None else [])
        found = [t for m in maps for t in (m.weight, m.bias) if t is not None]
        return found + ([self.context_weight] if self.context_weight is not None else [])

    def refresh(self) -> None:
        """Bring every gathered copy up to date with the parameters."""
        for t in self.ordered():
            t.refresh()


def block_size(input_dim: int) -> int:
    """Stages per block: about ``sqrt(D)`` balances the GEMM count against the per-stage work.

    Args:
        input_dim: ``D``.

    Returns:
        A block size in ``[1, D]``.
    """
    return max(1, min(input_dim, round(math.sqrt(input_dim))))


def _ranges(sorted_degrees: torch.Tensor, stages: int) -> list[tuple[int, int]]:
    s = torch.arange(stages, device=sorted_degrees.device)
    start = torch.searchsorted(sorted_degrees, s, right=False).tolist()
    stop = torch.searchsorted(sorted_degrees, s, right=True).tolist()
    return list(zip(start, stop))


def _seen(sorted_degrees: torch.Tensor, stages: int) -> list[int]:
    s = torch.arange(stages, device=sorted_degrees.device)
    return torch.searchsorted(sorted_degrees, s, right=True).tolist()


def _masks(made: MADE) -> list[torch.Tensor]:
    layers = [*made.layers, made.output_layer]
    if made.skip_layer is not None:
        layers.append(made.skip_layer)
    return [layer.mask for layer in layers]


def _masks_follow_degrees(made: MADE) -> bool:
    """Whether the masks the forward pass uses are the ones the degrees prescribe.

    The engine derives its schedule from degrees; a mask edited by hand (not through
    ``set_mask``) would make it disagree with ``made(x)``, so such a MADE is solved naively.
    """
    below = made.input_degree
    for layer, deg in zip(made.layers, made.hidden_degrees()):
        if not torch.equal(layer.mask, mask_from_degrees(deg, below).to(layer.mask.device)):
            return False
        below = deg
    out = made.output_degrees()
    if not torch.equal(made.output_layer.mask, _strict_mask(out, below, made.output_layer.mask)):
        return False
    skip = made.skip_layer
    return skip is None or torch.equal(skip.mask, _strict_mask(out, made.input_degree, skip.mask))


def _strict_mask(out: torch.Tensor, below: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask_from_degrees(out, below, strict=True).to(like.device)


def _build_plan(made: MADE) -> _Plan | None:
    if not _masks_follow_degrees(made):
        return None
    d = made.input_dim
    mult = made.output_multiplier
    device = made.output_layer.weight.device
    perm = made.get_permutation().to(device)
    in_deg = torch.arange(1, d + 1, device=device)  # degrees of the inputs, in degree order
    src_order, src_deg = perm, in_deg
    hidden: list[_Map] = []
    orders: list[torch.Tensor] = []
    for layer, deg in zip(made.layers, made.hidden_degrees()):
        deg = deg.to(device)
        order = torch.argsort(deg, stable=True)
        sorted_deg = deg[order]
        w = _Ordered(layer.weight, order, src_order)
        bias = None if layer.bias is None else _Ordered(layer.bias, order)
        hidden.append(_Map(w, bias, _ranges(sorted_deg, d), _seen(src_deg, d)))
        orders.append(order)
        src_order, src_deg = order, sorted_deg
    # Output rows for the input of degree s + 1 come at stage s, one per parameter.
    rows = (torch.arange(mult, device=device) * d + perm.unsqueeze(-1)).reshape(-1)
    out_ranges = [(s * mult, (s + 1) * mult) for s in range(d)]
    out = made.output_layer
    output = _Map(
        _Ordered(out.weight, rows, src_order),
        None if out.bias is None else _Ordered(out.bias, rows),
        out_ranges,
        _seen(src_deg, d),
    )
    skip = None
    if made.skip_layer is not None:
        sk = made.skip_layer
        skip = _Map(
            _Ordered(sk.weight, rows, perm),
            None if sk.bias is None else _Ordered(sk.bias, rows),
            out_ranges,
            list(range(d)),  # the output of degree s + 1 sees inputs of degree <= s
        )
    ctx = None
    if made.context_layer is not None:
        ctx = _Ordered(made.context_layer.weight, orders[0])
    to_input = made.input_degree.to(device) - 1
    return _Plan(hidden, output, skip, ctx, perm.tolist(), perm, to_input)


def _plan_key(made: MADE) -> tuple:
    """What the plan's structure and views depend on, compared without touching values.

    Masks by identity and version (``set_mask``, ``load_state_dict`` and ``.to()`` install new
    mask tensors; in-place edits bump the version); parameters by storage address, shape, stride,
    dtype and device (``.to()``, ``param.data = ...`` and ``load_state_dict(assign=True)`` change
    them). An address cannot be reused while the plan's views keep the old storage alive.
    """
    masks = _masks(made)
    storage = tuple(
        (p.data_ptr(), p.shape, p.stride(), p.dtype, p.device) for p in made.parameters()
    )
    return (tuple(masks), tuple(m._version for m in masks), storage)


def _same_key(a: tuple, b: tuple) -> bool:
    # Masks compare by identity: `==` on tensors would compare their values.
    same_masks = len(a[0]) == len(b[0]) and all(x is y for x, y in zip(a[0], b[0]))
    return same_masks and a[1:] == b[1:]


# Plans live outside the module (never in its state_dict, pickles or deep copies), with the key
# they were built for; ``None`` marks a MADE the engine cannot solve (hand-edited masks).
_CACHE: weakref.WeakKeyDictionary[MADE, tuple[tuple, _Plan | None]] = weakref.WeakKeyDictionary()


def _get_plan(made: MADE) -> _Plan | None:
    """The MADE's plan, refreshed to its current weights; ``None`` if the engine cannot solve it."""
    key = _plan_key(made)
    cached = _CACHE.get(made)
    if cached is not None and _same_key(cached[0], key):
        plan = cached[1]
    else:
        plan = _build_plan(made)
        _CACHE[made] = (key, plan)
    if plan is not None:
        plan.refresh()
    return plan


_Bulk = list[tuple[int, int, int, int, torch.Tensor]]
_Stage = tuple[int, list[tuple[int, int, int, int, int, Union[torch.Tensor, None]]]]


def _schedule(plan: _Plan, block: int) -> list[tuple[_Bulk, list[_Stage]]]:
    """The work of every block and stage, with weight slices cut once per plan and block size.

    Each block is ``(bulk, stages)``: ``bulk`` holds ``(map, start, stop, seen, weight)`` GEMMs
    adding the sources known before the block; each stage ``(s, ops)`` holds
    ``(map, start, stop, lo, hi, weight or None)`` for the targets due at stage ``s``.
    """
    cached = plan.schedules.get(block)
    if cached is not None:
        return cached
    maps = [*plan.hidden, plan.output] + ([plan.skip] if plan.skip is not None else [])
    d = len(plan.permutation)
    blocks = []
    for s0 in range(0, d, block):
        s1 = min(d, s0 + block)
        bulk: _Bulk = []
        lows = []
        for j, m in enumerate(maps):
            lo = m.seen[s0 - 1] if s0 else 0
            lows.append(lo)
            r0, r1 = m.rows[s0][0], m.rows[s1 - 1][1]
            if lo and r1 > r0:
                bulk.append((j, r0, r1, lo, m.weight.value[r0:r1, :lo]))
        stages: list[_Stage] = []
        for s in range(s0, s1):
            ops = []
            for j, (m, lo) in enumerate(zip(maps, lows)):
                r0, r1 = m.rows[s]
                if r1 > r0:
                    hi = m.seen[s]
                    w = m.weight.value[r0:r1, lo:hi] if hi > lo else None
                    ops.append((j, r0, r1, lo, hi, w))
            stages.append((s, ops))
        blocks.append((bulk, stages))
    plan.schedules[block] = blocks
    return blocks


def _stage_params(made: MADE, out: torch.Tensor, batch: torch.Size) -> list[Params]:
    """Views of each stage's parameters in MADE's output structure (last dim 1), made at once.

    ``out`` is the ``(D * P, N)`` output buffer, rows grouped by stage; the views stay valid while
    it fills up, so the loop does no shaping work.
    """
    d, mult = made.input_dim, made.output_multiplier
    if mult == 1:
        return list(out.view(d, *batch, 1).unbind(0))
    stages = out.view(d, mult, *batch, 1).unbind(0)  # (P, *batch, 1) each
    if made.count_params == 1:
        return [t.movedim(0, -2) for t in stages]
    if made.all_ones:
        return [t.unbind(0) for t in stages]
    return [tuple(p.movedim(0, -2) for p in t.split(made.param_dims, 0)) for t in stages]


def fast_autoregressive_solve(
    made: MADE,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Solve ``x_d = step(theta_d(x_<d), noise_d)`` computing every unit of the MADE once.

    Not differentiable (use :func:`madeflow.inversion.autoregressive_solve`, which dispatches).

    Args:
        made: The conditioner.
        step: Elementwise map from (parameters, noise) of one dim to its value; called once per
            dimension with params of last dim 1 and noise ``(*batch, 1)``.
        noise: ``(*batch, D)``.
        context: ``(*batch, context_dim)``, broadcastable against ``noise``'s batch shape; required
            exactly when ``made.context_dim > 0``.
        block: Stages per block (default :func:`block_size`); any value gives the same result.

    Returns:
        ``(*batch, D)``, equal (up to rounding) to the naive solver's result.
    """
    made.check_inputs(noise, context)
    d = made.input_dim
    batch = noise.shape[:-1]
    if context is not None:
        batch = torch.broadcast_shapes(batch, context.shape[:-1])
        noise = noise.expand(*batch, d)
        context = context.expand(*batch, made.context_dim)
    n = math.prod(batch)
    plan = _get_plan(made)
    if plan is None:  # hand-edited masks: the schedule would not match made(x)
        from madeflow.inversion import naive_autoregressive_solve  # (it imports this module)

        with torch.no_grad():
            return naive_autoregressive_solve(made, step, noise, context)
    weight = made.output_layer.weight
    key = (tuple(batch), block or block_size(d))
    # Buffers and their views are reused between calls; a concurrent or nested call (lock taken)
    # gets its own.
    owned = plan.lock.acquire(blocking=False)
    try:
        ws = plan.workspace if owned else None
        if ws is None or ws.key != key:
            ws = _Workspace(made, plan, batch, key[1], weight)
            if owned:
                plan.workspace = ws
        with torch.no_grad():
            x = _run(made, plan, ws, step, noise, context, n)
    finally:
        if owned:
            plan.lock.release()
    return x.reshape(*batch, d).to(noise.dtype)


class _Workspace:
    """Buffers of one solve, ``(units, N)`` each, and every view the loop needs, made once."""

    def __init__(
        self, made: MADE, plan: _Plan, batch: torch.Size, block: int, like: torch.Tensor
    ) -> None:
        d, n = made.input_dim, math.prod(batch)
        self.key = (tuple(batch), block)
        self.x = like.new_empty(d, n)  # x[s] is the input of degree s + 1
        self.pre = [like.new_empty(m.weight.value.shape[0], n) for m in plan.hidden]
        self.post = [like.new_empty(m.weight.value.shape[0], n) for m in plan.hidden]
        self.out = like.new_empty(plan.output.weight.value.shape[0], n)
        maps = [*plan.hidden, plan.output]
        sources = [self.x, *self.post]
        targets = [*self.pre, self.out]
        if plan.skip is not None:
            maps.append(plan.skip)
            sources.append(self.x)
            targets.append(self.out)
        hidden = len(plan.hidden)
        self.blocks = []
        for bulk, stages in _schedule(plan, block):
            bulk_views = [(targets[j][r0:r1], w, sources[j][:lo]) for j, r0, r1, lo, w in bulk]
            stage_views = []
            for s, ops in stages:
                views = []
                for j, r0, r1, lo, hi, w in ops:
                    post = self.post[j][r0:r1] if j < hidden else None
                    res = self.pre[j - 1][r0:r1] if made.residual and 0 < j < hidden else None
                    views.append((targets[j][r0:r1], w, sources[j][lo:hi], post, res))
                stage_views.append((s, views))
            self.blocks.append((bulk_views, stage_views))
        self.stage_params = _stage_params(made, self.out, batch)
        self.x_rows = self.x.view(d, *batch, 1).unbind(0)


def _run(
    made: MADE,
    plan: _Plan,
    ws: _Workspace,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None,
    n: int,
) -> torch.Tensor:
    for m, buf in zip(plan.hidden, ws.pre):
        _fill_bias(buf, m.bias)
    if plan.context_weight is not None:
        ctx = context.reshape(n, -1).t().to(ws.x.dtype)
        ws.pre[0].addmm_(plan.context_weight.value, ctx)
    _fill_bias(ws.out, plan.output.bias)
    act = made.activation
    relu = type(act) is torch.nn.ReLU
    noise_cols = noise.movedim(-1, 0)[plan.permutation_index].unsqueeze(-1).unbind(0)
    stage_params, x_rows = ws.stage_params, ws.x_rows
    for bulk, stages in ws.blocks:
        # Sources of degree < the block's first stage are known: one GEMM per map.
        for tgt, w, src in bulk:
            tgt.addmm_(w, src)
        for s, ops in stages:
            for tgt, w, src, post, res in ops:
                if w is not None:
                    tgt.addmm_(w, src)
                if post is not None:
                    if res is not None:
                        tgt += res
                    if relu:  # straight into the buffer, no temporary
                        torch.clamp_min(tgt, 0, out=post)
                    else:
                        post.copy_(act(tgt))
            x_rows[s].copy_(step(stage_params[s], noise_cols[s]))
    return ws.x.t().index_select(-1, plan.to_input_order)


def _fill_bias(buf: torch.Tensor, bias: _Ordered | None) -> None:
    if bias is None:
        buf.zero_()
    else:
        buf.copy_(bias.value.unsqueeze(-1).expand_as(buf))
