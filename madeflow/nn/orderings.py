r"""Orderings for exact conditioning: which masks put a set of inputs first, and how to train some.

A MADE factorizes a density in the order of its ordering ``permutation`` (``permutation[k]`` is
the input that comes ``k``-th). If the observed inputs :math:`O` are its first :math:`|O|`
entries, the density's first :math:`|O|` conditionals multiply to the exact marginal
:math:`p(x_O)` and the remaining ones are the exact conditional :math:`p(x_{\bar O} \mid x_O)`.
With several masks (order-agnostic training), every mask whose ordering starts with :math:`O` in
some order can condition on :math:`O`: :func:`covering_masks` finds them, and
:func:`covering_orderings` builds orderings that start with subsets a user names, to train with
``MADE(..., permutation=covering_orderings(...))`` (one ordering per mask).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from madeflow.validation import check_int

__all__ = ["as_subset", "covering_masks", "covering_orderings", "uncovered_message"]


def as_subset(subset: torch.Tensor | Iterable[int], input_dim: int) -> torch.Tensor:
    """A subset of the inputs as a ``(D,)`` boolean tensor.

    Args:
        subset: A ``(D,)`` boolean tensor, or a collection of input indices.
        input_dim: ``D``.

    Returns:
        ``(D,)`` bool on the CPU, ``True`` on the subset.

    Raises:
        ValueError: For indices outside ``[0, D)``, repeated indices, or a boolean tensor of
            another shape.

    Example:
        >>> as_subset([0, 2], 4).tolist()
        [True, False, True, False]
    """
    if isinstance(subset, torch.Tensor) and subset.dtype == torch.bool:
        if subset.shape != (input_dim,):
            raise ValueError(
                f"a boolean subset must have shape ({input_dim},), got {tuple(subset.shape)}"
            )
        return subset.detach().cpu()
    index = torch.as_tensor(list(subset) if not isinstance(subset, torch.Tensor) else subset)
    index = index.detach().cpu().reshape(-1)
    if index.numel() and (index.dtype.is_floating_point or index.dtype.is_complex):
        raise ValueError(f"subset indices must be integers, got dtype {index.dtype}")
    index = index.to(torch.int64)
    if ((index < 0) | (index >= input_dim)).any():
        raise ValueError(f"subset indices must lie in [0, {input_dim - 1}], got {index.tolist()}")
    if torch.unique(index).numel() != index.numel():
        raise ValueError(f"subset indices repeat: {index.tolist()}")
    out = torch.zeros(input_dim, dtype=torch.bool)
    out[index] = True
    return out


def covering_masks(permutations: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Which orderings put every observed input before every unobserved one.

    Args:
        permutations: ``(K, D)`` (or ``(D,)``), one ordering per mask.
        observed: ``(D,)`` bool.

    Returns:
        ``(K,)`` bool (``()`` for a single ``(D,)`` ordering).

    Example:
        >>> perms = torch.tensor([[0, 1, 2], [2, 0, 1], [1, 2, 0]])
        >>> covering_masks(perms, torch.tensor([True, False, True])).tolist()
        [False, True, False]
    """
    at = observed.to(permutations.device)[permutations]  # is the j-th input observed?
    # O comes first exactly when the run of observed inputs at the start is as long as O.
    return at.long().cumprod(-1).sum(-1).eq(observed.sum().to(at.device))


