"""Pyro transforms built on MADE: MAF and IAF layers, batch norm, permutations, factories.

* :mod:`madeflow.transforms.affine`: the one affine autoregressive core, MAF and IAF layers;
* :mod:`madeflow.transforms.conditional`: their conditional twins (``condition(context)``);
* :mod:`madeflow.transforms.batchnorm`, :mod:`madeflow.transforms.permute`: the other layers;
* :mod:`madeflow.transforms.factories`: Pyro-style one-call constructors;
* :mod:`madeflow.transforms.cache`: what layers keep between calls stays out of saved state.
"""

from madeflow.transforms.affine import AffineAutoregressive, IAFTransform, MAFTransform
from madeflow.transforms.batchnorm import BatchNormTransform
from madeflow.transforms.conditional import ConditionalIAFTransform, ConditionalMAFTransform
from madeflow.transforms.factories import (
    conditional_iaf_transform,
    conditional_maf_transform,
    iaf_transform,
    maf_transform,
)
from madeflow.transforms.permute import PermuteTransform

__all__ = [
    "AffineAutoregressive",
    "BatchNormTransform",
    "ConditionalIAFTransform",
    "ConditionalMAFTransform",
    "IAFTransform",
    "MAFTransform",
    "PermuteTransform",
    "conditional_iaf_transform",
    "conditional_maf_transform",
    "iaf_transform",
    "maf_transform",
]
