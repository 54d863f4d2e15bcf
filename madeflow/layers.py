"""The masked linear layer of a MADE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from madeflow.grouped import GroupPlan, group_plan, grouped_masked_linear

__all__ = ["MaskedLinear"]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask.

    The mask is a buffer that the owning :class:`~madeflow.MADE` derives from degrees; it is not
    saved in ``state_dict`` (the degrees are), so switching masks costs no parameters.

    Large layers skip the zero half of the masked weight: rows are split into a few groups that
    each multiply only the columns they can see (:mod:`madeflow.grouped`), with the same result
    and gradients as the dense masked product. Set ``grouped = False`` to force the dense one
    (e.g. for double backward, which the grouped product does not support).

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
        self.grouped = True
        self._plan: tuple[tuple[int, int], GroupPlan | None] | None = None

    def group_plan(self) -> GroupPlan | None:
        """The grouping of the current mask (``None``: dense), rebuilt when the mask changes."""
        # set_mask drops the plan; the key also catches in-place edits and device moves.
        key = (self.mask.data_ptr(), self.mask._version)
        if self._plan is None or self._plan[0] != key:
            self._plan = (key, group_plan(self.mask))
        return self._plan[1]

    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask.

        Args:
            mask: ``(out_features, in_features)`` boolean tensor.
        """
        self.mask = mask.to(device=self.weight.device, dtype=torch.bool)
        self._plan = None  # a new mask may reuse a freed mask's address

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
        if self.grouped:
            plan = self.group_plan()
            if plan is not None:
                return grouped_masked_linear(x, self.weight, self.mask, self.bias, plan)
        return F.linear(x, self.masked_weight(), self.bias)
