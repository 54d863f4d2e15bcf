"""The one registry of constructors: every model kind that the generic checks run on.

Each entry of :data:`REGISTRY` is a :class:`Spec`: a constructor ``make(dim, **kwargs)``, the kind
of object it returns and what that object supports. The kinds:

* ``"network"``: an autoregressive conditioner (:class:`madeflow.MADE` in its variants, the
  ``AutoRegressiveNN`` drop-ins and Pyro's own networks as the reference column);
* ``"transform"``: a Pyro ``TransformModule`` (MAF/IAF layers, batch norm, permute, Pyro's own
  ``AffineAutoregressive`` on a MADE, the transforms side by side on either network) or the
  transform of an :class:`madeflow.AutoIAF` guide; conditional ones are conditioned on a fixed
  context when built;
* ``"flow"``: a :class:`madeflow.MAF` or :class:`madeflow.IAF`;
* ``"density"``: a MADE density estimator (:class:`madeflow.BernoulliMADE`, ...).

Flows and density estimators are both density models (``log_prob(x, context)``, ``sample``,
``forward(context) -> distribution``). Capabilities: ``conditional`` (needs a context of size
:data:`CONTEXT_DIM`), ``discrete`` (binary data: normalized by enumeration, not integration),
``triangular`` (a Jacobian lower triangular in the MADE's order), ``copyable`` (deep-copies and
pickles after ``log_prob(...).backward()``).

How to add a model:

1. Write one line in :data:`REGISTRY`: ``"my_flow": flow(lambda d, **kw: MyFlow(d, ...))``, with
   the kind (``network``, ``transform``, ``flow`` or ``density``) and any capability that is not
   the default (``conditional=True``, ``discrete=True``, ``triangular=False``, ...). Flows and
   density estimators take MADE options as keyword arguments (the normalization checks pass
   ``permutation``); a transform whose object is not the module itself passes ``view`` (see
   the AutoIAF entry).
2. Run ``python -m pytest tests/test_generic.py -k my_flow``: every generic check of its kind
   runs on it (``tests/test_generic.py`` lists them), in ``--dtype`` on ``--device``. A check
   that finds a library bug stays visible as a strict ``xfail`` there, not as a skipped entry.

Models are built on torch's current default device and dtype (the suite's ``--device`` and
``--dtype``), so nothing here names a device.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyro.distributions as dist
import pyro.nn
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms import AffineAutoregressive, ConditionalAffineAutoregressive

import madeflow
from madeflow.autoguide import AutoIAF
from madeflow.distributions import BernoulliMADE, GaussianMADE, GaussianMixtureMADE
from madeflow.flows import IAF, MAF
from madeflow.nn.made import MADE
from madeflow.transforms import (
    BatchNormTransform,
    ConditionalIAFTransform,
    ConditionalMAFTransform,
    IAFTransform,
    MAFTransform,
    PermuteTransform,
)

CONTEXT_DIM = 2
KINDS = ("network", "transform", "flow", "density")


@dataclass(frozen=True)
class Spec:
    """How to build one model kind and what it supports."""

    kind: str
    make: Callable[..., Any]  # make(dim, **kwargs) -> the module
    dim: int = 3  # input_dim when a check does not ask for one
    conditional: bool = False
    discrete: bool = False
    triangular: bool = True
    copyable: bool = True
    # The object the checks call, from the module (default: the module, conditioned if need be);
    # re-derived at every use so that it follows load_state_dict.
    view: Callable[[Any], Any] | None = None


network = partial(Spec, "network")
transform = partial(Spec, "transform")
flow = partial(Spec, "flow")
density = partial(Spec, "density")


@dataclass
class Case:
    """A built model: the object the checks call, and what they need around it."""

    name: str
    spec: Spec
    built: Any  # the transform (conditioned, if conditional), network or density model
    module: torch.nn.Module  # what holds the parameters and the state_dict
    input_dim: int
    context: torch.Tensor | None = None  # (CONTEXT_DIM,) for conditional kinds
    order: torch.Tensor | None = None  # the MADE ordering, for the triangularity checks

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def obj(self) -> Any:
        """The object the checks call (for a ``view`` entry, derived afresh from the module)."""
        return self.built if self.spec.view is None else self.spec.view(self.module)

    def points(self, *batch: int) -> torch.Tensor:
        """Points ``(*batch, D)`` in the model's support: binary for discrete kinds."""
        if self.spec.discrete:
            return torch.randint(0, 2, (*batch, self.input_dim)).to(torch.get_default_dtype())
        return torch.randn(*batch, self.input_dim)

    def contexts(self, *batch: int) -> torch.Tensor | None:
        """The fixed context expanded to ``(*batch, CONTEXT_DIM)``, or ``None``."""
        return None if self.context is None else self.context.expand(*batch, CONTEXT_DIM)

    def dist(self, batch_shape: Sequence[int] = ()) -> dist.TorchDistribution:
        """The model as a distribution of batch shape ``batch_shape`` and event shape ``(D,)``.

        Transforms push a standard normal forward; density models are called on the context
        expanded to ``batch_shape`` (unconditional ones are expanded).
        """
        batch_shape = torch.Size(batch_shape)
        if self.kind == "transform":
            base = dist.Normal(torch.zeros(self.input_dim), 1.0).to_event(1)
            return dist.TransformedDistribution(base.expand(batch_shape), [self.obj])
        if self.context is None:
            return self.obj().expand(batch_shape)
        return self.obj(self.contexts(*batch_shape))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of ``x`` under :meth:`dist` (a fixed context for conditional kinds)."""
        if self.kind == "transform":
            return self.dist().log_prob(x)
        return self.obj.log_prob(x, self.context)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """What identifies the model at ``x`` ``(*batch, D)``: the log-density ``(*batch,)``, or
        for a network every output parameter, flattened ``(*batch, P * D)``."""
        if self.kind != "network":
            return self.log_prob(x)
        batch = x.shape[:-1]
        out = self.obj(x) if self.context is None else self.obj(x, self.contexts(*batch))
        return network_outputs(out, batch)

    def has_rsample(self) -> bool:
        """Whether :meth:`dist` has a reparameterized sampler (never for a network)."""
        if self.kind == "network":
            return False
        if self.kind == "transform":
            return self.dist().has_rsample
        return self.obj.has_rsample


def network_outputs(
    out: torch.Tensor | Sequence[torch.Tensor], batch: Sequence[int]
) -> torch.Tensor:
    """A network's output (a tensor or Pyro's tuple) as one ``(*batch, P * D)`` tensor."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return torch.cat([o.reshape(*batch, -1) for o in outs], -1)


