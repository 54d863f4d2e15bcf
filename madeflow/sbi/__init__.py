"""madeflow inside sbi: MAF and MADE density estimators for neural posterior/likelihood estimation.

Optional: ``pip install "madeflow[sbi]"``; ``import madeflow`` never imports sbi, this module does.
The builders follow sbi's convention, ``build(batch_theta, batch_x, **options) -> estimator``::

    from sbi.inference import NPE, NLE
    import madeflow.sbi

    npe = NPE(prior, density_estimator=madeflow.sbi.build_maf)
    npe = NPE(prior, density_estimator=madeflow.sbi.posterior_nn("maf_mog", hidden_features=64))
    nle = NLE(prior, density_estimator=madeflow.sbi.likelihood_nn("maf"))

Each returns a :class:`MadeflowDensityEstimator` (an sbi ``ConditionalDensityEstimator``); its
``sample`` runs madeflow's fast sequential solve, about one network pass per MAF layer instead of
one per parameter dimension.
"""

from madeflow.sbi._compat import require_sbi

require_sbi()

from madeflow.sbi.builders import (  # noqa: E402
    DEFAULTS,
    build_made_mog,
    build_maf,
    build_maf_mog,
    likelihood_nn,
    posterior_nn,
)
from madeflow.sbi.estimator import MadeflowDensityEstimator  # noqa: E402

__all__ = [
    "DEFAULTS",
    "MadeflowDensityEstimator",
    "build_made_mog",
    "build_maf",
    "build_maf_mog",
    "likelihood_nn",
    "posterior_nn",
]
