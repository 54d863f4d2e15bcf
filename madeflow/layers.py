"""The masked linear layer of a MADE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedLinear"]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask.

    The mask is a buffer that the owning :class:`~madeflow.MADE` derives from degrees; it is not
    saved in ``state_dict`` (the degrees are), so switching masks costs no parameters.

    Args:
        in_features: Size of each input sample.
        out_features: Size of each output sample.
        bias: Whether to learn an additive bias.
    """

    mask: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.register_buffer(
            "mask", torch.ones(out_features, in_features, dtype=torch.bool), persistent=False
        )

    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask.

        Args:
            mask: ``(out_features, in_features)`` boolean tensor.
        """
        self.mask = mask.to(device=self.weight.device, dtype=torch.bool)

    def masked_weight(self) -> torch.Tensor:
        """The weight with masked entries zeroed, ``(out_features, in_features)``."""
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the masked map.

        Args:
            x: ``(*batch, in_features)``.

        Returns:
            ``(*batch, out_features)``.
        """
        return F.linear(x, self.masked_weight(), self.bias)