def covering_orderings(
    input_dim: int,
    subsets: torch.Tensor | Iterable[torch.Tensor | Iterable[int]],
    per_subset: int = 1,
    num_random: int = 0,
    shuffle: bool = True,
    seed: int | None = None,
) -> torch.Tensor:
    r"""Orderings, one per mask, that put each named subset of the inputs first.

    For every distinct subset :math:`S`, in the order given (duplicates are merged into their
    first occurrence), ``per_subset`` orderings list
    :math:`S` first and the other inputs after; within each of the two blocks the order is drawn
    at random (``shuffle=True``, so the masks also differ in the order they factorize :math:`S`
    and its complement) or kept ascending. ``num_random`` fully random orderings follow. Pass
    the result as ``MADE(..., permutation=...)`` (or to an estimator): the MADE gets one mask
    per row and can then condition exactly on every named subset (and on every prefix of each
    ordering).

    Args:
        input_dim: ``D``.
        subsets: A ``(N, D)`` or ``(D,)`` boolean tensor (each row a subset, e.g. the observed
            patterns of a data set), or an iterable of subsets, each a ``(D,)`` boolean tensor or
            a collection of input indices.
        per_subset: Orderings per distinct subset (``>= 1``).
        num_random: Extra uniformly random orderings (``>= 0``).
        shuffle: Shuffle within each block (``False``: ascending input index).
        seed: Seed of the shuffles; ``None`` draws one from torch's global generator.

    Returns:
        ``(K, D)`` int64, ``K = per_subset * (number of distinct subsets) + num_random``: rows
        ``i * per_subset`` to ``(i + 1) * per_subset - 1`` cover the ``i``-th distinct subset.

    Raises:
        ValueError: For malformed subsets or counts, or when ``K`` would be 0.

    Example:
        >>> covering_orderings(4, [[2, 3]], num_random=1, shuffle=False, seed=0)[0].tolist()
        [2, 3, 0, 1]
        >>> tuple(covering_orderings(6, torch.eye(6, dtype=torch.bool), seed=0).shape)
        (6, 6)
    """
    check_int(input_dim, "input_dim", minimum=1)
    check_int(per_subset, "per_subset", minimum=1)
    check_int(num_random, "num_random", minimum=0)
    if isinstance(subsets, torch.Tensor) and subsets.dtype == torch.bool:
        if subsets.dim() not in (1, 2) or subsets.shape[-1] != input_dim:
            raise ValueError(
                f"a boolean tensor of subsets must have shape (N, {input_dim}) or "
                f"({input_dim},), got {tuple(subsets.shape)}"
            )
        stacked = subsets.detach().cpu().reshape(-1, input_dim)
    elif isinstance(subsets, torch.Tensor):
        raise ValueError(
            f"a tensor of subsets must be boolean (N, {input_dim}), got dtype {subsets.dtype}"
        )
    else:
        rows = [as_subset(s, input_dim) for s in subsets]
        stacked = torch.stack(rows) if rows else torch.zeros(0, input_dim, dtype=torch.bool)
    distinct = _first_occurrences(stacked)
    count = per_subset * len(distinct) + num_random
    if count == 0:
        raise ValueError("covering_orderings needs at least one subset or num_random >= 1")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), device="cpu").item())
    gen = torch.Generator().manual_seed(seed)

    def block(members: torch.Tensor) -> torch.Tensor:
        idx = torch.nonzero(members).flatten()
        return idx[torch.randperm(idx.numel(), generator=gen)] if shuffle else idx

    out = [torch.cat([block(mask), block(~mask)]) for mask in distinct for _ in range(per_subset)]
    out += [torch.randperm(input_dim, generator=gen) for _ in range(num_random)]
    return torch.stack(out)


def _first_occurrences(rows: torch.Tensor) -> torch.Tensor:
    """The distinct rows of ``(N, D)``, in the order of their first occurrence."""
    if rows.shape[0] == 0:
        return rows
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((unique.shape[0],), rows.shape[0], dtype=torch.int64)
    first = first.scatter_reduce(0, inverse, torch.arange(rows.shape[0]), "amin")
    return unique[first.argsort()]


def _short(values: list[int], limit: int = 12) -> str:
    if len(values) <= limit:
        return str(values)
    return "[" + ", ".join(map(str, values[:limit])) + f", ... ({len(values)} in all)]"


def uncovered_message(owner: str, permutations: torch.Tensor, observed: torch.Tensor) -> str:
    """The error message for a subset that no mask puts first: what would work, how to train it.

    Args:
        owner: The model's name.
        permutations: ``(K, D)`` orderings of the model's masks.
        observed: ``(D,)`` bool.

    Returns:
        A message naming the observed inputs, the masks' orderings and the remedy.
    """
    obs = torch.nonzero(observed.cpu()).flatten().tolist()
    rest = torch.nonzero(~observed.cpu()).flatten().tolist()
    m, d, k = len(obs), observed.numel(), permutations.shape[0]
    starts = "; ".join(_short(p[:m].tolist(), 8) for p in permutations[:4].cpu())
    more = f"; ... ({k} masks)" if k > 4 else ""
    return (
        f"{owner} cannot condition exactly on the observed inputs {_short(obs)}: no mask's "
        f"ordering starts with them (the first {m} inputs of the {k} mask ordering(s) are "
        f"{starts}{more}). An exact conditional needs an ordering whose first {m} entries are "
        f"these inputs in any order, e.g. {_short(obs + rest)}: build the model with that "
        f"permutation, or train one mask per subset you need with "
        f"permutation=madeflow.covering_orderings({d}, subsets) (each subset first, the rest "
        "after)."
    )
