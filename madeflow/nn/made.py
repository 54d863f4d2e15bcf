"""MADE: the masked autoregressive conditioner, a drop-in for Pyro's ``AutoRegressiveNN``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
from torch import nn

from madeflow.nn.linear import MaskedLinear
from madeflow.nn.masks import (
    as_permutation,
    check_mask_buffers,
    connectivity,
    input_degrees,
    mask_from_degrees,
)
from madeflow.nn.masks import hidden_degrees as draw_hidden_degrees
from madeflow.validation import check_context, check_int, check_points, check_positive_ints

__all__ = ["MADE"]

Params = Union[torch.Tensor, tuple[torch.Tensor, ...]]


class MADE(nn.Module):
    r"""Masked Autoencoder for Distribution Estimation, as an autoregressive conditioner.

    Each output ``d`` (one per entry of ``param_dims``) depends only on the inputs that come before
    ``d`` in the ordering, and on all of the context:

    .. math:: \theta_d = f_d(x_{\pi(1)}, \dots, x_{\pi(k-1)}, c), \qquad \pi(k) = d.

    Calling it returns what :class:`pyro.nn.AutoRegressiveNN` (or
    :class:`pyro.nn.ConditionalAutoRegressiveNN` when ``context_dim > 0``) returns for the same
    ``param_dims``, so it plugs into Pyro's autoregressive transforms unchanged.

    Hidden units are kept sorted by degree inside each layer when ``num_masks == 1`` (a free choice
    that changes no function); the fast inversion engine relies on it. With several masks each
    mask draws its own degrees per unit, as in the paper (sorting them would tie every unit to one
    quantile and remove most of the connectivity diversity).

    Args:
        input_dim: ``D``, the number of inputs.
        hidden_dims: Widths of the hidden layers (at least one). Widths below ``D - 1`` are allowed;
            a warning says when some output cannot see all of its predecessors.
        param_dims: Output parameters per input, as in Pyro: ``p == 1`` gives a
            ``(*batch, D)`` tensor, ``p > 1`` a ``(*batch, p, D)`` one.
        context_dim: Size of the conditioning vector (degree 0: every hidden unit and every output,
            the first one included, sees it). ``0`` for an unconditional MADE.
        permutation: The ordering: ``permutation[k]`` is the input that comes ``k``-th. ``None``
            for the identity, ``"random"`` for a seeded random ordering (a new one per mask), a
            sequence/tensor of ints (every mask), or a ``(K, D)`` nested sequence/tensor, one
            ordering per mask (e.g. from :func:`madeflow.nn.orderings.covering_orderings`).
        skip_connections: Add the paper's direct input-to-output connections (strictly masked).
        hidden_degrees: ``"equal"`` (deterministic, evenly spread) or ``"random"`` (the paper's
            uniform draw in ``[min degree below, D - 1]``).
        activation: An ``nn.Module`` class, instance, or callable applied between layers.
        residual: Use masked residual layers ``h + W act(h)`` after the first hidden layer (all
            hidden widths must be equal).
        num_masks: Number of masks for connectivity- and order-agnostic training; cycle them with
            :meth:`next_mask`. ``None``: the number of orderings given (1 unless ``permutation``
            has several rows).
        seed: Seed of the masks (orderings and random degrees); ``None`` draws one from torch's
            global generator, so ``torch.manual_seed`` makes construction reproducible.

    Example:
        >>> made = MADE(5, [40, 40])
        >>> mean, log_scale = made(torch.randn(3, 5))
        >>> tuple(mean.shape)
        (3, 5)

    References:
        Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution Estimation.
        ICML 2015.
    """

    permutation: torch.Tensor
    input_degree: torch.Tensor
    mask_index: torch.Tensor

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int] = (1, 1),
        context_dim: int = 0,
        permutation: str | Sequence[int] | torch.Tensor | None = None,
        skip_connections: bool = False,
        hidden_degrees: str = "equal",
        activation: type[nn.Module] | nn.Module | Callable[[torch.Tensor], torch.Tensor] = nn.ReLU,
        residual: bool = False,
        num_masks: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        hidden_dims = check_positive_ints(hidden_dims, "hidden_dims")
        param_dims = check_positive_ints(param_dims, "param_dims")
        check_int(input_dim, "input_dim", minimum=1)
        check_int(context_dim, "context_dim", minimum=0)
        num_masks = _count_masks(permutation, num_masks)
        if hidden_degrees not in ("equal", "random"):
            raise ValueError(f"hidden_degrees must be 'equal' or 'random', got {hidden_degrees!r}")
        if residual and len(set(hidden_dims)) != 1:
            raise ValueError(f"residual=True needs equal hidden widths, got {list(hidden_dims)}")

        self.input_dim = input_dim
        self.context_dim = context_dim
        self.hidden_dims = tuple(hidden_dims)
        self.param_dims = tuple(param_dims)
        self.output_multiplier = sum(param_dims)
        self.count_params = len(param_dims)
        self.all_ones = all(p == 1 for p in param_dims)
        self.skip_connections = skip_connections
        self.hidden_degree_mode = hidden_degrees
        self.residual = residual
        self.num_masks = num_masks
        self.activation = activation() if isinstance(activation, type) else activation

        if seed is None:
            seed = int(torch.randint(0, 2**62, (), device="cpu").item())
        self.seed = seed
        # Masks are drawn on the CPU with their own generator (the same masks whatever the
        # default device), then kept where the module's tensors are created.
        home = torch.empty(0).device
        with torch.device("cpu"):
            perms, degrees = self._draw_masks(permutation, seed)
        perms, degrees = perms.to(home), [deg.to(home) for deg in degrees]
        self.register_buffer("permutations", perms)
        for layer, deg in enumerate(degrees):
            self.register_buffer(f"degrees_{layer}", deg)
        self.register_buffer("mask_index", torch.zeros((), dtype=torch.int64))
        # Derived from the buffers above; rebuilt on load instead of being saved.
        self.register_buffer("permutation", perms[0].clone(), persistent=False)
        self.register_buffer("input_degree", input_degrees(perms[0]), persistent=False)

        widths = (input_dim, *hidden_dims)
        self.layers = nn.ModuleList(
            MaskedLinear(widths[i], widths[i + 1]) for i in range(len(hidden_dims))
        )
        self.context_layer = (
            nn.Linear(context_dim, hidden_dims[0], bias=False) if context_dim else None
        )
        self.output_layer = MaskedLinear(hidden_dims[-1], input_dim * self.output_multiplier)
        self.skip_layer = (
            MaskedLinear(input_dim, input_dim * self.output_multiplier, bias=False)
            if skip_connections
            else None
        )
        self._apply_mask(0)
        self._warn_blind_outputs()
        # Loaded orderings and degrees are checked before they are copied in (a repeated index
        # would leave input degrees uninitialised), then the masks are rebuilt from them.
        self._register_load_state_dict_pre_hook(_check_loaded_masks, with_module=True)
        self.register_load_state_dict_post_hook(_reapply_mask_after_load)

    # ------------------------------------------------------------------ masks
    def _draw_masks(
        self, permutation: str | Sequence[int] | torch.Tensor | None, seed: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """All orderings ``(K, D)`` and per-layer degrees ``(K, H_l)`` of the mask schedule."""
        gen = torch.Generator().manual_seed(seed)
        d, k = self.input_dim, self.num_masks
        if isinstance(permutation, str):
            if permutation != "random":
                raise ValueError(
                    f"permutation must be None, 'random' or a sequence, got {permutation!r}"
                )
            perms = torch.stack([torch.randperm(d, generator=gen) for _ in range(k)])
        elif permutation is None:
            perms = torch.arange(d).expand(k, d).clone()
        elif _rows(permutation) > 1:  # one ordering per mask (_count_masks checked the count)
            perms = torch.stack([as_permutation(row, d) for row in torch.as_tensor(permutation)])
        else:
            perms = as_permutation(permutation, d).expand(k, d).clone()

        first_low = 0 if self.context_dim else min(1, d - 1)
        layers: list[list[torch.Tensor]] = [[] for _ in self.hidden_dims]
        for _ in range(k):
            low = first_low
            for layer, width in enumerate(self.hidden_dims):
                if self.residual and layer > 0:
                    deg = layers[0][-1]  # the identity path needs equal degrees
                else:
                    deg = draw_hidden_degrees(width, low, d - 1, self.hidden_degree_mode, gen)
                    if k == 1:
                        deg = torch.sort(deg).values
                    elif self.hidden_degree_mode == "equal":
                        deg = deg[torch.randperm(width, generator=gen)]
                layers[layer].append(deg)
                low = int(deg.min())
        return perms, [torch.stack(per_mask) for per_mask in layers]

    def hidden_degrees(self) -> list[torch.Tensor]:
        """Degrees of each hidden layer under the current mask, each ``(H_l,)``."""
        k = self.mask_index
        return [getattr(self, f"degrees_{layer}")[k] for layer in range(len(self.hidden_dims))]

    def output_degrees(self) -> torch.Tensor:
        """Degrees of the output rows, ``(P * D,)``: row ``p * D + i`` is input ``i``."""
        return self.input_degree.repeat(self.output_multiplier)

    def _apply_mask(self, index: int) -> None:
        self.mask_index.fill_(index)
        perm = self.permutations[index]
        if self.permutation.shape == perm.shape and self.permutation.device == perm.device:
            self.permutation.copy_(perm)  # in place: Pyro's transforms keep this very tensor
        else:
            self.permutation = perm.clone()
        self.input_degree = input_degrees(perm)
        below = self.input_degree
        for layer, deg in zip(self.layers, self.hidden_degrees()):
            layer.set_mask(mask_from_degrees(deg, below))
            below = deg
        out = self.output_degrees()
        self.output_layer.set_mask(mask_from_degrees(out, below, strict=True))
        if self.skip_layer is not None:
            self.skip_layer.set_mask(mask_from_degrees(out, self.input_degree, strict=True))

    def blind_outputs(self, index: int | None = None) -> torch.Tensor:
        """Which outputs cannot see all of their predecessors (or the context) under a mask.

        Args:
            index: Mask index; the current mask when ``None``.

        Returns:
            ``(D,)`` boolean, indexed by input.
        """
        k = int(self.mask_index) if index is None else index
        inp = input_degrees(self.permutations[k])
        layers = [getattr(self, f"degrees_{i}")[k] for i in range(len(self.hidden_dims))]
        reach = connectivity(inp, layers, self.skip_connections)
        needed = inp - 1
        blind = (reach < needed) & (needed > 0)
        if self.context_dim:
            # The context reaches an output only through hidden units, never through skips.
            blind |= connectivity(inp, layers, skip=False) < 0
        return blind

    def _warn_blind_outputs(self) -> None:
        blind = torch.stack([self.blind_outputs(k) for k in range(self.num_masks)])
        if blind.any():
            in_masks = f" in {int(blind.any(1).sum())} of {self.num_masks} masks" * (
                self.num_masks > 1
            )
            warnings.warn(
                f"MADE: {int(blind.any(0).sum())} of {self.input_dim} outputs cannot see all of "
                f"their predecessors{' or the context' if self.context_dim else ''}{in_masks} "
                f"(hidden widths {list(self.hidden_dims)} for input_dim={self.input_dim}); their "
                "conditionals are restricted. Widen the hidden layers or use skip_connections.",
                stacklevel=3,
            )

    def set_mask(self, index: int) -> None:
        """Switch to mask ``index`` of the schedule (``0 <= index < num_masks``)."""
        if not 0 <= index < self.num_masks:
            raise IndexError(f"mask index {index} out of range for num_masks={self.num_masks}")
        self._apply_mask(index)

    def next_mask(self) -> int:
        """Move to the next mask of the seeded schedule (cycling); returns its index."""
        index = (int(self.mask_index) + 1) % self.num_masks
        if self.num_masks > 1:
            self._apply_mask(index)
        return index

    def get_permutation(self) -> torch.Tensor:
        """The current ordering, ``(D,)``: ``permutation[k]`` is the input that comes ``k``-th."""
        return self.permutation

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> Params:
        """Compute the autoregressive parameters.

        Args:
            x: ``(*batch, input_dim)``.
            context: ``(*batch, context_dim)`` (broadcastable against ``x``'s batch), required
                exactly when ``context_dim > 0``.

        Returns:
            As Pyro: a ``(*batch, D)`` tensor when ``param_dims == (1,)``, a ``(*batch, p, D)``
            tensor when there is one entry ``p > 1``, else a tuple with one entry per param dim,
            ``(*batch, D)`` each when all are 1 and ``(*batch, p, D)`` otherwise.
        """
        self.check_inputs(x, context)
        first, *rest = self.layers  # not layers[1:]: slicing builds a new ModuleList each call
        h = first(x)
        if self.context_layer is not None:
            h = h + self.context_layer(context.to(h.dtype))
        for layer in rest:
            a = layer(self.activation(h))
            h = h + a if self.residual else a
        out = self.output_layer(self.activation(h))
        if self.skip_layer is not None:
            out = out + self.skip_layer(x)
        return self.split_params(out)

    def split_params(self, out: torch.Tensor, num_dims: int | None = None) -> Params:
        """Shape a raw output as Pyro does.

        Args:
            out: ``(*batch, output_multiplier * n)``, row ``p * n + i`` holding parameter ``p`` of
                dimension ``i``.
            num_dims: ``n``, the number of input dimensions covered (default ``input_dim``; the
                sequential solve splits one dimension at a time).

        Returns:
            What :meth:`forward` returns for ``n`` dimensions.
        """
        if self.output_multiplier == 1:
            return out
        out = out.unflatten(-1, (self.output_multiplier, num_dims or self.input_dim))
        if self.count_params == 1:
            return out
        if self.all_ones:
            return out.unbind(-2)
        return tuple(out.split(self.param_dims, dim=-2))

    def check_inputs(self, x: torch.Tensor, context: torch.Tensor | None = None) -> None:
        """Raise an error naming the problem if ``x`` or ``context`` do not fit.

        Shapes and types only: a network maps NaN to NaN, so values are not checked.

        Args:
            x: ``(*batch, input_dim)``.
            context: ``(*batch, context_dim)``, required exactly when ``context_dim > 0``.

        Raises:
            TypeError: If ``x`` or ``context`` is not a tensor.
            ValueError: On a wrong last dimension or a missing/unexpected context.
        """
        check_points(x, self.input_dim, continuous=False, finite=False)
        check_context(context, self.context_dim, type(self).__name__, finite=False)

    def extra_repr(self) -> str:
        """Summary shown by ``repr``."""
        return (
            f"input_dim={self.input_dim}, hidden_dims={list(self.hidden_dims)}, "
            f"param_dims={list(self.param_dims)}, context_dim={self.context_dim}, "
            f"num_masks={self.num_masks}, residual={self.residual}, "
            f"hidden_degrees={self.hidden_degree_mode!r}"
        )


def _rows(permutation: str | Sequence[int] | torch.Tensor | None) -> int:
    """The number of orderings in a ``(K, D)`` permutation (``1`` for anything else)."""
    if permutation is None or isinstance(permutation, str):
        return 1
    try:
        p = torch.as_tensor(permutation)
    except (TypeError, ValueError, RuntimeError):
        return 1  # as_permutation names the problem
    return p.shape[0] if p.dim() == 2 else 1


def _count_masks(
    permutation: str | Sequence[int] | torch.Tensor | None, num_masks: int | None
) -> int:
    """``num_masks``, defaulting to (and checked against) the number of orderings given."""
    rows = _rows(permutation)
    if num_masks is None:
        return rows
    check_int(num_masks, "num_masks", minimum=1)
    if rows > 1 and num_masks != rows:
        raise ValueError(
            f"permutation holds {rows} orderings (one per mask) but num_masks={num_masks}; "
            "pass as many orderings as masks, or leave num_masks out"
        )
    return num_masks


def _check_loaded_masks(
    module: MADE, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Load pre-hook: refuse mask buffers no MADE of this shape could have saved (ValueError)."""
    check_mask_buffers(
        state_dict,
        prefix,
        num_masks=module.num_masks,
        input_dim=module.input_dim,
        hidden_dims=module.hidden_dims,
        residual=module.residual,
    )


def _reapply_mask_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    # Masks are derived from the loaded degrees and mask index, not saved themselves.
    module._apply_mask(int(module.mask_index))
