"""The plan of the one-pass solve: a MADE in degree order, cached while its structure holds.

Everything is laid out in *degree order*: inputs by their position in the ordering, hidden units
sorted by degree (per mask; ``num_masks > 1`` is handled by the same gather), output rows grouped
by the degree of the input they parametrize. Each degree is then a contiguous row range and each
unit sees a prefix of the layer below. The plan holds those ranges, views of the weights in that
order (views of the live parameters, or buffers refilled from them at every solve) and the
schedule of blocks and stages that :mod:`madeflow.solve.engine` runs.

The plan is cached per MADE (outside the module: never in its ``state_dict``, pickles or deep
copies) and rebuilt when a mask or a parameter's storage changes; values are never cached, so no
weight change can go unseen.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Union

import torch

from madeflow.nn.made import MADE
from madeflow.nn.masks import mask_from_degrees

__all__ = ["Ordered", "Plan", "block_size", "get_plan", "schedule"]


class Ordered:
    """A weight or bias in degree order, always equal to the live parameter.

    When no reordering is needed ``value`` is a view of the parameter itself, so every in-place
    change (an optimizer step, an edit through ``.data``) is seen by construction. Otherwise
    ``value`` is a buffer that :meth:`refresh` refills from the parameter at the start of every
    solve; the plan's views into it stay valid because the buffer is never reallocated.
    """

    def __init__(
        self, param: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None = None
    ) -> None:
        self.param, self.rows, self.cols = param, _unless_identity(rows), _unless_identity(cols)
        self.value = param.detach()
        if self.rows is not None or self.cols is not None:
            self.value = self._gather().contiguous()

    def _gather(self) -> torch.Tensor:
        value = self.param.detach()
        if self.rows is not None:
            value = value.index_select(0, self.rows)
        if self.cols is not None:
            value = value.index_select(1, self.cols)
        return value

    def refresh(self) -> None:
        """Copy the parameter's current values into the buffer (a no-op for a view)."""
        if self.rows is not None or self.cols is not None:
            self.value.copy_(self._gather())


def _unless_identity(index: torch.Tensor | None) -> torch.Tensor | None:
    if index is None or torch.equal(index, torch.arange(index.numel(), device=index.device)):
        return None
    return index


@dataclass
class _Map:
    """One masked linear map in degree order.

    ``weight.value`` is ``(targets, sources)``, rows and columns sorted by degree. At stage ``s``
    the targets ``rows[s]`` (a ``(start, stop)`` range) are due, and they may read the first
    ``seen[s]`` sources. Every entry a stage reads is one the mask keeps, so the raw weight is
    used: no masked copy is needed.
    """

    weight: Ordered
    bias: Ordered | None
    rows: list[tuple[int, int]]
    seen: list[int]


@dataclass
class Plan:
    """Everything derived from the MADE's masks and parameter storage, cached between calls.

    Values are never cached: views alias the parameters and gathered copies are refilled by
    :meth:`refresh` at every solve, so the plan cannot hand back stale weights.
    """

    hidden: list[_Map]
    output: _Map
    skip: _Map | None
    context_weight: Ordered | None  # (H0, C), rows in degree order
    permutation: list[int]  # permutation[s] is the input of degree s + 1
    permutation_index: torch.Tensor  # the same as a (D,) long tensor on the weights' device
    to_input_order: torch.Tensor  # (D,) long: column of the degree-ordered x for each input
    schedules: dict = field(default_factory=dict)  # block size -> _schedule's result
    workspace: Any = None  # the last call's _Workspace, reused when the batch shape matches
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ordered(self) -> list[Ordered]:
        """Every weight and bias of the plan."""
        maps = [*self.hidden, self.output] + ([self.skip] if self.skip is not None else [])
        found = [t for m in maps for t in (m.weight, m.bias) if t is not None]
        return found + ([self.context_weight] if self.context_weight is not None else [])

    def refresh(self) -> None:
        """Bring every gathered copy up to date with the parameters."""
        for t in self.ordered():
            t.refresh()


