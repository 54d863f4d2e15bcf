"""MADE density estimators: Bernoulli, Gaussian and mixture-of-Gaussians conditionals."""

from madeflow.distributions.bernoulli import BernoulliMADE
from madeflow.distributions.gaussian import GaussianMADE
from madeflow.distributions.made import MADEDensity, soft_clamp
from madeflow.distributions.mixture import GaussianMixtureMADE
from madeflow.distributions.pyro import MADEDistribution

__all__ = [
    "BernoulliMADE",
    "GaussianMADE",
    "GaussianMixtureMADE",
    "MADEDensity",
    "MADEDistribution",
    "soft_clamp",
]
