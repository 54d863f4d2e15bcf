"""MADE density estimators: Bernoulli, Gaussian and mixture-of-Gaussians conditionals."""

from madeflow.density.base import MADEDensity, soft_clamp
from madeflow.density.bernoulli import BernoulliMADE
from madeflow.density.distribution import MADEDistribution
from madeflow.density.gaussian import GaussianMADE
from madeflow.density.mixture import GaussianMixtureMADE

__all__ = [
    "BernoulliMADE",
    "GaussianMADE",
    "GaussianMixtureMADE",
    "MADEDensity",
    "MADEDistribution",
    "soft_clamp",
]
