"""Check the autoregressive property of any conditioner through its Jacobian."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from madeflow.nn.masks import as_permutation, input_degrees

__all__ = ["AutoregressiveError", "check_autoregressive"]


class AutoregressiveError(AssertionError):
    """Raised when an output depends on an input that does not come before it."""


def check_autoregressive(
    net: Callable[..., torch.Tensor | Sequence[torch.Tensor]],
    input_dim: int,
    permutation: Sequence[int] | torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    num_points: int = 4,
    atol: float = 0.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Verify that output ``d`` of ``net`` depends only on inputs before ``d`` in the ordering.

    The Jacobian of every output with respect to the input is taken at ``num_points`` random
    points (ReLU networks can hide a dependence at one point, not at all of them). Works on any
    callable that maps ``(input_dim,)`` to a tensor or a tuple of tensors whose last dimension is
    ``input_dim``, e.g. :class:`madeflow.MADE` or :class:`pyro.nn.AutoRegressiveNN`.

    Args:
        net: The conditioner, called as ``net(x)`` or ``net(x, context=context)``.
        input_dim: ``D``.
        permutation: The ordering; defaults to ``net.get_permutation()`` if it exists, else the
            identity.
        context: Optional ``(context_dim,)`` context passed as a keyword.
        num_points: Number of random points at which to take the Jacobian.
        atol: Derivatives with absolute value ``<= atol`` count as zero.
        dtype: Dtype of the probe points; defaults to that of the net's first parameter.
        device: Device of the probe points; defaults to that of the net's first parameter.

    Returns:
        ``(D, D)`` boolean dependency matrix: entry ``[i, j]`` is ``True`` when some output
        parameter of input ``i`` depends on input ``j`` at some probe point.

    Raises:
        AutoregressiveError: If some output depends on an input that does not precede it.

    Example:
        >>> from madeflow import MADE
        >>> dep = check_autoregressive(MADE(4, [16]), 4)
        >>> bool(dep.diagonal().any())
        False
    """
    params = list(getattr(net, "parameters", lambda: [])())
    if dtype is None:
        dtype = params[0].dtype if params else torch.get_default_dtype()
    if device is None:
        device = params[0].device if params else None
    if permutation is None:
        get = getattr(net, "get_permutation", None)
        permutation = get() if get is not None else torch.arange(input_dim, device="cpu")
    degree = input_degrees(as_permutation(permutation, input_dim))

    def flat(x: torch.Tensor) -> torch.Tensor:
        out = net(x) if context is None else net(x, context=context)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return torch.cat([o.reshape(-1, input_dim) for o in outs])  # (P, D)

    dependency = torch.zeros(input_dim, input_dim, dtype=torch.bool, device="cpu")
    for _ in range(num_points):
        x = torch.randn(input_dim, dtype=dtype, device=device)
        jac = torch.autograd.functional.jacobian(flat, x)  # (P, D_out, D_in)
        dependency |= (jac.abs() > atol).any(0).cpu()

    allowed = degree.unsqueeze(1) > degree.unsqueeze(0)
    bad = dependency & ~allowed
    if bad.any():
        pairs = torch.nonzero(bad).tolist()
        shown = ", ".join(f"output {i} <- input {j}" for i, j in pairs[:10])
        more = f" (and {len(pairs) - 10} more)" if len(pairs) > 10 else ""
        raise AutoregressiveError(f"not autoregressive in the given ordering: {shown}{more}")
    return dependency
