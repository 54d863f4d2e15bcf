"""Pyro transforms built on MADE: MAF and IAF layers, batch norm, permutations, factories."""

from madeflow.transforms.batchnorm import BatchNormTransform
from madeflow.transforms.factories import (
    conditional_iaf_transform,
    conditional_maf_transform,
    iaf_transform,
    maf_transform,
)
from madeflow.transforms.iaf import ConditionalIAFTransform, IAFTransform
from madeflow.transforms.maf import ConditionalMAFTransform, MAFTransform
from madeflow.transforms.permute import PermuteTransform

__all__ = [
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
