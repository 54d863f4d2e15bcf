"""Eager mode or a program transform: which code paths and checks may run.

madeflow's speed comes from code that plain PyTorch modules do not have: custom autograd
functions (the grouped masked product) and a solver that writes into reused buffers in place.
Both are exact in eager mode, at every order of differentiation. Program transforms see the code
differently: ``torch.compile`` traces it, ``torch.jit.trace`` records it, and ``torch.func``
(``vmap``, ``grad``, ``jacrev``, ``jacfwd``) runs it on wrapped tensors. Under any of those the
library takes the plain path (a dense masked product, a differentiable loop), which every
transform understands; the result is the same function. Checks that read tensor values (NaN
rows, support) need a Python branch on data, which transforms cannot follow, so they run in eager
mode only; shape checks run everywhere.
"""

from __future__ import annotations

import torch

__all__ = ["is_eager", "validate_args"]


def is_eager() -> bool:
    """Whether plain eager mode is on: the fast paths and the value checks may run.

    Returns:
        ``False`` while ``torch.compile`` traces, ``torch.jit`` traces or scripts, or a
        ``torch.func`` transform is active; ``True`` in plain eager mode.

    Example:
        >>> is_eager()
        True
        >>> torch.func.vmap(lambda x: torch.tensor(is_eager()))(torch.ones(2)).tolist()
        [False, False]
    """
    # is_compiling() first: dynamo constant-folds it and never reaches the calls it cannot trace.
    if torch.compiler.is_compiling():
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    return not torch._C._are_functorch_transforms_active()


def validate_args() -> bool | None:
    """The ``validate_args`` for a distribution built now.

    ``None`` (the global default) in eager mode; ``False`` under a program transform, where a
    support check would branch on data. The global default alone will not do: the first
    ``torch.compile`` of a process turns it off for good, and a user may turn it back on.

    Returns:
        ``None`` or ``False``.
    """
    return None if is_eager() else False
