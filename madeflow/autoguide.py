"""AutoIAF: a Pyro autoguide whose posterior is a diagonal Normal reshaped by IAF layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import AffineTransform
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroParam
from torch import nn

from madeflow.nn.made import MADE
from madeflow.transforms.affine import IAFTransform

__all__ = ["AutoIAF"]


class AutoIAF(AutoContinuous):
    r"""Automatic guide: standard normal noise, ``num_transforms`` IAF layers, then an affine map.

    All latent sites are mapped to one unconstrained vector ``z`` of size ``D`` (as in every
    :class:`~pyro.infer.autoguide.AutoContinuous` guide) and

    .. math:: \varepsilon \sim \mathcal N(0, I), \quad
        z = \mathrm{loc} + \mathrm{scale} \odot (f_K \circ \dots \circ f_1)(\varepsilon),

    with :class:`~madeflow.transforms.IAFTransform` layers :math:`f_k` (orderings reversed every
    other layer). Sampling and scoring the guide's own samples cost one MADE pass per layer.

    Initialisation makes the guide start *exactly* where :class:`~pyro.infer.autoguide.AutoNormal`
    starts: ``loc`` from ``init_loc_fn``, ``scale = init_scale``, and each MADE's output layer is
    zeroed so every IAF layer is the identity (``m = 0``, ``s = 0``). The layers then learn the
    non-Gaussian shape. The default update is the plain (non-gated) one, ``x = m + e^{s} u``: the
    zero initialisation already gives the near-identity start that the gated ("stable") update
    was designed for, the clamp of ``s`` to ``[-5, 3]`` keeps it stable, and unlike the gate it
    can expand as well as contract. ``stable=True`` is available.

    Args:
        model: A Pyro model with continuous latents.
        num_transforms: Number of IAF layers.
        hidden_dims: MADE widths; default ``[3 * D + 1]`` (Pyro's default).
        init_loc_fn: Per-site initialisation of ``loc`` (Pyro's ``init_to_*``).
        init_scale: Initial ``scale`` of every unconstrained coordinate.
        stable: Use the gated IAF update.
        **made_kwargs: Passed to every :class:`~madeflow.MADE`.

    Example:
        >>> import pyro
        >>> def model():
        ...     pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.LogNormal(0.0, 1.0))
        >>> guide = AutoIAF(model)
        >>> sorted(guide())
        ['a', 'b']

    References:
        Kingma et al. Improving Variational Inference with Inverse Autoregressive Flow. NeurIPS
        2016. Kucukelbir et al. Automatic Differentiation Variational Inference. JMLR 2017.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        num_transforms: int = 2,
        hidden_dims: Sequence[int] | None = None,
        init_loc_fn: Callable[..., Any] = init_to_median,
        init_scale: float = 0.1,
        stable: bool = False,
        **made_kwargs: Any,
    ) -> None:
        if isinstance(num_transforms, bool) or not isinstance(num_transforms, int):
            raise ValueError(f"num_transforms must be a positive integer, got {num_transforms!r}")
        if num_transforms < 1:
            raise ValueError(f"num_transforms must be a positive integer, got {num_transforms!r}")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale!r}")
        self.num_transforms = num_transforms
        self.hidden_dims = None if hidden_dims is None else list(hidden_dims)
        self._init_scale = init_scale
        self.stable = stable
        self.made_kwargs = made_kwargs
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        d = self.latent_dim
        init_loc = self._init_loc()
        self.loc = nn.Parameter(init_loc)
        self.scale = PyroParam(
            init_loc.new_full((d,), self._init_scale), constraints.softplus_positive
        )
        hidden = self.hidden_dims if self.hidden_dims is not None else [3 * d + 1]
        layers = []
        for i in range(self.num_transforms):
            kw = dict(self.made_kwargs)
            kw.setdefault("permutation", list(range(d))[:: -1 if i % 2 else 1])
            made = MADE(d, hidden, **kw)
            with torch.no_grad():
                made.output_layer.weight.zero_()
                made.output_layer.bias.zero_()
            layers.append(IAFTransform(made, stable=self.stable))
        self.iafs = nn.ModuleList(layers).to(init_loc)

    def get_base_dist(self) -> dist.TorchDistribution:
        """Standard normal on the unconstrained latent vector, event shape ``(D,)``."""
        zeros = torch.zeros_like(self.loc)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> dist.transforms.ComposeTransform:
        """The IAF layers followed by the affine map, as one transform."""
        return dist.transforms.ComposeTransform(self._parts(), cache_size=1)

    def _parts(self) -> list[torch.distributions.Transform]:
        # cache_size=1 on the affine map lets scoring hand the IAF layers the very tensors they
        # produced, so they hit their caches instead of solving sequentially.
        affine = AffineTransform(self.loc, self.scale, event_dim=1, cache_size=1)
        return [*self.iafs, affine]

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """The guide's distribution of the unconstrained latent vector, event shape ``(D,)``."""
        return dist.TransformedDistribution(self.get_base_dist(), self._parts())
