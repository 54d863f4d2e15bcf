"""Degrees and masks of a MADE, as pure functions of integer degrees.

A MADE gives every input a degree in ``1..D`` (its position in the ordering) and every hidden unit
a degree. A hidden unit of degree ``m`` may see units (or inputs) of the layer below whose degree is
``<= m``; the output for the input of degree ``d`` may see last-layer units of degree ``< d``. These
two rules are all there is to the autoregressive property; everything here derives from them.

Context inputs have degree 0, so every hidden unit sees them.

References:
    Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution Estimation.
    ICML 2015, arXiv:1502.03509.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "as_permutation",
    "check_mask_buffers",
    "connectivity",
    "hidden_degrees",
    "input_degrees",
    "mask_from_degrees",
]


def as_permutation(permutation: Sequence[int] | torch.Tensor, input_dim: int) -> torch.Tensor:
    """Validate a user's ordering and return it as a ``LongTensor``.

    Args:
        permutation: ``permutation[k]`` is the input that comes ``k``-th; a sequence of ints or an
            integer tensor of shape ``(input_dim,)``.
        input_dim: The number of inputs ``D``.

    Returns:
        The permutation, shape ``(input_dim,)``, dtype ``int64``, on the CPU.

    Raises:
        ValueError: If it is not a permutation of ``range(input_dim)``.
    """
    p = torch.as_tensor(permutation)
    if p.dtype.is_floating_point or p.dtype == torch.bool or p.dtype.is_complex:
        raise ValueError(f"permutation must hold integers, got dtype {p.dtype}")
    p = p.detach().to(device="cpu", dtype=torch.int64).reshape(-1)
    if p.numel() != input_dim:
        raise ValueError(f"permutation must have input_dim={input_dim} entries, got {p.numel()}")
    bad = (p < 0) | (p >= input_dim)
    if bad.any():
        raise ValueError(
            f"permutation entries must lie in [0, {input_dim - 1}], got {p[bad].tolist()}"
        )
    counts = torch.bincount(p, minlength=input_dim)
    if (counts != 1).any():
        dup = torch.nonzero(counts > 1).flatten().tolist()
        raise ValueError(f"permutation is not a permutation of range({input_dim}): repeats {dup}")
    return p


def input_degrees(permutation: torch.Tensor) -> torch.Tensor:
    """Degrees of the inputs for an ordering.

    Args:
        permutation: ``(D,)``, ``permutation[k]`` is the input that comes ``k``-th.

    Returns:
        ``(D,)`` int64, ``degrees[permutation[k]] == k + 1``.
    """
    degrees = torch.empty_like(permutation)
    degrees[permutation] = torch.arange(1, permutation.numel() + 1, device=permutation.device)
    return degrees


def hidden_degrees(
    width: int,
    low: int,
    high: int,
    mode: str = "equal",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Degrees of one hidden layer, in ``[low, high]``.

    ``"equal"`` spreads the ``high - low + 1`` levels evenly and deterministically over the units
    (every level appears when ``width`` allows). ``"random"`` draws each unit's degree uniformly,
    as in the MADE paper, where ``low`` is the smallest degree of the layer below (so no unit is
    dead).

    Args:
        width: Number of units.
        low: Smallest allowed degree.
        high: Largest allowed degree (``D - 1``); raised to ``low`` if smaller.
        mode: ``"equal"`` or ``"random"``.
        generator: Random source for ``"random"``.

    Returns:
        ``(width,)`` int64 degrees, sorted ascending for ``"equal"``, unsorted for ``"random"``.
    """
    high = max(high, low)
    levels = high - low + 1
    if mode == "equal":
        return low + torch.arange(width, device="cpu") * levels // width
    if mode == "random":
        return torch.randint(low, high + 1, (width,), generator=generator, device="cpu")
    raise ValueError(f"hidden_degrees must be 'equal' or 'random', got {mode!r}")


def mask_from_degrees(
    out_degrees: torch.Tensor, in_degrees: torch.Tensor, strict: bool = False
) -> torch.Tensor:
    """The connectivity mask between two layers.

    Args:
        out_degrees: ``(out_features,)`` degrees of the receiving units.
        in_degrees: ``(in_features,)`` degrees of the sending units.
        strict: ``True`` for output layers (``out > in``), ``False`` for hidden layers
            (``out >= in``).

    Returns:
        ``(out_features, in_features)`` boolean mask, laid out like ``nn.Linear.weight``.
    """
    o, i = out_degrees.unsqueeze(-1), in_degrees.unsqueeze(0)
    return o > i if strict else o >= i


