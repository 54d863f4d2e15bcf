"""Neal's funnel fitted with madeflow's AutoIAF against Pyro's AutoNormal and AutoIAFNormal.

The model has no observations, so the exact log-evidence is 0 and each guide's ELBO is
``-KL(q || p)``: the closer to 0, the better. Every guide gets the same steps, particles and
learning rate.

    python examples/funnel_autoiaf.py            # the full run reported in docs/variational.md
    python examples/funnel_autoiaf.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoNormal

from madeflow.autoguide import AutoIAF


def make_model(dim: int):
    def model() -> None:
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        scale = torch.exp(v / 2).unsqueeze(-1).expand(*v.shape, dim - 1)
        pyro.sample("x", dist.Normal(0.0, scale).to_event(1))

    return model


def fit(name, guide, model, steps, particles, lr, tail, final_particles, seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=0)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    start = time.perf_counter()
    losses = [svi.step() for _ in range(steps)]
    seconds = time.perf_counter() - start
    final = Trace_ELBO(num_particles=final_particles, vectorize_particles=True, max_plate_nesting=0)
    with torch.no_grad():
        estimates = [-final.loss(model, guide) for _ in range(4)]
    est = torch.tensor(estimates)
    return {
        "guide": name,
        "tail": -sum(losses[-tail:]) / tail,
        "final": est.mean().item(),
        "final_se": (est.std() / 2).item(),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=10, help="1 + number of x's")
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few seconds, for tests")
    args = parser.parse_args()
    if args.quick:
        args.steps = 60
    tail = max(1, min(500, args.steps // 5))
    final_particles = 1000 if args.quick else 10000
    d = args.dim
    hidden = [4 * d]
    model = make_model(d)
    guides = {
        "pyro AutoNormal": lambda: AutoNormal(model),
        "pyro AutoIAFNormal (2 layers)": lambda: AutoIAFNormal(
            model, hidden_dim=hidden, num_transforms=2
        ),
        "madeflow AutoIAF (2 layers)": lambda: AutoIAF(model, num_transforms=2, hidden_dims=hidden),
        "madeflow AutoIAF stable (2 layers)": lambda: AutoIAF(
            model, num_transforms=2, hidden_dims=hidden, stable=True
        ),
    }
    rows = []
    for name, make in guides.items():
        torch.manual_seed(args.seed)
        rows.append(
            fit(
                name, make(), model, args.steps, args.particles, args.lr, tail,
                final_particles, args.seed,
            )
        )  # fmt: skip
    print(
        f"Neal's funnel, D={d}, {args.steps} steps, {args.particles} particles/step, "
        f"Adam lr={args.lr}, MADE hidden {hidden}, seed {args.seed}; exact log Z = 0"
    )
    print(
        f"| guide | ELBO, mean of last {tail} steps | final ELBO ({final_particles} x 4 "
        "particles) | train s |"
    )
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['guide']} | {r['tail']:.3f} | {r['final']:.3f} +- {r['final_se']:.3f} "
            f"| {r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
