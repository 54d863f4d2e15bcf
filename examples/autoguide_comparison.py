"""madeflow's AutoIAF against Pyro's AutoIAFNormal and AutoNormal on standard targets, per seed.

Targets (every latent is real, so the unconstrained vector is the latent vector):

- ``funnel``: Neal's funnel, ``v ~ N(0, 3)``, ``x_i ~ N(0, exp(v / 2))`` for ``i = 1..9`` (D = 10).
  No data: ``log Z = 0``.
- ``banana``: the twisted Gaussian of Haario et al. (1999), ``x1 ~ N(0, 10)``,
  ``x2 ~ N(0.1 (x1^2 - 100), 1)`` (D = 2). No data: ``log Z = 0``.
- ``banana-reversed``: the same density with ``x2`` declared first (a ``N(0, 1)`` site corrected
  by ``pyro.factor``), so the guide's natural ordering runs against the model's dependence.
- ``logreg``: Bayesian logistic regression, 5 features and an intercept with ``N(0, 1)`` priors,
  100 synthetic points drawn with seed 0 (D = 6). ``log Z`` is estimated by importance sampling
  from a Student-t (5 dof) centred on the Laplace approximation; its standard error is printed.

Each guide is trained with ``Trace_ELBO`` (``--particles`` per step) and Adam for ``--steps`` steps;
then ``KL(q || p) = log Z - ELBO`` with the ELBO from 4 x ``--final-particles`` particles, no grad.
Lower is better; 0 is exact. The defaults give the table in docs/variational.md.

    OMP_NUM_THREADS=1 python examples/autoguide_comparison.py           # ~15 min, the docs' table
    OMP_NUM_THREADS=1 python examples/autoguide_comparison.py --guides sweep   # the defaults sweep
    OMP_NUM_THREADS=1 python examples/autoguide_comparison.py --targets funnel --seeds 8
    python examples/autoguide_comparison.py --quick                     # a few seconds
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_feasible

from madeflow.autoguide import AutoIAF

H = [32, 32]  # the shared architecture of the first rows: two layers of [32, 32]

# Each guide set maps a row label to a function of the model.
GUIDES: dict[str, dict[str, Callable]] = {
    "main": {
        "Pyro AutoIAFNormal(model, hidden_dim=[32, 32], num_transforms=2)": lambda m: AutoIAFNormal(
            m, hidden_dim=H, num_transforms=2
        ),
        "madeflow AutoIAF(model, hidden_dim=[32, 32], num_transforms=2)": lambda m: AutoIAF(
            m, hidden_dim=H, num_transforms=2
        ),
        "madeflow AutoIAF(same, init_scale=0.1)": lambda m: AutoIAF(
            m, hidden_dim=H, num_transforms=2, init_scale=0.1
        ),
        "Pyro AutoIAFNormal(model)": lambda m: AutoIAFNormal(m),
        "madeflow AutoIAF(model)": lambda m: AutoIAF(m),
        "Pyro AutoNormal(model)": lambda m: AutoNormal(m),
    },
    # One argument of madeflow's default AutoIAF(model) changed per row.
    "sweep": {
        "init_scale=0.1": lambda m: AutoIAF(m, init_scale=0.1),
        "init_scale=0.3": lambda m: AutoIAF(m, init_scale=0.3),
        "init_scale=1": lambda m: AutoIAF(m, init_scale=1.0),
        "init_loc_fn=init_to_feasible": lambda m: AutoIAF(m, init_loc_fn=init_to_feasible),
        "num_transforms=2": lambda m: AutoIAF(m, num_transforms=2),
        "num_transforms=3": lambda m: AutoIAF(m, num_transforms=3),
        "stable=True": lambda m: AutoIAF(m, stable=True),
        "num_transforms=2, init_scale=0.1 (the old defaults)": lambda m: AutoIAF(
            m, num_transforms=2, init_scale=0.1
        ),
    },
}


def funnel(dim: int = 10):
    def model() -> None:
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        scale = torch.exp(v / 2).unsqueeze(-1).expand(*v.shape, dim - 1)
        pyro.sample("x", dist.Normal(0.0, scale).to_event(1))

    return model


def _banana_log_density(x1: torch.Tensor, x2: torch.Tensor, b: float) -> torch.Tensor:
    return dist.Normal(0.0, 10.0).log_prob(x1) + dist.Normal(b * (x1**2 - 100.0), 1.0).log_prob(x2)


def banana(b: float = 0.1):
    def model() -> None:
        x1 = pyro.sample("x1", dist.Normal(0.0, 10.0))
        pyro.sample("x2", dist.Normal(b * (x1**2 - 100.0), 1.0))

    return model


def banana_reversed(b: float = 0.1):
    base = dist.Normal(0.0, 1.0)

    def model() -> None:
        x2 = pyro.sample("x2", base)
        x1 = pyro.sample("x1", base)
        # Replace the N(0, 1) densities by the banana's: the joint stays normalised.
        correction = _banana_log_density(x1, x2, b) - base.log_prob(x1) - base.log_prob(x2)
        pyro.factor("banana", correction)

    return model


class LogisticRegression:
    """Synthetic Bayesian logistic regression; the data depend only on ``seed``."""

    def __init__(self, n: int = 100, p: int = 5, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        f32 = torch.float32
        self.x = torch.randn(n, p, generator=g, dtype=f32)
        w = torch.randn(p, generator=g, dtype=f32)
        self.y = torch.bernoulli(torch.sigmoid(self.x @ w + 0.5), generator=g)
        self.p = p

    def model(self) -> None:
        """The Pyro model: ``w ~ N(0, I)``, ``b ~ N(0, 1)``, ``y ~ Bernoulli(logits=x w + b)``."""
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([self.p]).to_event(1))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        # w is (p,) or, with vectorized particles, (K, 1, p): (w * x).sum(-1) puts the data last.
        logits = (w * self.x).sum(-1)
        with pyro.plate("data", self.x.shape[0], dim=-1):
            pyro.sample("y", dist.Bernoulli(logits=logits + b), obs=self.y)

    def log_joint(self, theta: torch.Tensor) -> torch.Tensor:
        """``log p(y, w, b)`` for ``theta = (w, b)`` of shape ``(K, p + 1)``; float64."""
        x, y = self.x.double(), self.y.double()
        logits = theta[:, : self.p] @ x.T + theta[:, self.p :]
        lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y.expand_as(logits), reduction="none"
        ).sum(-1)
        return lik + dist.Normal(0.0, 1.0).log_prob(theta).sum(-1)

    def log_evidence(self, samples: int, reps: int = 4) -> tuple[float, float]:
        """``log Z`` by importance sampling around the Laplace approximation: (mean, std. error)."""
        torch.manual_seed(0)
        theta = torch.zeros(1, self.p + 1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([theta], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = -self.log_joint(theta).sum()
            loss.backward()
            return loss

        opt.step(closure)
        mode = theta.detach()[0]
        hess = torch.autograd.functional.hessian(lambda t: -self.log_joint(t[None])[0], mode)
        chol = torch.linalg.cholesky(1.3 * torch.linalg.inv(hess))
        t5 = torch.distributions.StudentT(torch.tensor(5.0, dtype=torch.float64))
        estimates = []
        for _ in range(reps):
            u = t5.sample((samples, self.p + 1))
            log_q = t5.log_prob(u).sum(-1) - chol.diagonal().log().sum()
            log_w = self.log_joint(mode + u @ chol.T) - log_q
            estimates.append((torch.logsumexp(log_w, 0) - math.log(samples)).item())
        est = torch.tensor(estimates, dtype=torch.float64)
        self.laplace_sd = torch.linalg.inv(hess).diagonal().sqrt()
        return est.mean().item(), (est.std() / math.sqrt(reps)).item()


def fit(model, make, seed: int, steps: int, lr: float, particles: int, final: int) -> float:
    """Train ``make(model)`` from ``seed`` and return its final ELBO (mean of 4 estimates)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make(model)
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    for _ in range(steps):
        svi.step()
    final_elbo = Trace_ELBO(num_particles=final, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        return -sum(final_elbo.loss(model, guide) for _ in range(4)) / 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--particles", type=int, default=4, help="ELBO particles per step")
    parser.add_argument("--final-particles", type=int, default=10000)
    parser.add_argument("--seeds", type=int, default=4, help="seeds 0 .. SEEDS - 1")
    parser.add_argument(
        "--targets", default="funnel,banana,banana-reversed,logreg", help="comma-separated"
    )
    parser.add_argument(
        "--guides", choices=sorted(GUIDES), default="main",
        help="main: the guides compared; sweep: madeflow's defaults varied one at a time",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a few seconds, for tests")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    torch.set_num_threads(1)
    if args.quick:
        args.steps, args.final_particles, args.seeds = 20, 200, 1
    logreg = LogisticRegression()
    targets = {
        "funnel": ("Neal's funnel (D = 10)", funnel(), (0.0, 0.0)),
        "banana": ("banana, b = 0.1 (D = 2)", banana(), (0.0, 0.0)),
        "banana-reversed": ("banana, x2 declared first (D = 2)", banana_reversed(), (0.0, 0.0)),
        "logreg": ("logistic regression, 100 points (D = 6)", logreg.model, None),
    }
    print(
        f"{args.steps} Adam steps at lr {args.lr}, {args.particles} particles per step; "
        f"KL(q || p) = log Z - ELBO, ELBO from 4 x {args.final_particles} particles; "
        f"seeds 0..{args.seeds - 1}; lower is better"
    )
    if args.guides == "sweep":
        print("Rows: madeflow AutoIAF(model, <row>), every other argument at its default.")
    for key in args.targets.split(","):
        title, model, log_z = targets[key]
        if log_z is None:
            log_z = logreg.log_evidence(2000 if args.quick else 250000)
        print(f"\n{title}: log Z = {log_z[0]:.3f} +- {log_z[1]:.3f}\n")
        if key == "logreg":
            sd = logreg.laplace_sd
            print(f"(Laplace posterior sd {sd.min():.2f} to {sd.max():.2f})\n")
        seeds = range(args.seeds)
        print("| guide | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
        print("|---|" + "---|" * (args.seeds + 1))
        for name, make in GUIDES[args.guides].items():
            kls = [
                log_z[0] - fit(model, make, s, args.steps, args.lr, args.particles,
                               args.final_particles)
                for s in seeds
            ]  # fmt: skip
            cells = " | ".join(f"{k:.3f}" for k in kls)
            print(f"| {name} | {cells} | {sum(kls) / len(kls):.3f} |", flush=True)


if __name__ == "__main__":
    main()
