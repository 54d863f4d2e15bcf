r"""Solve a MADE's autoregressive recursion: the slow direction of MAF and IAF, and MADE sampling.

Every sequential computation in madeflow goes through :func:`autoregressive_solve`: MAF sampling,
IAF scoring of outside points, and sampling of the MADE density estimators. Each is a recursion

.. math:: x_d = g(\theta_d(x_{<d}), \varepsilon_d)

where :math:`\theta_d` are the MADE's parameters for dimension ``d`` and ``g`` is an elementwise
``step`` (an affine map for flows, a sampler driven by pre-drawn noise for density estimators).

* :mod:`madeflow.solve.reference`: the ``D``-pass reference loop (differentiable, traceable);
* :mod:`madeflow.solve.plan`: the MADE in degree order, cached;
* :mod:`madeflow.solve.engine`: the one-pass-cost run;
* :mod:`madeflow.solve.adjoint`, :mod:`madeflow.solve.function`: its backward, the same schedule
  in reverse, and the differentiable one-pass solve.
"""

from __future__ import annotations

import torch

from madeflow.modes import is_eager
from madeflow.nn.made import MADE, Params
from madeflow.solve.engine import fast_autoregressive_solve, run
from madeflow.solve.function import engine_solve
from madeflow.solve.plan import get_plan
from madeflow.solve.reference import Step, naive_autoregressive_solve, ordered_loop

__all__ = [
    "Step",
    "autoregressive_solve",
    "engine_solve",
    "fast_autoregressive_solve",
    "naive_autoregressive_solve",
    "ordered_loop",
]


def autoregressive_solve(
    made: MADE,
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None = None,
    return_params: bool = False,
    method: str = "auto",
    observed: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Params]:
    """Solve ``x_d = step(theta_d(x_<d), noise_d)`` in the MADE's ordering.

    Costs about one network pass (the engine computes each hidden unit once) plus ``D`` calls
    of ``step``; with gradients, about two more passes backward (a reverse sweep of the same
    schedule, :mod:`madeflow.solve.function`), exact for the MADE's parameters, ``noise`` and
    ``context``. The reference loop (``D`` passes, differentiable to any order) runs under
    ``torch.compile``, ``torch.jit`` and ``torch.func`` (:func:`madeflow.modes.is_eager`), for a
    MADE subclass with its own ``forward``, and when asked for with ``method="reference"``.

    Args:
        made: The conditioner.
        step: Elementwise map from (parameters, noise) of some dims to their values. It must treat
            each dimension independently (it may be called with several dims at once) and depend
            only on its arguments.
        noise: ``(*batch, D)``.
        context: Optional context, broadcastable against ``noise``'s batch shape.
        return_params: Also return the MADE's output at the solution (what ``made(x)`` returns),
            a by-product of the solve: no extra pass.
        method: ``"auto"``, ``"engine"`` (the one-pass solve; its backward is first-order) or
            ``"reference"`` (the ``D``-pass loop; gradients of any order).
        observed: ``(D,)`` bool: dimensions that are given rather than solved for; they take
            ``noise``'s entries (``step`` is not called on them) and the others are solved
            conditionally on them. Exact conditioning needs the given dimensions to come first
            in the ordering.

    Returns:
        ``(*batch, D)``, or ``(x, params)`` with ``return_params``.

    Raises:
        ValueError: For an unknown ``method`` or a malformed ``observed``.
    """
    if method not in ("auto", "engine", "reference"):
        raise ValueError(f"method must be 'auto', 'engine' or 'reference', got {method!r}")
    if observed is not None and (
        not isinstance(observed, torch.Tensor)
        or observed.dtype != torch.bool
        or observed.shape != (made.input_dim,)
    ):
        raise ValueError(f"observed must be a boolean tensor of shape ({made.input_dim},)")
    fast = is_eager() and type(made).forward is MADE.forward and get_plan(made) is not None
    if method == "reference" or (method == "auto" and not fast):
        return naive_autoregressive_solve(made, step, noise, context, return_params, observed)
    if _needs_grad(made, noise, context):
        x, params = engine_solve(made, step, noise, context, observed=observed)
    else:
        x, flat, _ = run(made, step, noise, context, observed=observed)
        params = made.split_params(flat)
    return (x, params) if return_params else x


def _needs_grad(made: MADE, noise: torch.Tensor, context: torch.Tensor | None) -> bool:
    if not torch.is_grad_enabled():
        return False
    if noise.requires_grad or (context is not None and context.requires_grad):
        return True
    return any(p.requires_grad for p in made.parameters())
