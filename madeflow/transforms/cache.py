"""What transforms keep between calls: checked before use, and never saved.

Pyro's transforms cache their last ``(x, y)`` so that scoring a sample returns the very input that
produced it; madeflow's layers need the same to skip sequential solves. A cache keyed on tensor
identity alone goes stale when weights change in place (an optimizer step, an edit through
``.data``), so :class:`TransientCache` recalls a remembered input only after a cheap check that
the layer still maps it to that output, and keeps what it remembers out of pickles, deep copies
and ``state_dict``.
"""

from __future__ import annotations

from typing import Callable

import torch

from madeflow.modes import is_eager

__all__ = ["TransientCache", "reproduces"]


def reproduces(x_new: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether a recomputed output equals the remembered one up to rounding.

    Args:
        x_new: The output recomputed from the remembered input.
        x: The remembered output.

    Returns:
        ``True`` when the shapes agree and every entry is within ``64 eps (1 + |x|)``.
    """
    if x_new.shape != x.shape:
        return False
    tol = 64 * torch.finfo(x.dtype).eps
    with torch.no_grad():
        return bool(((x_new - x).abs() <= tol * (1 + x.abs())).all())


class TransientCache:
    """Mixin for transforms that keep tensors of their last call: never pickle or copy them.

    The kept tensors (the attributes named in ``_transient``, and torch's ``_cached_x_y``) may be
    a whole batch with its autograd graph; ``pickle``, ``torch.save`` and ``copy.deepcopy`` of
    the module get ``None`` in their place (a non-leaf tensor cannot even be deep-copied).
    """

    _transient: tuple[str, ...] = ("_cached", "_drawn")
    _drawn: tuple[torch.Tensor, torch.Tensor] | None = None

    def _remember(self, u: torch.Tensor, x: torch.Tensor) -> None:
        """Remember the last ``(input, output)`` of the layer's forward call."""
        self._drawn = (u, x)

    def _recall(
        self, x: torch.Tensor, maps_to_x: Callable[[torch.Tensor], bool]
    ) -> torch.Tensor | None:
        """The remembered input if ``x`` is the remembered output and still its image.

        Args:
            x: A tensor to invert.
            maps_to_x: ``maps_to_x(u)`` recomputes the layer on the remembered input with the
                current weights and says whether it gives ``x`` again.

        Returns:
            The remembered input, or ``None`` (not the layer's last output, changed weights, or
            a program transform, which cannot follow the check's branch on data).
        """
        drawn = self._drawn
        if drawn is None or drawn[1] is not x or not is_eager():
            return None
        return drawn[0] if maps_to_x(drawn[0]) else None

    def __getstate__(self) -> dict:
        """The module's state without the tensors of the last call."""
        state = super().__getstate__()  # type: ignore[misc]
        for name in self._transient:
            state[name] = None
        if "_cached_x_y" in state:
            state["_cached_x_y"] = (None, None)
        return state