def connectivity(
    input_degree: torch.Tensor,
    layer_degrees: Sequence[torch.Tensor],
    skip: bool = False,
) -> torch.Tensor:
    """For each output, the highest input degree it can reach through the network.

    Because masks connect a unit to *every* lower-or-equal unit below, the inputs a unit reaches
    are always a prefix ``1..r`` of the ordering, so one number per unit describes them. Output
    ``d`` sees all of its predecessors exactly when its reach is ``d - 1``.

    Args:
        input_degree: ``(D,)`` degrees of the inputs.
        layer_degrees: Degrees of each hidden layer, first to last.
        skip: Whether direct input-to-output connections exist.

    Returns:
        ``(D,)`` reach of the output of each input (``-1`` where the output sees no hidden unit,
        ``0`` where it sees only units that see no input).
    """
    # A first-layer unit of degree m sees exactly the inputs of degree <= m.
    prev_deg, reach = layer_degrees[0], layer_degrees[0].clone()
    for deg in layer_degrees[1:]:
        reach = _best_below(deg, prev_deg, reach, strict=False)
        prev_deg = deg
    out = _best_below(input_degree, prev_deg, reach, strict=True)
    if skip:
        out = torch.maximum(out, input_degree - 1)
    return out


def _best_below(
    query: torch.Tensor, degrees: torch.Tensor, reach: torch.Tensor, strict: bool
) -> torch.Tensor:
    """Max of ``reach`` over units whose degree is ``<= query`` (``< query`` if strict)."""
    order = torch.argsort(degrees)
    sorted_deg, running = degrees[order], torch.cummax(reach[order], 0).values
    idx = torch.searchsorted(sorted_deg, query, right=not strict) - 1
    result = running[idx.clamp(min=0)]
    return torch.where(idx >= 0, result, torch.full_like(result, -1))


def check_mask_buffers(
    state_dict: Mapping[str, Any],
    prefix: str,
    num_masks: int,
    input_dim: int,
    hidden_dims: Sequence[int],
    residual: bool = False,
) -> None:
    """Refuse saved MADE buffers that no MADE of this shape could have written.

    ``permutations`` must be ``(num_masks, input_dim)`` integer rows that are permutations (a
    repeated index would leave an input without a degree), each ``degrees_l``
    ``(num_masks, hidden_dims[l])`` integers in ``[0, input_dim - 1]`` (sorted along each row
    with one mask, as the fast inversion expects; equal across layers for a residual MADE),
    ``mask_index`` an integer scalar in ``[0, num_masks)``. Missing keys are left to
    ``load_state_dict``'s own check.

    Args:
        state_dict: What is being loaded.
        prefix: The MADE's key prefix in it (``"transforms.0.nn."``).
        num_masks: ``K``.
        input_dim: ``D``.
        hidden_dims: Hidden widths.
        residual: Whether the MADE is residual.

    Raises:
        ValueError: Naming the buffer and what is wrong with it.
    """
    k, d = num_masks, input_dim

    def bad(name: str, what: str) -> ValueError:
        return ValueError(
            f"cannot load {prefix}{name}: {what}; the checkpoint is damaged or belongs to "
            "another model"
        )

    def integers(name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        t = state_dict.get(prefix + name)
        if t is None:
            return None
        if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype.is_complex:
            raise bad(name, f"expected an integer tensor, got {getattr(t, 'dtype', type(t))}")
        if t.dtype == torch.bool:
            raise bad(name, "expected an integer tensor, got torch.bool")
        if tuple(t.shape) != shape:
            raise bad(name, f"expected shape {shape}, got {tuple(t.shape)}")
        return t.detach().to("cpu", torch.int64)

    perms = integers("permutations", (k, d))
    if perms is not None:
        expected = torch.arange(d, device="cpu")
        for row, perm in enumerate(perms):
            if not torch.equal(torch.sort(perm).values, expected):
                counts = torch.bincount(perm.clamp(0, d), minlength=d + 1)[:d]
                what = (
                    f"entries outside [0, {d - 1}]"
                    if ((perm < 0) | (perm >= d)).any()
                    else f"input(s) {torch.nonzero(counts > 1).flatten().tolist()} repeated"
                )
                raise bad("permutations", f"row {row} is not a permutation of range({d}) ({what})")
    first = None
    for layer, width in enumerate(hidden_dims):
        deg = integers(f"degrees_{layer}", (k, width))
        if deg is None:
            continue
        if ((deg < 0) | (deg > max(d - 1, 0))).any():
            raise bad(f"degrees_{layer}", f"degrees must lie in [0, {max(d - 1, 0)}]")
        if k == 1 and (deg[0, 1:] < deg[0, :-1]).any():
            raise bad(f"degrees_{layer}", "degrees must be sorted with a single mask")
        if residual and first is not None and not torch.equal(deg, first):
            raise bad(f"degrees_{layer}", "a residual MADE has equal degrees in every layer")
        first = deg if first is None else first
    index = integers("mask_index", ())
    if index is not None and not 0 <= int(index) < k:
        raise bad("mask_index", f"{int(index)} is not in [0, {k}) (num_masks={k})")
