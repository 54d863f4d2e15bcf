"""A fixed permutation of the coordinates, saved in ``state_dict``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule

from madeflow.masks import as_permutation

__all__ = ["PermuteTransform"]


class PermuteTransform(TransformModule):
    """Reorder the last dimension: ``x = u[..., permutation]``; volume preserving.

    Unlike Pyro's ``Permute``, the permutation is a buffer: it moves with ``.to(device)`` and is
    saved and restored by ``state_dict``.

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
    inverse_permutation: torch.Tensor

    def __init__(self, permutation: Sequence[int] | torch.Tensor) -> None:
        super().__init__(cache_size=1)
        n = torch.as_tensor(permutation).numel()
        perm = as_permutation(permutation, n)
        self.input_dim = n
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm), persistent=False)
        self.register_load_state_dict_post_hook(_refresh_inverse)

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        """Permute, ``(*batch, D) -> (*batch, D)``."""
        return u.index_select(-1, self.permutation)

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the permutation, ``(*batch, D) -> (*batch, D)``."""
        return x.index_select(-1, self.inverse_permutation)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Zero, ``(*batch,)``."""
        return x.new_zeros(x.shape[:-1])


def _refresh_inverse(module: torch.nn.Module, incompatible_keys: object) -> None:
    module.inverse_permutation = torch.argsort(module.permutation)