def fixed_context() -> torch.Tensor:
    """The same context whatever the global seed (state_dict checks build under two seeds)."""
    gen = torch.Generator().manual_seed(123)  # on the CPU: the same context on every device
    ctx = torch.randn(CONTEXT_DIM, generator=gen, dtype=torch.float64, device="cpu")
    return ctx.to(device=torch.get_default_device(), dtype=torch.get_default_dtype())


def _narrow_made(dim: int) -> MADE:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = MADE(dim, [max(dim - 3, 1)])
    assert any("cannot see" in str(w.message) for w in caught), "expected a narrow-MADE warning"
    return made


def _cmade(dim: int, hidden: list[int], **kw: Any) -> MADE:
    return MADE(dim, hidden, context_dim=CONTEXT_DIM, **kw)


def _estimator(cls: type, dim: int, hidden_dims: Sequence[int] = (16, 16), **kw: Any) -> Any:
    return cls(dim, list(hidden_dims), **kw)


class _Latents:
    """A Pyro model with ``dim`` latent dimensions, one of them constrained (a picklable one)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def __call__(self) -> None:
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.HalfNormal(torch.ones(self.dim - 1)).to_event(1))


def _autoiaf(dim: int) -> AutoIAF:
    """An AutoIAF guide of ``dim`` latent dimensions, set up, its parameters moved off the start.

    The guide starts at the identity (zero output layers), where no gradient reaches the hidden
    layers; a trained guide is not there, so every parameter is perturbed.
    """
    guide = AutoIAF(_Latents(dim), hidden_dims=[12], num_transforms=2)
    guide()  # builds the layers for the model's latent vector
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return guide


def _randomize_batchnorm(module: torch.nn.Module) -> None:
    """Batch norm layers get non-trivial statistics and go to eval: a fixed, exact bijection."""
    for bn in module.modules():
        if isinstance(bn, BatchNormTransform):
            with torch.no_grad():
                bn.log_gamma.normal_(0.0, 0.3)
                bn.beta.normal_(0.0, 0.3)
                bn.running_mean.normal_(0.0, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
            bn.eval()


# The AutoRegressiveNN drop-ins, side by side with Pyro's own (the reference column): the same
# generic checks on Pyro's AffineAutoregressive and on madeflow's MAF and IAF layers.
_ARNS = {
    "pyro": (pyro.nn.AutoRegressiveNN, pyro.nn.ConditionalAutoRegressiveNN),
    "madeflow": (madeflow.AutoRegressiveNN, madeflow.ConditionalAutoRegressiveNN),
}
_LAYERS = {
    "pyro_affine": (AffineAutoregressive, ConditionalAffineAutoregressive),
    "maf": (MAFTransform, ConditionalMAFTransform),
    "iaf": (IAFTransform, ConditionalIAFTransform),
}
# Pyro's AffineAutoregressive keeps its last log-scale (a non-leaf tensor) on the module.
_PYRO_KEEPS_GRAPH = {"copyable": False}


def _side_by_side() -> dict[str, Spec]:
    specs = {}
    for side, (arn, carn) in _ARNS.items():
        for layer, (cls, ccls) in _LAYERS.items():
            keeps = _PYRO_KEEPS_GRAPH if layer == "pyro_affine" else {}
            specs[f"{layer}_on_{side}_arn"] = transform(
                lambda d, cls=cls, arn=arn: cls(arn(d, [24, 24])), dim=5, **keeps
            )
            specs[f"conditional_{layer}_on_{side}_arn"] = transform(
                lambda d, ccls=ccls, carn=carn: ccls(carn(d, CONTEXT_DIM, [24, 24])),
                dim=5,
                conditional=True,
                **keeps,
            )
    return specs


REGISTRY: dict[str, Spec] = {
    # networks: make(dim)
    "made": network(lambda d: MADE(d, [16, 16]), dim=4),
    "made_param_dims": network(lambda d: MADE(d, [16], param_dims=(1, 2)), dim=4),
    "made_three_params": network(
        lambda d: MADE(d, [16], param_dims=(1, 1, 1), permutation="random"), dim=4
    ),
    "made_skip_residual": network(
        lambda d: MADE(d, [12, 12], skip_connections=True, residual=True), dim=4
    ),
    "made_random_degrees_and_masks": network(
        lambda d: MADE(d, [32, 32], hidden_degrees="random", num_masks=3, permutation="random"),
        dim=5,
    ),
    "made_tanh": network(lambda d: MADE(d, [16], activation=torch.nn.Tanh)),
    "made_narrow": network(_narrow_made, dim=5),
    "conditional_made": network(lambda d: _cmade(d, [16, 16]), conditional=True),
    "arn_madeflow": network(lambda d: madeflow.AutoRegressiveNN(d, [16, 16])),
    "conditional_arn_madeflow": network(
        lambda d: madeflow.ConditionalAutoRegressiveNN(d, CONTEXT_DIM, [16, 16]), conditional=True
    ),
    "arn_pyro": network(lambda d: pyro.nn.AutoRegressiveNN(d, [16, 16])),
    "conditional_arn_pyro": network(
        lambda d: pyro.nn.ConditionalAutoRegressiveNN(d, CONTEXT_DIM, [16, 16]), conditional=True
    ),
    # transforms: make(dim)
    "maf": transform(lambda d: MAFTransform(MADE(d, [16, 16])), dim=4),
    "maf_skip": transform(lambda d: MAFTransform(MADE(d, [12], skip_connections=True)), dim=4),
    "maf_residual": transform(lambda d: MAFTransform(MADE(d, [12] * 3, residual=True)), dim=4),
    "maf_random_degrees": transform(
        lambda d: MAFTransform(MADE(d, [16, 16], hidden_degrees="random")), dim=5
    ),
    "maf_random_permutation": transform(
        lambda d: MAFTransform(MADE(d, [16], permutation="random")), dim=4
    ),
    "maf_narrow": transform(lambda d: MAFTransform(_narrow_made(d)), dim=5),
    "iaf": transform(lambda d: IAFTransform(MADE(d, [16, 16], permutation="random")), dim=4),
    "iaf_stable": transform(lambda d: IAFTransform(MADE(d, [16]), stable=True)),
    "iaf_residual_skip": transform(
        lambda d: IAFTransform(MADE(d, [12, 12], residual=True, skip_connections=True)), dim=4
    ),
    "conditional_maf": transform(
        lambda d: ConditionalMAFTransform(_cmade(d, [16])), conditional=True
    ),
    "conditional_iaf": transform(
        lambda d: ConditionalIAFTransform(_cmade(d, [16])), conditional=True
    ),
    "conditional_iaf_stable": transform(
        lambda d: ConditionalIAFTransform(_cmade(d, [16]), stable=True), conditional=True
    ),
    "batchnorm_eval": transform(BatchNormTransform),  # built in eval mode, see build()
    "permute": transform(lambda d: PermuteTransform([2, 0, 3, 1]), dim=4, triangular=False),
    "pyro_affine_autoregressive": transform(
        lambda d: AffineAutoregressive(MADE(d, [16])), **_PYRO_KEEPS_GRAPH
    ),
    **_side_by_side(),
    # AutoIAF's IAF layers and affine map, one transform; the guide holds the parameters.
    "autoiaf": transform(_autoiaf, triangular=False, view=lambda guide: guide.get_transform()),
    # flows: make(dim, **made_kwargs)
    "flow_maf": flow(lambda d, **kw: MAF(d, 3, [16], **kw)),
    "flow_maf_batchnorm": flow(lambda d, **kw: MAF(d, 3, [16], batch_norm=True, **kw)),
    "flow_maf_mog": flow(lambda d, **kw: MAF(d, 2, [16], base="mog", **kw), dim=2),
    "flow_iaf": flow(lambda d, **kw: IAF(d, 3, [16], **kw)),
    "flow_iaf_stable": flow(lambda d, **kw: IAF(d, 2, [16], stable=True, **kw)),
    "flow_conditional_maf": flow(
        lambda d, **kw: MAF(d, 2, [16], context_dim=CONTEXT_DIM, **kw), conditional=True
    ),
    "flow_conditional_iaf": flow(
        lambda d, **kw: IAF(d, 2, [16], context_dim=CONTEXT_DIM, **kw), conditional=True
    ),
    # MADE density estimators: make(dim, hidden_dims=(16, 16), **made_kwargs)
    "density_bernoulli": density(partial(_estimator, BernoulliMADE), discrete=True),
    "density_gaussian": density(partial(_estimator, GaussianMADE)),
    "density_mixture": density(partial(_estimator, GaussianMixtureMADE, num_components=3)),
    "density_conditional_bernoulli": density(
        partial(_estimator, BernoulliMADE, context_dim=CONTEXT_DIM),
        conditional=True,
        discrete=True,
    ),
    "density_conditional_gaussian": density(
        partial(_estimator, GaussianMADE, context_dim=CONTEXT_DIM), conditional=True
    ),
    "density_conditional_mixture": density(
        partial(_estimator, GaussianMixtureMADE, num_components=3, context_dim=CONTEXT_DIM),
        conditional=True,
    ),
}


def names(kind: str | Sequence[str] | None = None, **capabilities: bool) -> list[str]:
    """Registry names of the given kind(s) with the given capabilities, in registry order.

    Example: ``names(("flow", "density"), discrete=False)`` are the continuous density models.
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind or KINDS)
    assert set(kinds) <= set(KINDS), kinds
    return [
        name
        for name, spec in REGISTRY.items()
        if spec.kind in kinds and all(getattr(spec, k) == v for k, v in capabilities.items())
    ]


NETWORKS = names("network")
TRANSFORMS = names("transform")
FLOWS = names("flow")
DENSITIES = names("density")
MODELS = names(("flow", "density"))  # everything with log_prob(x, context), sample, forward


def build(name: str, dim: int | None = None, **kwargs: Any) -> Case:
    """Build registry entry ``name`` (on the default device and dtype) as a :class:`Case`.

    ``kwargs`` reach the constructor: the MADE options of flows and density estimators.
    """
    spec = REGISTRY[name]
    d = dim or spec.dim
    module = spec.make(d, **kwargs)
    _randomize_batchnorm(module)
    context = fixed_context() if spec.conditional else None
    obj = module
    if spec.kind == "transform" and isinstance(module, ConditionalTransformModule):
        obj = module.condition(context)
    order = None
    if spec.kind == "network":
        order = module.get_permutation().clone()
    if spec.kind == "transform":
        net = getattr(obj, "nn", None) or getattr(obj, "arn", None)
        order = net.get_permutation().clone() if net is not None else torch.arange(d)
    if name == "permute":
        d = module.permutation.numel()
    return Case(name, spec, obj, module, d, context, order)
