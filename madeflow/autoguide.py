"""AutoIAF: a Pyro autoguide whose posterior is a diagonal Normal reshaped by IAF layers."""

from __future__ import annotations

import inspect
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
from madeflow.nn.stacks import made_stack
from madeflow.transforms.affine import IAFTransform
from madeflow.transforms.cache import TransientCache, reproduces

__all__ = ["AutoIAF"]

# Keyword arguments of Pyro's affine_autoregressive that AutoIAFNormal forwards, in its order.
_IAF_KWARGS = ("log_scale_min_clip", "log_scale_max_clip", "sigmoid_bias", "stable")
# MADE's own options; the rest of its signature is fixed by the guide.
_MADE_KWARGS = frozenset(inspect.signature(MADE).parameters) - {
    "input_dim",
    "hidden_dims",
    "param_dims",
    "context_dim",
}
_REFUSED = {
    "param_dims": " (AutoIAF's MADEs output a mean and a log-scale: param_dims=(1, 1))",
    "context_dim": " (AutoIAF's MADEs take no context)",
    "nonlinearity": " (MADE calls it activation)",
}


def _widths(hidden: int | Sequence[int]) -> list[int]:
    """``hidden_dim``/``hidden_dims`` as a list of positive ints (an int is one hidden layer)."""
    widths = [hidden] if isinstance(hidden, int) else list(hidden)
    if not widths or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in widths):
        raise ValueError(f"hidden_dim must be a positive int or a list of them, got {hidden!r}")
    return widths