def block_size(input_dim: int) -> int:
    """Stages per block: about ``sqrt(D)`` balances the GEMM count against the per-stage work.

    Args:
        input_dim: ``D``.

    Returns:
        A block size in ``[1, D]``.
    """
    return max(1, min(input_dim, round(math.sqrt(input_dim))))


def _ranges(sorted_degrees: torch.Tensor, stages: int) -> list[tuple[int, int]]:
    s = torch.arange(stages, device=sorted_degrees.device)
    start = torch.searchsorted(sorted_degrees, s, right=False).tolist()
    stop = torch.searchsorted(sorted_degrees, s, right=True).tolist()
    return list(zip(start, stop))


def _seen(sorted_degrees: torch.Tensor, stages: int) -> list[int]:
    s = torch.arange(stages, device=sorted_degrees.device)
    return torch.searchsorted(sorted_degrees, s, right=True).tolist()


def _masks(made: MADE) -> list[torch.Tensor]:
    layers = [*made.layers, made.output_layer]
    if made.skip_layer is not None:
        layers.append(made.skip_layer)
    return [layer.mask for layer in layers]


def _masks_follow_degrees(made: MADE) -> bool:
    """Whether the masks the forward pass uses are the ones the degrees prescribe.

    The engine derives its schedule from degrees; a mask edited by hand (not through
    ``set_mask``) would make it disagree with ``made(x)``, so such a MADE is solved naively.
    """
    below = made.input_degree
    for layer, deg in zip(made.layers, made.hidden_degrees()):
        if not torch.equal(layer.mask, mask_from_degrees(deg, below).to(layer.mask.device)):
            return False
        below = deg
    out = made.output_degrees()
    if not torch.equal(made.output_layer.mask, _strict_mask(out, below, made.output_layer.mask)):
        return False
    skip = made.skip_layer
    return skip is None or torch.equal(skip.mask, _strict_mask(out, made.input_degree, skip.mask))


