"""A VAE on binarized scikit-learn digits, with and without an IAF posterior (Pyro SVI).

The encoder outputs ``loc``, ``scale`` and a context ``h``; the posterior is the diagonal Normal
``N(loc, scale)`` followed by :class:`madeflow.transforms.ConditionalIAFTransform` layers
conditioned on ``h`` (orderings reversed every other layer), as in Kingma et al. (2016). Both
variants get the same networks, steps and seed; the table reports the test ELBO per image.

    python examples/vae_iaf.py            # the run reported in docs/variational.md
    python examples/vae_iaf.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import ConditionalTransformedDistribution
from pyro.infer import SVI, Trace_ELBO
from sklearn.datasets import load_digits
from torch import nn

from madeflow import MADE
from madeflow.transforms import ConditionalIAFTransform


def load_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(load_digits().data > 8, dtype=torch.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(x))
    return x[perm[:n_train]], x[perm[n_train:]]


class VAE(nn.Module):
    """Bernoulli decoder, Gaussian encoder with context ``h``, optional conditional IAF."""

    def __init__(self, z_dim: int, h_dim: int, hidden: int, num_iaf: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.ELU(), nn.Linear(hidden, hidden))
        self.enc_out = nn.Linear(hidden, 2 * z_dim + h_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
            nn.Linear(hidden, 64),
        )  # fmt: skip
        layers = []
        for i in range(num_iaf):
            order = list(range(z_dim))[:: -1 if i % 2 else 1]
            made = MADE(z_dim, [4 * z_dim + h_dim], context_dim=h_dim, permutation=order)
            with torch.no_grad():  # start each layer at the identity
                made.output_layer.weight.zero_()
                made.output_layer.bias.zero_()
            layers.append(ConditionalIAFTransform(made))
        self.iafs = nn.ModuleList(layers)

    def model(self, x: torch.Tensor) -> None:
        """p(z) p(x | z) for a batch ``x`` of shape ``(B, 64)``."""
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            logits = self.decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x): batch shape ``(B,)``, event shape ``(z_dim,)``."""
        out = self.enc_out(torch.nn.functional.elu(self.encoder(x)))
        loc, raw_scale, h = out.split([self.z_dim, self.z_dim, out.shape[-1] - 2 * self.z_dim], -1)
        base = dist.Normal(loc, nn.functional.softplus(raw_scale) + 1e-4).to_event(1)
        if not len(self.iafs):
            return base
        return ConditionalTransformedDistribution(base, list(self.iafs)).condition(h)

    def guide(self, x: torch.Tensor) -> None:
        """The Pyro guide: a sample from q(z | x) for each image."""
        pyro.module("encoder", self.encoder)
        pyro.module("enc_out", self.enc_out)
        pyro.module("iafs", self.iafs)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))


def evaluate_elbo(vae: VAE, x: torch.Tensor, particles: int) -> float:
    loss = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        return -sum(loss.loss(vae.model, vae.guide, xb) for xb in x.split(120)) / len(x)


def train(num_iaf: int, args: argparse.Namespace, x_train, x_test) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    vae = VAE(args.z_dim, args.h_dim, args.hidden, num_iaf)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": args.lr}), Trace_ELBO())
    start = time.perf_counter()
    for _ in range(args.epochs):
        for idx in torch.randperm(len(x_train)).split(args.batch_size):
            svi.step(x_train[idx])
    seconds = time.perf_counter() - start
    return {
        "posterior": f"diagonal Normal + {num_iaf} IAF" if num_iaf else "diagonal Normal",
        "train": evaluate_elbo(vae, x_train, args.eval_particles),
        "test": evaluate_elbo(vae, x_test, args.eval_particles),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--num-iaf", type=int, default=2)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--h-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-particles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few seconds, for tests")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.eval_particles = 2, 5
    x_train, x_test = load_data(0)
    rows = [train(k, args, x_train, x_test) for k in (0, args.num_iaf)]
    print(
        f"binarized digits (pixel > 8), {len(x_train)} train / {len(x_test)} test (seed 0), "
        f"z_dim={args.z_dim}, h_dim={args.h_dim}, {args.epochs} epochs of batch "
        f"{args.batch_size}, Adam lr={args.lr}, training seed {args.seed}, "
        f"ELBO with {args.eval_particles} particles"
    )
    print("| posterior | train ELBO / image | test ELBO / image | train s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['posterior']} | {r['train']:.3f} | {r['test']:.3f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
