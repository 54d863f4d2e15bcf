"""A fixed permutation of the coordinates, saved in ``state_dict``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule

from madeflow.nn.masks import as_permutation
from madeflow.transforms.cache import TransientCache

__all__ = ["PermuteTransform"]


class PermuteTransform(TransientCache, TransformModule):
    """Reorder the last dimension: ``x = u[..., permutation]``; volume preserving.

    Unlike Pyro's ``Permute``, the permutation is a buffer: it moves with ``.to(device)`` and is
    saved and restored by ``state_dict``. Inverting the layer's own last output returns the very
    tensor it came from (checked against the current permutation), so an IAF layer below still
    recognises its own sample.

    Args:
        permutation: ``(D,)`` ints, a permutation of ``range(D)``.

    Example:
        >>> t = PermuteTransform([2, 0, 1])
        >>> t(torch.tensor([10.0, 11.0, 12.0])).tolist()
        [12.0, 10.0, 11.0]
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    volume_preserving = True

    permutation: torch.Tensor

    def __init__(self, permutation: Sequence[int] | torch.Tensor) -> None:
        super().__init__(cache_size=0)
        n = torch.as_tensor(permutation).numel()
        perm = as_permutation(permutation, n)
        self.input_dim = n
        self.register_buffer("permutation", perm)
        self._register_load_state_dict_pre_hook(_check_loaded_permutation)

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        """Permute, ``(*batch, D) -> (*batch, D)``."""
        x = u.index_select(-1, self.permutation)
        self._remember(u, x)
        return x

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the permutation, ``(*batch, D) -> (*batch, D)``."""
        u = self._recall(x, lambda u: torch.equal(self._call_values(u), x))
        return x.index_select(-1, torch.argsort(self.permutation)) if u is None else u

    def _call_values(self, u: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return u.index_select(-1, self.permutation)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Zero, ``(*batch,)``."""
        return x.new_zeros(x.shape[:-1])


def _check_loaded_permutation(state_dict: dict, prefix: str, *args: object) -> None:
    """Refuse a saved ``permutation`` that is not a permutation before it is loaded."""
    value = state_dict.get(prefix + "permutation")
    if value is None:
        return
    try:
        as_permutation(value, torch.as_tensor(value).numel())
    except ValueError as err:
        raise ValueError(f"cannot load {prefix}permutation: {err}") from None