def _strict_mask(out: torch.Tensor, below: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask_from_degrees(out, below, strict=True).to(like.device)


def _build_plan(made: MADE) -> Plan | None:
    if not _masks_follow_degrees(made):
        return None
    d = made.input_dim
    mult = made.output_multiplier
    device = made.output_layer.weight.device
    perm = made.get_permutation().to(device)
    in_deg = torch.arange(1, d + 1, device=device)  # degrees of the inputs, in degree order
    src_order, src_deg = perm, in_deg
    hidden: list[_Map] = []
    orders: list[torch.Tensor] = []
    for layer, deg in zip(made.layers, made.hidden_degrees()):
        deg = deg.to(device)
        order = torch.argsort(deg, stable=True)
        sorted_deg = deg[order]
        w = Ordered(layer.weight, order, src_order)
        bias = None if layer.bias is None else Ordered(layer.bias, order)
        hidden.append(_Map(w, bias, _ranges(sorted_deg, d), _seen(src_deg, d)))
        orders.append(order)
        src_order, src_deg = order, sorted_deg
    # Output rows for the input of degree s + 1 come at stage s, one per parameter.
    rows = (torch.arange(mult, device=device) * d + perm.unsqueeze(-1)).reshape(-1)
    out_ranges = [(s * mult, (s + 1) * mult) for s in range(d)]
    out = made.output_layer
    output = _Map(
        Ordered(out.weight, rows, src_order),
        None if out.bias is None else Ordered(out.bias, rows),
        out_ranges,
        _seen(src_deg, d),
    )
    skip = None
    if made.skip_layer is not None:
        sk = made.skip_layer
        skip = _Map(
            Ordered(sk.weight, rows, perm),
            None if sk.bias is None else Ordered(sk.bias, rows),
            out_ranges,
            list(range(d)),  # the output of degree s + 1 sees inputs of degree <= s
        )
    ctx = None
    if made.context_layer is not None:
        ctx = Ordered(made.context_layer.weight, orders[0])
    to_input = made.input_degree.to(device) - 1
    return Plan(hidden, output, skip, ctx, perm.tolist(), perm, to_input)


def _plan_key(made: MADE) -> tuple:
    """What the plan's structure and views depend on, compared without touching values.

    Masks by identity and version (``set_mask``, ``load_state_dict`` and ``.to()`` install new
    mask tensors; in-place edits bump the version); parameters by storage address, shape, stride,
    dtype and device (``.to()``, ``param.data = ...`` and ``load_state_dict(assign=True)`` change
    them). An address cannot be reused while the plan's views keep the old storage alive.
    """
    masks = _masks(made)
    storage = tuple(
        (p.data_ptr(), p.shape, p.stride(), p.dtype, p.device) for p in made.parameters()
    )
    return (tuple(masks), tuple(m._version for m in masks), storage)


def _same_key(a: tuple, b: tuple) -> bool:
    # Masks compare by identity: `==` on tensors would compare their values.
    same_masks = len(a[0]) == len(b[0]) and all(x is y for x, y in zip(a[0], b[0]))
    return same_masks and a[1:] == b[1:]


# Plans live outside the module (never in its state_dict, pickles or deep copies), with the key
# they were built for; ``None`` marks a MADE the engine cannot solve (hand-edited masks).
_CACHE: weakref.WeakKeyDictionary[MADE, tuple[tuple, Plan | None]] = weakref.WeakKeyDictionary()


def get_plan(made: MADE) -> Plan | None:
    """The MADE's plan, refreshed to its current weights; ``None`` if the engine cannot solve it."""
    key = _plan_key(made)
    cached = _CACHE.get(made)
    if cached is not None and _same_key(cached[0], key):
        plan = cached[1]
    else:
        plan = _build_plan(made)
        _CACHE[made] = (key, plan)
    if plan is not None:
        plan.refresh()
    return plan


_Bulk = list[tuple[int, int, int, int, torch.Tensor]]
_Stage = tuple[int, list[tuple[int, int, int, int, int, Union[torch.Tensor, None]]]]


def schedule(plan: Plan, block: int) -> list[tuple[_Bulk, list[_Stage]]]:
    """The work of every block and stage, with weight slices cut once per plan and block size.

    Each block is ``(bulk, stages)``: ``bulk`` holds ``(map, start, stop, seen, weight)`` GEMMs
    adding the sources known before the block; each stage ``(s, ops)`` holds
    ``(map, start, stop, lo, hi, weight or None)`` for the targets due at stage ``s``.
    """
    cached = plan.schedules.get(block)
    if cached is not None:
        return cached
    maps = [*plan.hidden, plan.output] + ([plan.skip] if plan.skip is not None else [])
    d = len(plan.permutation)
    blocks = []
    for s0 in range(0, d, block):
        s1 = min(d, s0 + block)
        bulk: _Bulk = []
        lows = []
        for j, m in enumerate(maps):
            lo = m.seen[s0 - 1] if s0 else 0
            lows.append(lo)
            r0, r1 = m.rows[s0][0], m.rows[s1 - 1][1]
            if lo and r1 > r0:
                bulk.append((j, r0, r1, lo, m.weight.value[r0:r1, :lo]))
        stages: list[_Stage] = []
        for s in range(s0, s1):
            ops = []
            for j, (m, lo) in enumerate(zip(maps, lows)):
                r0, r1 = m.rows[s]
                if r1 > r0:
                    hi = m.seen[s]
                    w = m.weight.value[r0:r1, lo:hi] if hi > lo else None
                    ops.append((j, r0, r1, lo, hi, w))
            stages.append((s, ops))
        blocks.append((bulk, stages))
    plan.schedules[block] = blocks
    return blocks
