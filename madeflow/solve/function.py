"""The one-pass solve as a differentiable function: engine forward, reverse-sweep backward.

:func:`engine_solve` returns the solution ``x`` (and, if asked, the MADE's parameters at the
solution) with exact gradients for the MADE's parameters, the noise and the context at about
one network pass forward and two backward (:mod:`madeflow.solve.adjoint`), where autograd through
the reference loop costs ``D`` passes each way.

The backward is first-order: asked for a graph of the gradient (``create_graph=True``, e.g. a
Hessian-vector product), it raises and names the reference loop, which is differentiable to any
order (``autoregressive_solve(..., method="reference")``). ``step`` must be a function of its
arguments only (no tensors that require grad captured in a closure), as every madeflow step is.
"""

from __future__ import annotations

from typing import Any

import torch

from madeflow.nn.made import MADE, Params
from madeflow.solve.adjoint import Saved, adjoint_sweep
from madeflow.solve.engine import run
from madeflow.solve.plan import Plan, block_size
from madeflow.solve.reference import Step

__all__ = ["engine_solve"]


def engine_solve(
    made: MADE,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None = None,
    block: int | None = None,
    observed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Params]:
    """Solve ``x_d = step(theta_d(x_<d), noise_d)`` with one-pass cost, differentiably.

    Args:
        made: The conditioner (its ``forward`` not overridden, its masks following its degrees).
        step: Elementwise ``step(params, noise) -> x``, a function of its arguments only.
        noise: ``(*batch, D)``.
        context: ``(*batch, context_dim)`` or ``None``, broadcastable against ``noise``.
        block: Stages per block (default :func:`madeflow.solve.plan.block_size`).
        observed: ``(D,)`` bool: dimensions set to ``noise``'s entries instead of solved for
            (their gradient flows to those entries).

    Returns:
        ``(x, params)``: ``x`` ``(*batch, D)`` and the MADE's output at the solution in its usual
        structure (``made(x)``, computed by the solve itself), both differentiable.
    """
    made.check_inputs(noise, context)
    batch = noise.shape[:-1]
    if context is not None:
        batch = torch.broadcast_shapes(batch, context.shape[:-1])
        context = context.expand(*batch, made.context_dim)
    noise = noise.expand(*batch, made.input_dim)  # autograd sums the gradient back
    block = block or block_size(made.input_dim)
    x, flat = _EngineSolve.apply(made, step, block, observed, noise, context, *made.parameters())
    return x, made.split_params(flat)


