"""One registry of constructors: every transform and flow that the generic suite checks.

Each entry maps a name to ``build(dim=None) -> Case``; build on the current default dtype and
move with ``Case.to``. Conditional transforms come already conditioned on a fixed context.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro.distributions.transforms import AffineAutoregressive
from pyro.nn import AutoRegressiveNN

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


@dataclass
class Case:
    obj: Any  # a TransformModule (kind "transform") or a flow nn.Module (kind "flow")
    input_dim: int
    kind: str
    context: torch.Tensor | None = None
    order: torch.Tensor | None = None  # MADE ordering, for the triangularity check

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> Case:
        dtype = dtype or torch.get_default_dtype()
        self.obj.to(device=device, dtype=dtype)
        if self.context is not None:
            self.context = self.context.to(device=device, dtype=dtype)
        return self


def _context() -> torch.Tensor:
    gen = torch.Generator().manual_seed(123)
    return torch.randn(CONTEXT_DIM, generator=gen).to(torch.get_default_dtype())


def _made(dim: int, hidden: list[int], **kw: Any) -> MADE:
    return MADE(dim, hidden, **kw)


def _transform(t: Any, dim: int, context: torch.Tensor | None = None) -> Case:
    net = getattr(t, "nn", None) or getattr(t, "arn", None)
    order = net.get_permutation().clone() if net is not None else torch.arange(dim)
    return Case(t, dim, "transform", context, order)


def _randomize_batchnorm(module: torch.nn.Module) -> None:
    for bn in module.modules():
        if isinstance(bn, BatchNormTransform):
            with torch.no_grad():
                bn.log_gamma.normal_(0.0, 0.3)
                bn.beta.normal_(0.0, 0.3)
                bn.running_mean.normal_(0.0, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
            bn.eval()


def _narrow_made(dim: int) -> MADE:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = MADE(dim, [max(dim - 3, 1)])
    assert any("cannot see" in str(w.message) for w in caught), "expected a narrow-MADE warning"
    return made


def _maf(dim: int | None, default: int, hidden: list[int], **kw: Any) -> Case:
    d = dim or default
    return _transform(MAFTransform(_made(d, hidden, **kw)), d)


def _cond(cls: type, dim: int | None, **kw: Any) -> Case:
    d = dim or 3
    ctx = _context()
    t = cls(MADE(d, [16], context_dim=CONTEXT_DIM), **kw)
    return _transform(t.condition(ctx), d, ctx)


def _batchnorm(dim: int | None = None) -> Case:
    d = dim or 3
    bn = BatchNormTransform(d)
    _randomize_batchnorm(bn)
    return _transform(bn, d)


def _flow(obj: Any, dim: int, context: torch.Tensor | None = None) -> Case:
    _randomize_batchnorm(obj)
    return Case(obj, dim, "flow", context)


REGISTRY: dict[str, Callable[..., Case]] = {
    # transforms
    "maf": lambda dim=None: _maf(dim, 4, [16, 16]),
    "maf_skip": lambda dim=None: _maf(dim, 4, [12], skip_connections=True),
    "maf_residual": lambda dim=None: _maf(dim, 4, [12, 12, 12], residual=True),
    "maf_random_degrees": lambda dim=None: _maf(dim, 5, [16, 16], hidden_degrees="random"),
    "maf_random_permutation": lambda dim=None: _maf(dim, 4, [16], permutation="random"),
    "maf_narrow": lambda dim=None: _transform(MAFTransform(_narrow_made(dim or 5)), dim or 5),
    "maf_pyro_arn": lambda dim=None: _transform(
        MAFTransform(AutoRegressiveNN(dim or 3, [16])), dim or 3
    ),
    "iaf": lambda dim=None: _transform(
        IAFTransform(MADE(dim or 4, [16, 16], permutation="random")), dim or 4
    ),
    "iaf_stable": lambda dim=None: _transform(
        IAFTransform(MADE(dim or 3, [16]), stable=True), dim or 3
    ),
    "iaf_residual_skip": lambda dim=None: _transform(
        IAFTransform(MADE(dim or 4, [12, 12], residual=True, skip_connections=True)), dim or 4
    ),
    "conditional_maf": lambda dim=None: _cond(ConditionalMAFTransform, dim),
    "conditional_iaf": lambda dim=None: _cond(ConditionalIAFTransform, dim),
    "conditional_iaf_stable": lambda dim=None: _cond(ConditionalIAFTransform, dim, stable=True),
    "batchnorm_eval": _batchnorm,
    "permute": lambda dim=None: _transform(PermuteTransform([2, 0, 3, 1]), 4),
    "pyro_affine_autoregressive": lambda dim=None: _transform(
        AffineAutoregressive(MADE(dim or 3, [16])), dim or 3
    ),
    # flows
    "flow_maf": lambda dim=None: _flow(MAF(dim or 3, 3, [16]), dim or 3),
    "flow_maf_batchnorm": lambda dim=None: _flow(MAF(dim or 3, 3, [16], batch_norm=True), dim or 3),
    "flow_maf_mog": lambda dim=None: _flow(MAF(dim or 2, 2, [16], base="mog"), dim or 2),
    "flow_iaf": lambda dim=None: _flow(IAF(dim or 3, 3, [16]), dim or 3),
    "flow_iaf_stable": lambda dim=None: _flow(IAF(dim or 3, 2, [16], stable=True), dim or 3),
    "flow_conditional_maf": lambda dim=None: _flow(
        MAF(dim or 3, 2, [16], context_dim=CONTEXT_DIM), dim or 3, _context()
    ),
    "flow_conditional_iaf": lambda dim=None: _flow(
        IAF(dim or 3, 2, [16], context_dim=CONTEXT_DIM), dim or 3, _context()
    ),
}

TRANSFORMS = [name for name in REGISTRY if not name.startswith("flow_")]
FLOWS = [name for name in REGISTRY if name.startswith("flow_")]


def build(name: str, device: torch.device, dtype: torch.dtype | None = None, **kw: Any) -> Case:
    """Build registry entry ``name`` on ``device`` in ``dtype`` (default: the default dtype)."""
    return REGISTRY[name](**kw).to(device, dtype)