class AutoIAF(AutoContinuous):
    r"""Automatic guide: standard normal noise, ``num_transforms`` IAF layers, then an affine map.

    All latent sites are mapped to one unconstrained vector ``z`` of size ``D`` (as in every
    :class:`~pyro.infer.autoguide.AutoContinuous` guide) and

    .. math:: \varepsilon \sim \mathcal N(0, I), \quad
        z = \mathrm{loc} + \mathrm{scale} \odot (f_K \circ \dots \circ f_1)(\varepsilon),

    with :class:`~madeflow.transforms.IAFTransform` layers :math:`f_k` (the first in the order of
    the latent vector, i.e. of the model's sample sites, then reversed every other layer).
    Sampling and scoring the guide's own samples cost one MADE pass per layer.

    Initialisation makes the guide start *exactly* where :class:`~pyro.infer.autoguide.AutoNormal`
    started with the same ``init_loc_fn`` and ``init_scale`` would: ``loc`` from ``init_loc_fn``,
    ``scale = init_scale``, and each MADE's output layer is zeroed so every IAF layer is the
    identity (``m = 0``, ``s = 0``). The layers then learn the non-Gaussian shape. The defaults
    (one layer, ``init_scale = 0.5``, ``init_to_median``) were chosen by measurement
    (``examples/autoguide_comparison.py``, ``docs/variational.md``): ``0.1`` (AutoNormal's
    default) starts too narrow for wide posteriors such as Neal's funnel, ``1`` starts too wide
    for data-dominated ones such as a logistic regression, and more layers fit no better in the
    same number of steps on the targets measured. The default update is the plain (non-gated)
    one, ``x = m + e^{s} u``: the zero initialisation already gives the near-identity start that
    the gated ("stable") update was designed for, the clamp of ``s`` to ``[-5, 3]`` keeps it
    stable, and unlike the gate it can expand as well as contract. ``stable=True`` is available.

    The first four parameters are those of Pyro's :class:`~pyro.infer.autoguide.AutoIAFNormal`, in
    its order and with its defaults, and its keyword arguments are accepted, so
    ``AutoIAF(model, hidden_dim, init_loc_fn, num_transforms, **kwargs)`` takes what
    ``AutoIAFNormal`` takes. The differences: ``init_loc_fn`` is honoured (Pyro ignores it and
    warns), ``hidden_dim`` may also be an int, the layers' orderings are deterministic (Pyro
    draws a random one per layer), and the guide has a learned ``loc`` and ``scale`` after the
    flow and starts from identity layers (Pyro's flow acts on a standard normal and starts from
    randomly initialised layers).

    Args:
        model: A Pyro model with continuous latents.
        hidden_dim: MADE hidden widths, an int (one layer) or a list; default ``[3 * D + 1]``
            (Pyro's default). Pyro's name for ``hidden_dims``.
        init_loc_fn: Per-site initialisation of ``loc`` (Pyro's ``init_to_*``); ``None`` means
            ``init_to_median``.
        num_transforms: Number of IAF layers.
        init_scale: Initial ``scale`` of every unconstrained coordinate.
        hidden_dims: madeflow's name for ``hidden_dim``; give one of the two.
        stable: Use the gated IAF update.
        log_scale_min_clip: Lower clamp of each layer's log-scale (``None``: none).
        log_scale_max_clip: Upper clamp of each layer's log-scale (``None``: none).
        sigmoid_bias: The constant added to the gate's logit when ``stable``.
        **made_kwargs: Passed to every :class:`~madeflow.MADE`: ``permutation`` (default: the
            identity and its reverse, alternating; a value given here is used by every layer,
            ``"random"`` draws one per layer), ``skip_connections``, ``activation``,
            ``hidden_degrees``, ``residual``, ``num_masks``, ``seed``.

    Raises:
        TypeError: If both ``hidden_dim`` and ``hidden_dims`` are given, or for a keyword that
            neither the IAF layers nor :class:`~madeflow.MADE` take (named in the message).
        ValueError: For a non-positive ``num_transforms``, ``init_scale`` or width.

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
        hidden_dim: int | Sequence[int] | None = None,
        init_loc_fn: Callable[..., Any] | None = None,
        num_transforms: int = 1,
        *,
        init_scale: float = 0.5,
        hidden_dims: int | Sequence[int] | None = None,
        stable: bool = False,
        log_scale_min_clip: float | None = -5.0,
        log_scale_max_clip: float | None = 3.0,
        sigmoid_bias: float = 2.0,
        **made_kwargs: Any,
    ) -> None:
        if hidden_dim is not None and hidden_dims is not None:
            raise TypeError(
                "AutoIAF got both hidden_dim (Pyro's name) and hidden_dims (madeflow's); pass one"
            )
        hidden = hidden_dim if hidden_dims is None else hidden_dims
        for key in made_kwargs:
            if key not in _MADE_KWARGS:
                hint = _REFUSED.get(key, "")
                raise TypeError(
                    f"AutoIAF got an unexpected keyword argument {key!r}{hint}; it takes "
                    f"{', '.join(_IAF_KWARGS)} (for the IAF layers) and "
                    f"{', '.join(sorted(_MADE_KWARGS))} (for the MADEs)"
                )
        if isinstance(num_transforms, bool) or not isinstance(num_transforms, int):
            raise ValueError(f"num_transforms must be a positive integer, got {num_transforms!r}")
        if num_transforms < 1:
            raise ValueError(f"num_transforms must be a positive integer, got {num_transforms!r}")
        if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)):
            raise ValueError(f"init_scale must be a positive number, got {init_scale!r}")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale!r}")
        self.num_transforms = num_transforms
        self.hidden_dims = None if hidden is None else _widths(hidden)
        self._init_scale = float(init_scale)
        self.stable = stable
        self.iaf_kwargs = {
            "stable": stable,
            "log_scale_min_clip": log_scale_min_clip,
            "log_scale_max_clip": log_scale_max_clip,
            "sigmoid_bias": sigmoid_bias,
        }
        self.made_kwargs = made_kwargs
        if init_loc_fn is None:
            init_loc_fn = init_to_median
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        d = self.latent_dim
        init_loc = self._init_loc()
        self.loc = nn.Parameter(init_loc)
        self.scale = PyroParam(
            init_loc.new_full((d,), self._init_scale), constraints.softplus_positive
        )
        layers = []
        for made in made_stack(d, self.num_transforms, self.hidden_dims, **self.made_kwargs):
            with torch.no_grad():  # every layer starts as the identity
                made.output_layer.weight.zero_()
                made.output_layer.bias.zero_()
            layers.append(IAFTransform(made, **self.iaf_kwargs))
        self.iafs = nn.ModuleList(layers).to(init_loc)

    def get_base_dist(self) -> dist.TorchDistribution:
        """Standard normal on the unconstrained latent vector, event shape ``(D,)``."""
        zeros = torch.zeros_like(self.loc)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> dist.transforms.ComposeTransform:
        """The IAF layers followed by the affine map, as one transform."""
        return dist.transforms.ComposeTransform(self._parts())

    def _parts(self) -> list[torch.distributions.Transform]:
        return [*self.iafs, _CheckedAffine(self.loc, self.scale)]

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """The guide's distribution of the unconstrained latent vector, event shape ``(D,)``."""
        return dist.TransformedDistribution(self.get_base_dist(), self._parts())


class _CheckedAffine(TransientCache, AffineTransform):
    """``z = loc + scale * x`` that hands back the very ``x`` it mapped to ``z``, checked.

    Scoring the guide's own sample then reaches the IAF layers with the tensors they produced,
    so they skip their sequential solve; the check (one elementwise pass) makes sure ``loc`` and
    ``scale`` have not changed since, where torch's identity cache would not notice.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__(loc, scale, event_dim=1, cache_size=0)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        z = super()._call(x)
        self._remember(x, z)
        return z

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        x = self._recall(z, lambda x: reproduces(super(_CheckedAffine, self)._call(x), z))
        return super()._inverse(z) if x is None else x
