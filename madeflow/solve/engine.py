r"""The one-pass-cost run of a MADE's autoregressive recursion.

Solving :math:`x_d = g(\theta_d(x_{<d}), \varepsilon_d)` by running the whole MADE once per
dimension costs ``D`` network passes. But a hidden unit of degree ``k`` depends only on inputs of
degree ``<= k``, so it can be computed exactly once, as soon as those inputs are known. This module
computes every hidden unit and every output row once over the whole solve, following the
:mod:`madeflow.solve.plan` (everything in degree order):

* Stage ``s = 0 .. D-1`` computes the units of degree ``s`` of every layer, then the parameters of
  the input of degree ``s + 1`` and calls ``step`` on them. The bias and the context contribution
  are added once, up front.
* Stages are processed in blocks. At the start of a block, one matrix product per layer adds the
  contribution of every source unit already known to all targets of the block (an efficient GEMM);
  inside the block each stage only adds the few sources of the block itself. This keeps the total
  work at about half a network pass in GEMMs plus small per-stage products.

Buffers are stored transposed, ``(units, batch)``, so every range of units is a contiguous slice.
They and all their views are kept with the plan and reused while the batch shape stays the same
(a nested or concurrent solve gets its own), so the loop only launches kernels. The run writes
into buffers in place and is therefore not differentiable;
:func:`madeflow.solve.autoregressive_solve` runs the reference loop when a gradient is needed.
"""

from __future__ import annotations

import math

import torch

from madeflow.nn.made import MADE, Params
from madeflow.solve.adjoint import Saved
from madeflow.solve.plan import Ordered, Plan, block_size, get_plan, schedule
from madeflow.solve.reference import Step, naive_autoregressive_solve

__all__ = ["fast_autoregressive_solve", "made_layout", "run"]


def _stage_params(made: MADE, out: torch.Tensor, batch: torch.Size) -> list[Params]:
    """Views of each stage's parameters in the MADE's output structure (last dim 1), made once.

    ``out`` is the ``(D * P, N)`` output buffer, rows grouped by stage; each stage's ``(P, N)``
    rows are shaped by :meth:`madeflow.MADE.split_params` itself. The views stay valid while the
    buffer fills up, so the loop does no shaping work.
    """
    mult = made.output_multiplier
    return [
        made.split_params(rows.t().view(*batch, mult), num_dims=1) for rows in out.split(mult, 0)
    ]


def fast_autoregressive_solve(
    made: MADE,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Solve ``x_d = step(theta_d(x_<d), noise_d)`` computing every unit of the MADE once.

    Not differentiable (:func:`madeflow.solve.autoregressive_solve` dispatches to the
    differentiable version when gradients are needed).

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
    return run(made, step, noise, context, block)[0]


def run(
    made: MADE,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None = None,
    block: int | None = None,
    keep: bool = False,
    observed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, Saved | None]:
    """Run the one-pass solve without gradients, returning its by-products too.

    Args:
        made: The conditioner.
        step: As in :func:`fast_autoregressive_solve`.
        noise: ``(*batch, D)``.
        context: ``(*batch, context_dim)`` or ``None``, broadcastable against ``noise``.
        block: Stages per block (default :func:`block_size`).
        keep: Also return copies of the buffers the backward needs.
        observed: ``(D,)`` bool: dimensions set to ``noise``'s entries instead of solved for.

    Returns:
        ``(x, params, saved)``: ``x`` ``(*batch, D)``; the MADE's raw output at the solution,
        ``(*batch, P * D)`` in :meth:`madeflow.MADE.split_params` layout (``None`` if the engine
        could not solve this MADE and the reference loop ran); the buffers (or ``None``).
    """
    made.check_inputs(noise, context)
    d = made.input_dim
    batch = noise.shape[:-1]
    if context is not None:
        batch = torch.broadcast_shapes(batch, context.shape[:-1])
        noise = noise.expand(*batch, d)
        context = context.expand(*batch, made.context_dim)
    n = math.prod(batch)
    plan = get_plan(made)
    if plan is None:  # hand-edited masks: the schedule would not match made(x)
        with torch.no_grad():
            x = naive_autoregressive_solve(made, step, noise, context, observed=observed)
            return x, None, None
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
            x = _run(made, plan, ws, step, noise, context, n, observed)
            params = made_layout(plan, ws.out).view(*batch, -1)
            saved = None
            if keep:
                saved = Saved(
                    ws.x.clone(),
                    [p.clone() for p in ws.pre],
                    [p.clone() for p in ws.post],
                    ws.out.clone(),
                    plan,
                )
    finally:
        if owned:
            plan.lock.release()
    return x.reshape(*batch, d).to(noise.dtype), params, saved


def made_layout(plan: Plan, rows: torch.Tensor) -> torch.Tensor:
    """Output rows in stage order ``(P * D, N)`` as the MADE lays them out, ``(N, P * D)``."""
    index = plan.output.weight.rows
    if index is None:
        return rows.t().clone()
    return rows.t().new_empty(rows.shape[1], rows.shape[0]).index_copy_(1, index, rows.t())


class _Workspace:
    """Buffers of one solve, ``(units, N)`` each, and every view the loop needs, made once."""

    def __init__(
        self, made: MADE, plan: Plan, batch: torch.Size, block: int, like: torch.Tensor
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
        for bulk, stages in schedule(plan, block):
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
    plan: Plan,
    ws: _Workspace,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None,
    n: int,
    observed: torch.Tensor | None = None,
) -> torch.Tensor:
    fixed = [False] * len(plan.permutation)
    if observed is not None:  # by stage: is the input of degree s + 1 given?
        fixed = observed.to(plan.permutation_index.device)[plan.permutation_index].tolist()
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
            x_rows[s].copy_(noise_cols[s] if fixed[s] else step(stage_params[s], noise_cols[s]))
    return ws.x.t().index_select(-1, plan.to_input_order)


def _fill_bias(buf: torch.Tensor, bias: Ordered | None) -> None:
    if bias is None:
        buf.zero_()
    else:
        buf.copy_(bias.value.unsqueeze(-1).expand_as(buf))
