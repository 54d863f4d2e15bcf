"""The masked linear layer of a MADE."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from madeflow.modes import is_eager
from madeflow.nn.grouped import GroupPlan, group_plan, grouped_masked_linear

__all__ = ["MaskedLinear"]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask.

    The mask is a buffer that the owning :class:`~madeflow.MADE` derives from degrees; it is not
    saved in ``state_dict`` (the degrees are), so switching masks costs no parameters.

    Large layers skip the zero half of the masked weight: rows are split into a few groups that
    each multiply only the columns they can see (:mod:`madeflow.nn.grouped`), with the same result
    and the same gradients, of every order, as the dense masked product. Under
    ``torch.compile``, ``torch.jit`` and ``torch.func`` transforms the layer runs the dense masked
    product (:func:`madeflow.modes.is_eager`). Set ``grouped = False`` to force the
    dense product in eager mode too.

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
        self._derived: _Derived | None = None

    def _from_mask(self) -> _Derived:
        """What is derived from the current mask, dropped when the mask changes.

        It is kept with the very mask tensor it was made for and that tensor's version:
        :meth:`set_mask`, ``load_state_dict`` (which calls it) and ``.to()`` install a new tensor,
        and in-place edits (``copy_``, indexing) bump the version. The mask is derived state:
        change connectivity through :meth:`set_mask`, not through ``mask.data``.
        """
        found = self._derived
        if found is None or found.mask is not self.mask or found.version != self.mask._version:
            found = self._derived = _Derived(self.mask, self.mask._version)
        return found

    def group_plan(self) -> GroupPlan | None:
        """The grouping of the current mask (``None``: dense), rebuilt when the mask changes."""
        derived = self._from_mask()
        if not derived.planned:
            derived.plan, derived.planned = group_plan(self.mask), True
        return derived.plan

    def __getstate__(self) -> dict:
        """Pickle (and deepcopy) without what is derived from the mask: rebuilt on first use."""
        state = super().__getstate__()
        state["_derived"] = None
        return state

    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask.

        Args:
            mask: ``(out_features, in_features)`` boolean tensor.
        """
        self.mask = mask.to(device=self.weight.device, dtype=torch.bool)
        self._derived = None

    def masked_weight(self) -> torch.Tensor:
        """The weight with masked entries zeroed, ``(out_features, in_features)``.

        In eager mode a product with the mask as 0/1 numbers in the weight's dtype, kept while
        the mask tensor and its version stay (several times faster than a product with the
        boolean mask, forward and backward). Masked entries get the gradient ``g * 0``: zero,
        unless ``g`` itself overflows (then NaN, which training reports as a divergence).
        """
        if not is_eager():
            return self.weight * self.mask
        w = self.weight
        factors = self._from_mask().factors
        factor = factors.get((w.dtype, w.device))
        if factor is None:
            factor = self.mask.to(w.dtype)
            if not torch.is_inference_mode_enabled():  # inference tensors cannot be reused
                factors[(w.dtype, w.device)] = factor
        return w * factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the masked map.

        Args:
            x: ``(*batch, in_features)``.

        Returns:
            ``(*batch, out_features)``.
        """
        if self.grouped and is_eager():
            plan = self.group_plan()
            if plan is not None:
                return grouped_masked_linear(x, self.weight, self.bias, plan)
        return F.linear(x, self.masked_weight(), self.bias)


@dataclass
class _Derived:
    """What a :class:`MaskedLinear` derives from one mask tensor at one version."""

    mask: torch.Tensor
    version: int
    planned: bool = False
    plan: GroupPlan | None = None
    factors: dict[tuple[torch.dtype, torch.device], torch.Tensor] = field(default_factory=dict)
