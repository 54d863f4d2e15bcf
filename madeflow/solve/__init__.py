r"""Solve a MADE's autoregressive recursion: the slow direction of MAF and IAF, and MADE sampling.

Every sequential computation in madeflow goes through :func:`autoregressive_solve`: MAF sampling,
IAF scoring of outside points, and sampling of the MADE density estimators. Each is a recursion

.. math:: x_d = g(\theta_d(x_{<d}), \varepsilon_d)

where :math:`\theta_d` are the MADE's parameters for dimension ``d`` and ``g`` is an elementwise
``step`` (an affine map for flows, a sampler driven by pre-drawn noise for density estimators).

* :mod:`madeflow.solve.reference`: the ``D``-pass reference loop (differentiable, traceable);
* :mod:`madeflow.solve.plan`: the MADE in degree order, cached;
* :mod:`madeflow.solve.engine`: the one-pass-cost run.
"""

from __future__ import annotations

import torch

from madeflow.modes import is_eager
from madeflow.nn.made import MADE
from madeflow.solve.engine import fast_autoregressive_solve
from madeflow.solve.reference import Step, naive_autoregressive_solve, ordered_loop

__all__ = [
    "Step",
    "autoregressive_solve",
    "fast_autoregressive_solve",
    "naive_autoregressive_solve",
    "ordered_loop",
]


def autoregressive_solve(
    made: MADE, step: Step, noise: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """Solve ``x_d = step(theta_d(x_<d), noise_d)`` in the MADE's ordering.

    Costs about one network pass (:func:`madeflow.solve.engine.fast_autoregressive_solve` computes
    each hidden unit once) plus ``D`` calls of ``step``. When a gradient is needed (grad mode on
    and the MADE's parameters, ``noise`` or ``context`` require grad), and under
    ``torch.compile``, ``torch.jit`` or ``torch.func`` (:func:`madeflow.modes.is_eager`), it runs
    the differentiable :func:`naive_autoregressive_solve` (``D`` passes): wrap sampling in
    ``torch.no_grad()`` when no gradient is wanted.

    Args:
        made: The conditioner.
        step: Elementwise map from (parameters, noise) of some dims to their values. It must treat
            each dimension independently (it may be called with several dims at once).
        noise: ``(*batch, D)``.
        context: Optional context, broadcastable against ``noise``'s batch shape.

    Returns:
        ``(*batch, D)``.
    """
    # A subclass that changes forward() breaks the engine's assumptions: stay exact, go naive.
    fast = is_eager() and type(made).forward is MADE.forward
    if not fast or _needs_grad(made, noise, context):
        return naive_autoregressive_solve(made, step, noise, context)
    return fast_autoregressive_solve(made, step, noise, context)


def _needs_grad(made: MADE, noise: torch.Tensor, context: torch.Tensor | None) -> bool:
    if not torch.is_grad_enabled():
        return False
    if noise.requires_grad or (context is not None and context.requires_grad):
        return True
    return any(p.requires_grad for p in made.parameters())