class _EngineSolve(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        made: MADE,
        step: Step,
        block: int,
        observed: torch.Tensor | None,
        noise: torch.Tensor,
        context: torch.Tensor | None,
        *params: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, flat, saved = run(made, step, noise, context, block, keep=True, observed=observed)
        ctx.made, ctx.step, ctx.block, ctx.saved = made, step, block, saved
        ctx.observed = observed
        # The parameters too: autograd then refuses a backward after they changed in place.
        ctx.save_for_backward(noise, flat, context, *params)
        return x, flat

    @staticmethod
    def backward(ctx: Any, grad_x: torch.Tensor, grad_flat: torch.Tensor) -> tuple[Any, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the one-pass solve's backward is first-order only (create_graph=True asked for "
                "more); for higher-order gradients solve with "
                "autoregressive_solve(..., method='reference'), differentiable to any order"
            )
        made, saved = ctx.made, ctx.saved
        noise, flat, context, *_ = ctx.saved_tensors
        plan = saved.plan
        n, d = saved.x.shape[1], made.input_dim
        jac_params, jac_noise = _step_jacobians(
            made, ctx.step, flat.reshape(n, -1), noise, plan, ctx.observed
        )
        lam, d_out, d_pre = adjoint_sweep(
            made,
            plan,
            saved,
            _degree_order(plan, grad_x, n, d),
            jac_params,
            _stage_order(plan, grad_flat, n) if grad_flat is not None else None,
            ctx.block,
        )
        needs = ctx.needs_input_grad
        grad_noise = None
        if needs[4]:
            grad_noise = _input_order(plan, lam * jac_noise).t().reshape(noise.shape)
        grads, grad_context = _parameter_grads(made, plan, saved, d_out, d_pre, context, n)
        if context is not None and needs[5]:
            grad_context = grad_context.reshape(context.shape)
        else:
            grad_context = None
        return (None, None, None, None, grad_noise, grad_context, *grads)


def _degree_order(plan: Plan, grad: torch.Tensor | None, n: int, d: int) -> torch.Tensor:
    """``(*batch, D)`` in input order -> ``(D, N)`` in degree order (zeros for ``None``)."""
    if grad is None:
        return torch.zeros(
            d, n, dtype=plan.output.weight.value.dtype, device=plan.output.weight.value.device
        )
    return grad.reshape(n, d).t().index_select(0, plan.permutation_index)


def _input_order(plan: Plan, rows: torch.Tensor) -> torch.Tensor:
    """``(D, N)`` in degree order -> ``(D, N)`` in input order."""
    return rows.index_select(0, plan.to_input_order)


def _stage_order(plan: Plan, flat: torch.Tensor, n: int) -> torch.Tensor:
    """``(*batch, P * D)`` in the MADE's layout -> ``(P * D, N)`` in stage order."""
    flat = flat.reshape(n, -1)
    index = plan.output.weight.rows
    return (flat if index is None else flat.index_select(1, index)).t()


def _step_jacobians(
    made: MADE,
    step: Step,
    flat: torch.Tensor,
    noise: torch.Tensor,
    plan: Plan,
    observed: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``d step_d / d theta_d`` ``(P * D, N)`` stage order and ``d step_d / d noise_d`` ``(D, N)``.

    ``step`` treats dimensions independently, so one backward with unit weights gives every
    dimension's derivatives at once.
    """
    n = flat.shape[0]
    with torch.enable_grad():
        p = flat.detach().requires_grad_()
        e = noise.reshape(n, -1).detach().requires_grad_()
        y = step(made.split_params(p), e)
        if observed is not None:  # given dimensions are their noise entries
            y = torch.where(observed.to(y.device), e, y)
        gp, ge = torch.autograd.grad(y, (p, e), torch.ones_like(y), allow_unused=True)
    gp = torch.zeros_like(p) if gp is None else gp
    ge = torch.zeros_like(e) if ge is None else ge
    return _stage_order(plan, gp, n), ge.t().index_select(0, plan.permutation_index)


def _unsort(rows: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """Rows in sorted order (``rows[i]`` belongs to unit ``order[i]``) back to unit order."""
    if order is None:
        return rows
    return torch.empty_like(rows).index_copy_(0, order, rows)


def _parameter_grads(
    made: MADE,
    plan: Plan,
    saved: Saved,
    d_out: torch.Tensor,
    d_pre: list[torch.Tensor],
    context: torch.Tensor | None,
    n: int,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Gradients of every MADE parameter (``named_parameters`` order) and of the context.

    Masked entries are set to zero, not multiplied by the mask: in float32 an outer product can
    overflow at an entry the mask removes, and ``inf * 0`` would be a NaN gradient there.
    """
    x = _unsort(saved.x, plan.permutation_index)  # (D, N), input order
    grads: dict[str, torch.Tensor] = {}
    below = x
    deltas = []
    for i, (layer, m) in enumerate(zip(made.layers, plan.hidden)):
        delta = _unsort(d_pre[i], m.weight.rows)
        deltas.append(delta)
        grads[f"layers.{i}.weight"] = (delta @ below.t()).masked_fill_(layer.mask == 0, 0)
        if layer.bias is not None:
            grads[f"layers.{i}.bias"] = delta.sum(1)
        below = _unsort(saved.post[i], m.weight.rows)
    delta_out = _unsort(d_out, plan.output.weight.rows)
    out = made.output_layer
    grads["output_layer.weight"] = (delta_out @ below.t()).masked_fill_(out.mask == 0, 0)
    if out.bias is not None:
        grads["output_layer.bias"] = delta_out.sum(1)
    if made.skip_layer is not None:
        grads["skip_layer.weight"] = (delta_out @ x.t()).masked_fill_(made.skip_layer.mask == 0, 0)
    grad_context = None
    if made.context_layer is not None:
        c = context.reshape(n, -1).t().to(deltas[0].dtype)
        grads["context_layer.weight"] = deltas[0] @ c.t()
        grad_context = (made.context_layer.weight.t() @ deltas[0]).t()
    return [grads[name] for name, _ in made.named_parameters()], grad_context
