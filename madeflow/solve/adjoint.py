r"""The backward of the one-pass solve: the same schedule, run in reverse.

The solve returns ``x`` with :math:`x_d = g(\theta_d(x_{<d}), \varepsilon_d)`. Given the gradient
:math:`\bar x` of a loss with respect to ``x`` (and, optionally, :math:`\bar\theta` with respect to
the parameters at the solution), implicit differentiation gives the total adjoint of each
:math:`x_d`,

.. math:: \lambda_d = \bar x_d + \sum_{e > d} a_e^\top \frac{\partial \theta_e}{\partial x_d},
    \qquad a_e = \frac{\partial g_e}{\partial \theta_e}^\top \lambda_e + \bar\theta_e,

a triangular system solved backwards along the ordering. Each :math:`\sum_e a_e^\top
\partial\theta_e / \partial x_d` is a backward pass through the MADE restricted to later outputs,
and a hidden unit of degree ``k`` only feeds outputs of degree ``> k``: its adjoint is final as
soon as the outputs of degree ``> k`` are. So one sweep over the stages in reverse computes every
hidden unit's adjoint once, exactly as :mod:`madeflow.solve.engine` computes every unit once
going forward: at reverse stage ``t`` the output adjoint :math:`a_t` is formed, then the units of
degree ``t`` of each layer pull from the targets that see them (top layer first), and the inputs
of degree ``t`` pull from the first layer, completing :math:`\lambda_{t-1}`. Stages are blocked
as in the forward pass, with one GEMM per layer for everything already final.

The sweep's by-products give every gradient: parameters (one outer product per layer), noise
(:math:`\lambda \odot \partial g / \partial \varepsilon`) and context (through the first layer's
context weights).
"""

from __future__ import annotations

import torch

from madeflow.nn.made import MADE
from madeflow.solve.plan import Plan

__all__ = ["Saved", "adjoint_sweep"]


class Saved:
    """What the forward solve leaves for its backward, all ``(units, N)`` in degree order.

    Attributes:
        x: ``(D, N)`` the solution.
        pre: Per hidden layer, the pre-activations.
        post: Per hidden layer, the activations.
        out: ``(P * D, N)`` the MADE's output rows, grouped by stage.
        plan: The plan the solve ran.
    """

    def __init__(
        self,
        x: torch.Tensor,
        pre: list[torch.Tensor],
        post: list[torch.Tensor],
        out: torch.Tensor,
        plan: Plan,
    ) -> None:
        self.x, self.pre, self.post, self.out, self.plan = x, pre, post, out, plan


def _act_grad(made: MADE, pre: torch.Tensor) -> torch.Tensor:
    """The elementwise derivative of the MADE's activation at ``pre``."""
    if type(made.activation) is torch.nn.ReLU:
        return (pre > 0).to(pre.dtype)
    with torch.enable_grad():
        leaf = pre.detach().requires_grad_()
        (grad,) = torch.autograd.grad(made.activation(leaf), leaf, torch.ones_like(leaf))
    return grad


def adjoint_sweep(
    made: MADE,
    plan: Plan,
    saved: Saved,
    grad_x: torch.Tensor,
    jac_params: torch.Tensor,
    grad_params: torch.Tensor | None,
    block: int,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    r"""Solve for every adjoint of the solve in one reverse sweep.

    Args:
        made: The conditioner.
        plan: Its plan (the one the forward solve ran).
        saved: The forward solve's buffers.
        grad_x: ``(D, N)``, the loss's gradient with respect to ``x``, degree order.
        jac_params: ``(P * D, N)``, :math:`\partial g_d / \partial \theta_d` at the solution,
            stage order.
        grad_params: ``(P * D, N)`` gradient with respect to the parameters at the solution, stage
            order, or ``None``.
        block: Stages per block.

    Returns:
        ``(lam, d_out, d_pre)``: the total adjoints of ``x`` ``(D, N)``, of the output rows
        ``(P * D, N)`` and of each hidden layer's pre-activations.
    """
    d, hidden = made.input_dim, len(plan.hidden)
    lam = grad_x.clone()
    d_out = torch.zeros_like(saved.out)
    adj_post = [torch.zeros_like(p) for p in saved.pre]
    d_pre = [torch.zeros_like(p) for p in saved.pre]
    act_grad = [_act_grad(made, p) for p in saved.pre]
    # (map, adjoint of its sources, adjoint of its targets, hidden layer its sources are or -1)
    maps = [(plan.output, adj_post[-1], d_out, hidden - 1)]
    if plan.skip is not None:
        maps.append((plan.skip, lam, d_out, -1))
    for j in range(hidden - 1, -1, -1):
        src = adj_post[j - 1] if j else lam
        maps.append((plan.hidden[j], src, d_pre[j], j - 1))
    for s0 in range(((d - 1) // block) * block, -1, -block):
        s1 = min(d, s0 + block)
        for m, src, tgt, _ in maps:  # everything of stage >= s1 is final: one GEMM per map
            (c0, c1), r = _cols(m, s0, s1 - 1), _rows_from(m, s1)
            if c1 > c0 and r < tgt.shape[0]:
                src[c0:c1].addmm_(m.weight.value[r:, c0:c1].t(), tgt[r:])
        for t in range(s1 - 1, s0 - 1, -1):
            r0, r1 = plan.output.rows[t]
            d_out[r0:r1] = jac_params[r0:r1] * lam[t]
            if grad_params is not None:
                d_out[r0:r1] += grad_params[r0:r1]
            for m, src, tgt, layer in maps:  # top-down: each pull finishes the layer below
                (c0, c1), r, stop = _cols(m, t, t), m.rows[t][0], _rows_from(m, s1)
                if c1 > c0 and stop > r:
                    src[c0:c1].addmm_(m.weight.value[r:stop, c0:c1].t(), tgt[r:stop])
                if layer >= 0 and c1 > c0:
                    _finish(made, layer, c0, c1, adj_post, d_pre, act_grad)
    return lam, d_out, d_pre


def _finish(
    made: MADE,
    layer: int,
    c0: int,
    c1: int,
    adj_post: list[torch.Tensor],
    d_pre: list[torch.Tensor],
    act_grad: list[torch.Tensor],
) -> None:
    """The pre-activation adjoint of units ``c0:c1`` of ``layer``, whose activations are final."""
    d_pre[layer][c0:c1] = act_grad[layer][c0:c1] * adj_post[layer][c0:c1]
    if made.residual and layer + 1 < len(d_pre):  # h_{l+1} = h_l + W act(h_l): the identity path
        d_pre[layer][c0:c1] += d_pre[layer + 1][c0:c1]


def _cols(m, t0: int, t1: int) -> tuple[int, int]:
    """Source columns first seen at stages ``t0..t1``: ``[seen[t0 - 1], seen[t1])``."""
    return (m.seen[t0 - 1] if t0 else 0), m.seen[t1]


def _rows_from(m, t: int) -> int:
    """First target row of stage ``t`` (the number of rows when ``t`` is past the end)."""
    return m.rows[t][0] if t < len(m.rows) else m.weight.value.shape[0]
