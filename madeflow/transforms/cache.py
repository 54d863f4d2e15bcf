"""What transforms keep between calls never leaves the process: not in pickles, copies or saves."""

from __future__ import annotations

__all__ = ["TransientCache"]


class TransientCache:
    """Mixin for transforms that keep tensors of their last call: never pickle or copy them.

    The kept tensors (the attributes named in ``_transient``, and torch's ``_cached_x_y``) may be
    a whole batch with its autograd graph; ``pickle``, ``torch.save`` and ``copy.deepcopy`` of
    the module get ``None`` in their place (a non-leaf tensor cannot even be deep-copied).
    """

    _transient: tuple[str, ...] = ("_cached",)

    def __getstate__(self) -> dict:
        """The module's state without the tensors of the last call."""
        state = super().__getstate__()  # type: ignore[misc]
        for name in self._transient:
            state[name] = None
        if "_cached_x_y" in state:
            state["_cached_x_y"] = (None, None)
        return state
