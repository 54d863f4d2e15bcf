r"""One affine autoregressive core for the MAF and IAF layers.

Both layers relate noise ``u`` and data ``x`` by the same affine map,

.. math:: x_d = \mathrm{shift}_d(z_{<d}) + \mathrm{scale}_d(z_{<d})\, u_d,

with the shift and scale read off a MADE. They differ only in what the MADE reads: the layer's
input ``z = u`` (IAF) or its output ``z = x`` (MAF). Whichever side the MADE reads is the cheap
direction (one pass); the other is a sequential solve of the same recursion, through
:func:`madeflow.solve.autoregressive_solve` (about one pass for a MADE).
:class:`AffineAutoregressive` implements both directions, the log-determinant and the caches
once; :class:`MAFTransform` and :class:`IAFTransform` only say which side the network reads.

=====================  ===========================  ===========================
                       IAF (reads ``u``)            MAF (reads ``x``)
=====================  ===========================  ===========================
``_call(u) -> x``      one pass                     sequential solve
``_inverse(x) -> u``   sequential solve             one pass
log-det                ``sum(log scale(u))``        ``sum(log scale(x))``
=====================  ===========================  ===========================
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule

from madeflow.nn.made import MADE, Params
from madeflow.solve import Step, autoregressive_solve, ordered_loop
from madeflow.transforms.cache import TransientCache, reproduces

__all__ = ["AffineAutoregressive", "IAFTransform", "MAFTransform", "clamp_log_scale"]


def clamp_log_scale(
    log_scale: torch.Tensor, min_clip: float | None, max_clip: float | None
) -> torch.Tensor:
    """Clamp the value of a log-scale but let its gradient pass (Pyro's convention).

    The forward value is ``clamp(log_scale, min_clip, max_clip)``; the gradient is that of the
    identity, so units pushed past a bound keep learning. ``None`` bounds disable clamping.

    Args:
        log_scale: ``(*batch, D)``.
        min_clip: Lower bound or ``None``.
        max_clip: Upper bound or ``None``.

    Returns:
        ``(*batch, D)``.
    """
    if min_clip is None and max_clip is None:
        return log_scale
    return log_scale + (log_scale.clamp(min_clip, max_clip) - log_scale).detach()


def _solve(
    net: Callable[..., Params],
    step: Step,
    noise: torch.Tensor,
    context: torch.Tensor | None,
    return_params: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Params]:
    """The sequential direction: the one-pass solve for a MADE, else a ``D``-pass loop.

    Any other conditioner (e.g. Pyro's ``AutoRegressiveNN``) is looped over in its
    ``get_permutation()`` order.
    """
    if isinstance(net, MADE):
        return autoregressive_solve(net, step, noise, context, return_params)
    get = getattr(net, "get_permutation", None)
    order = get() if get is not None else net.permutation
    return ordered_loop(net, order, step, noise, context, return_params)


def _check_network(net: Any, context: torch.Tensor | None, owner: str) -> None:
    if isinstance(net, MADE) and tuple(net.param_dims) != (1, 1):
        raise ValueError(f"{owner} needs a MADE with param_dims=(1, 1), got {net.param_dims}")
    if context is None and getattr(net, "context_dim", 0):
        raise ValueError(
            f"the network is conditional (context_dim > 0): use Conditional{owner} and "
            ".condition(context)"
        )


class AffineAutoregressive(TransientCache, TransformModule):
    r"""The affine autoregressive bijection ``u <-> x`` of MAF and IAF layers.

    With ``(m, s) = nn(z)``, the plain update is ``shift = m``, ``scale = exp(clamp(s))``
    (value clamped to ``[log_scale_min_clip, log_scale_max_clip]``, gradient passed through, as
    in Pyro); ``stable=True`` gives the IAF paper's gated update
    ``g = sigmoid(s + sigmoid_bias)``, ``x = g u + (1 - g) m``, i.e. ``shift = (1 - g) m`` and
    ``scale = g`` (the gate's logit is bounded below by ``log_scale_min_clip`` so the layer stays
    invertible). The same values serve both directions and the log-det, so the layer is an exact
    bijection.

    Caches, none of which can go stale: ``_inverse`` leaves the log-det of its result for the
    ``log_abs_det_jacobian`` call that follows it (as in ``TransformedDistribution.log_prob``),
    used once. When the network reads the input (IAF), the layer also remembers its last
    ``(u, x)``; asked to invert that very ``x``, it checks with one pass that the current weights
    still map ``u`` to ``x`` (an edit through ``.data`` included) and returns ``u`` instead of
    solving. Results of sequential solves are never kept, and nothing kept reaches pickles, deep
    copies or ``state_dict``.

    Args:
        autoregressive_nn: A :class:`~madeflow.MADE` with ``param_dims=(1, 1)`` (fast solves) or
            any conditioner returning ``(m, s)`` like Pyro's ``AutoRegressiveNN`` (its
            sequential direction then runs a ``D``-pass loop).
        stable: Use the gated update.
        log_scale_min_clip: Lower clamp of ``s`` (``None``: none).
        log_scale_max_clip: Upper clamp of ``s`` (``None``: none); unused when ``stable``.
        sigmoid_bias: The constant added to ``s`` by the gated update.
        context: Fixed context passed to the network, ``(*batch, context_dim)``; set by the
            conditional layers' ``condition``.
    """

    reads_output: bool
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1
    autoregressive = True

    def __init__(
        self,
        autoregressive_nn: Callable[..., Params],
        stable: bool = False,
        log_scale_min_clip: float | None = -5.0,
        log_scale_max_clip: float | None = 3.0,
        sigmoid_bias: float = 2.0,
        context: torch.Tensor | None = None,
    ) -> None:
        # No torch cache (it would keep graphs and go stale); the layer keeps its own, checked.
        super().__init__(cache_size=0)
        _check_network(autoregressive_nn, context, type(self).__name__)
        self.nn = autoregressive_nn
        self.stable = stable
        self.log_scale_min_clip = log_scale_min_clip
        self.log_scale_max_clip = log_scale_max_clip
        self.sigmoid_bias = sigmoid_bias
        self.context = context
        # (u, x, log|dx/du| per dim) left by _inverse for the log-det call that follows it.
        self._cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # ----------------------------------------------------------------------- the map
    def _gate(self, params: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(shift, scale, log_scale)`` such that ``x = shift + scale * u``."""
        m, s = params
        if self.stable:
            logit = clamp_log_scale(s + self.sigmoid_bias, self.log_scale_min_clip, None)
            gate = torch.sigmoid(logit)
            # log(sigmoid(t)) = -softplus(-t); F.logsigmoid is ~10 ms per call on CPU in torch 2.13.
            return (1 - gate) * m, gate, -F.softplus(-logit)
        log_scale = clamp_log_scale(s, self.log_scale_min_clip, self.log_scale_max_clip)
        return m, torch.exp(log_scale), log_scale

    def _affine(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One network pass on the side it reads."""
        return self._gate(self.nn(z) if self.context is None else self.nn(z, self.context))

    def _forward_step(self, params: Params, u: torch.Tensor) -> torch.Tensor:
        shift, scale, _ = self._gate(params)
        return shift + scale * u

    def _inverse_step(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        shift, scale, log_scale = self._gate(params)
        return _invert(x, shift, scale, log_scale, self.stable)

    # -------------------------------------------------------------------- directions
    def _call(self, u: torch.Tensor) -> torch.Tensor:
        """Sampling direction ``u -> x``, ``(*batch, D) -> (*batch, D)``.

        One pass (IAF) or a sequential solve (MAF).
        """
        if self.reads_output:
            return _solve(self.nn, self._forward_step, u, self.context)
        shift, scale, _ = self._affine(u)
        x = shift + scale * u
        self._remember(u, x)
        return x

    def _check_sample(self, u: torch.Tensor, x: torch.Tensor) -> bool:
        """One pass on ``u``: does it still give ``x``? Keeps the log-det for the next call."""
        shift, scale, log_scale = self._affine(u)
        if not reproduces(shift + scale * u, x):
            return False
        self._cached = (u, x, log_scale)
        return True

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Density direction ``x -> u``, ``(*batch, D) -> (*batch, D)``.

        One pass (MAF); for IAF one checked pass on its own last sample, else a sequential solve.
        """
        if self.reads_output:
            shift, scale, log_scale = self._affine(x)
            u = _invert(x, shift, scale, log_scale, self.stable)
            self._cached = (u, x, log_scale)
            return u
        u = self._recall(x, lambda u: self._check_sample(u, x))
        if u is not None:
            return u
        return _solve(self.nn, self._inverse_step, x, self.context)

    def call_and_log_det(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampling direction and its log-det together, from one computation.

        For MAF the log-det comes from the parameters the solve computed anyway, for IAF from the
        same pass: no second pass either way. Differentiable.

        Args:
            u: Noise, ``(*batch, D)``.

        Returns:
            ``(x, log|det dx/du|)``, ``(*batch, D)`` and ``(*batch,)``.
        """
        if self.reads_output:
            x, params = _solve(self.nn, self._forward_step, u, self.context, return_params=True)
            return x, self._gate(params)[2].sum(-1)
        shift, scale, log_scale = self._affine(u)
        x = shift + scale * u
        self._remember(u, x)
        return x, log_scale.sum(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log |det d y / d x|`` of the sampling map, ``sum_d log scale_d(z)``.

        Args:
            x: Noise ``u``, ``(*batch, D)``.
            y: Data ``x``, ``(*batch, D)``.

        Returns:
            ``(*batch,)``. One network pass, or none right after ``_inverse`` on these tensors.
        """
        cached, self._cached = self._cached, None
        if cached is not None and cached[0] is x and cached[1] is y:
            return cached[2].sum(-1)
        return self._affine(y if self.reads_output else x)[2].sum(-1)


def _invert(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, log_scale: torch.Tensor, gated: bool
) -> torch.Tensor:
    """``u = (x - shift) / scale`` (a product with ``exp(-log_scale)`` for the plain update)."""
    return (x - shift) / scale if gated else (x - shift) * torch.exp(-log_scale)


class MAFTransform(AffineAutoregressive):
    r"""A MAF layer as a Pyro transform from noise ``u`` to data ``x``.

    With ``(m, a) = made(x)`` (each output sees only earlier inputs in the MADE's ordering):

    .. math::
        u = (x - m(x)) \odot e^{-a(x)} \quad\text{(density: one pass)},\qquad
        x_d = u_d\, e^{a_d(x_{<d})} + m_d(x_{<d}) \quad\text{(sampling: sequential)}.

    Pseudo-code and cost::

        _inverse(x):  m, a = made(x); u = (x - m) * exp(-a)          # 1 pass
        _call(u):     autoregressive_solve(made, step, noise=u)      # ~1 pass (backward ~2)
        log_abs_det_jacobian(u, x) = sum(a(x), -1)                   # log|dx/du|, 1 pass or cached
        call_and_log_det(u): the solve, and a(x) from its by-products  # no second pass

    ``a`` is clamped to ``[log_scale_min_clip, log_scale_max_clip]`` in value, with the gradient
    passed through (Pyro's convention); the defaults ``(-5, 3)`` bound each layer's scale to
    ``[0.0067, 20]``, which keeps sampling stable early in training. It is Pyro's
    ``AffineAutoregressive(...).inv``, with the fast engine for the sequential direction.

    Args:
        autoregressive_nn: A :class:`~madeflow.MADE` with ``param_dims=(1, 1)`` (fast sampling),
            or any conditioner returning ``(mean, log_scale)`` like Pyro's ``AutoRegressiveNN``
            (sampling then runs a plain ``D``-pass loop).
        log_scale_min_clip: Lower clamp of ``a`` (``None``: none).
        log_scale_max_clip: Upper clamp of ``a`` (``None``: none).
        context: Fixed context passed to the network, ``(*batch, context_dim)``; set by
            :meth:`ConditionalMAFTransform.condition`.

    Example:
        >>> import pyro.distributions as dist
        >>> from madeflow import MADE
        >>> t = MAFTransform(MADE(3, [16]))
        >>> base = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
        >>> flow = dist.TransformedDistribution(base, [t])
        >>> tuple(flow.log_prob(torch.randn(5, 3)).shape)
        (5,)

    References:
        Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation.
        NeurIPS 2017.
    """

    reads_output = True

    def __init__(
        self,
        autoregressive_nn: Callable[..., Params],
        log_scale_min_clip: float | None = -5.0,
        log_scale_max_clip: float | None = 3.0,
        context: torch.Tensor | None = None,
    ) -> None:
        super().__init__(
            autoregressive_nn,
            log_scale_min_clip=log_scale_min_clip,
            log_scale_max_clip=log_scale_max_clip,
            context=context,
        )


class IAFTransform(AffineAutoregressive):
    r"""An IAF layer as a Pyro transform from noise ``u`` to ``x``.

    With ``(m, s) = made(u)`` (autoregressive in the MADE's ordering), the default update is

    .. math:: x = m(u) + e^{s(u)} \odot u, \qquad \log|\det J| = \textstyle\sum_d s_d(u),

    and ``stable=True`` gives the paper's gated update

    .. math::
        g = \sigma(s(u) + b), \quad x = g \odot u + (1 - g) \odot m(u), \quad
        \log|\det J| = \textstyle\sum_d \log g_d,

    where ``b = sigmoid_bias`` (default 2, so ``g`` starts near ``sigmoid(2) = 0.88`` and the layer
    starts near the identity, as the paper recommends). It computes what Pyro's
    ``AffineAutoregressive`` computes.

    Pseudo-code and cost::

        _call(u):     m, s = made(u); x = ...; remember (u, x)         # 1 pass
        _inverse(x):  if x is the remembered x and made(u) still maps u to x:
                          return u                                     # 1 pass, log-det kept
                      autoregressive_solve(made, step, noise=x)      # sequential otherwise
        log_abs_det_jacobian(u, x): kept from _inverse, else 1 pass on u

    Scoring the transform's own samples costs one pass, never a sequential solve, and the check
    makes the shortcut safe against every change of the weights (optimizer steps,
    ``load_state_dict``, edits through ``.data``). Results of the sequential inverse are not
    kept, so scoring the same outside point twice (with a ``backward`` in between) builds a fresh
    graph each time.

    Args:
        autoregressive_nn: A :class:`~madeflow.MADE` with ``param_dims=(1, 1)`` or any
            conditioner returning ``(mean, log_scale)``.
        stable: Use the gated update.
        log_scale_min_clip: Lower clamp of ``s`` (``None``: none).
        log_scale_max_clip: Upper clamp of ``s`` (``None``: none); unused when ``stable``.
        sigmoid_bias: The constant ``b`` added to ``s`` by the gated update.
        context: Fixed context, ``(*batch, context_dim)``; set by
            :meth:`ConditionalIAFTransform.condition`.

    Example:
        >>> import pyro.distributions as dist
        >>> from madeflow import MADE
        >>> t = IAFTransform(MADE(3, [16]))
        >>> base = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
        >>> q = dist.TransformedDistribution(base, [t])
        >>> z = q.rsample((5,))
        >>> tuple(q.log_prob(z).shape)
        (5,)

    References:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improving Variational Inference
        with Inverse Autoregressive Flow. NeurIPS 2016.
    """

    reads_output = False
