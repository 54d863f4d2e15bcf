"""Fit MAF, MAF-MoG and a MADE mixture of Gaussians to 2-D toy densities and plot them.

For each toy data set (moons, rings, checkerboard by default) three models are trained with
:func:`madeflow.fit` (Adam, early stopping on a validation draw):

- ``MAF``: 5 MAF layers (MADEs with hidden layers [64, 64]) on a standard normal base;
- ``MAF-MoG``: the same flow on a MADE mixture-of-Gaussians base (10 components);
- ``MADE-MoG``: a single :class:`~madeflow.GaussianMixtureMADE` (10 components per conditional).

The script prints the test log-likelihood (nats per point, on a fresh draw) of every model and
saves one figure: one row per data set; columns are the data, then for each model its density
``exp(log_prob)`` on a grid and samples from it.

    python examples/toy_2d.py                      # full run, about 3-4 minutes on 1 CPU core
    python examples/toy_2d.py --quick              # a few seconds
    python examples/toy_2d.py --out figure.png --datasets moons,spirals
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from madeflow import MAF, GaussianMixtureMADE, evaluate_log_prob, fit  # noqa: E402
from madeflow.data import TOY_DATASETS, toy_data  # noqa: E402


def model_builders(hidden: list[int], layers: int) -> dict[str, Callable[[], nn.Module]]:
    """Name -> constructor of each model compared (all 2-D, unconditional)."""
    return {
        "MAF": lambda: MAF(2, num_transforms=layers, hidden_dims=hidden),
        "MAF-MoG": lambda: MAF(
            2, num_transforms=layers, hidden_dims=hidden, base="mog", num_components=10
        ),
        "MADE-MoG": lambda: GaussianMixtureMADE(2, hidden, num_components=10),
    }


@torch.no_grad()
def density_grid(
    model: nn.Module, lim: float, resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(log_prob)`` on a ``resolution x resolution`` grid over ``[-lim, lim]^2``."""
    axis = torch.linspace(-lim, lim, resolution)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    log_p = evaluate_log_prob(model, points, batch_size=4096)
    return axis, log_p.exp().reshape(resolution, resolution)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny nets, few points, 2 epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, init and training")
    parser.add_argument("--out", default="toy_2d.png", help="where to save the figure")
    parser.add_argument(
        "--datasets",
        default="moons,rings,checkerboard",
        help=f"comma-separated, from {', '.join(TOY_DATASETS)}",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]

    if args.quick:
        n_train, n_eval, hidden, layers, epochs, res = 500, 200, [16], 2, 2, 40
    else:
        n_train, n_eval, hidden, layers, epochs, res = 5000, 2000, [64, 64], 5, 150, 150
    builders = model_builders(hidden, layers)

    ncols = 1 + 2 * len(builders)
    fig, axes = plt.subplots(
        len(names), ncols, figsize=(1.6 * ncols, 1.6 * len(names)), squeeze=False
    )
    results: dict[str, dict[str, tuple[float, float, float]]] = {}
    for row, name in enumerate(names):
        # Three independent draws: train, validation (early stopping) and test.
        train = toy_data(name, n_train, seed=3 * args.seed)
        val = toy_data(name, n_eval, seed=3 * args.seed + 1)
        test = toy_data(name, n_eval, seed=3 * args.seed + 2)
        lim = math.ceil(float(train.abs().quantile(0.995)) * 1.1 * 2) / 2
        plot = train[:2000]
        axes[row, 0].scatter(plot[:, 0], plot[:, 1], s=0.5, alpha=0.5, color="k")
        axes[row, 0].set_ylabel(name)
        results[name] = {}
        for j, (model_name, build) in enumerate(builders.items()):
            torch.manual_seed(args.seed)
            model = build()
            t0 = time.perf_counter()
            fit(
                model,
                train,
                val,
                max_epochs=epochs,
                batch_size=128,
                lr=3e-3,
                patience=15,
                clip_grad_norm=10.0,
                seed=args.seed,
                progress=False,
            )
            seconds = time.perf_counter() - t0
            test_ll = evaluate_log_prob(model, test)
            stderr = float(test_ll.std()) / math.sqrt(len(test_ll))
            results[name][model_name] = (float(test_ll.mean()), stderr, seconds)
            print(f"done: {name} / {model_name}: {seconds:.1f} s", flush=True)

            axis, density = density_grid(model, lim, res)
            ax = axes[row, 1 + 2 * j]
            ax.pcolormesh(axis, axis, density, shading="auto", cmap="viridis")
            model.eval()
            samples = model.sample((2000,))
            keep = (samples.abs() <= lim).all(-1)  # flows can throw rare far-away samples
            ax = axes[row, 2 + 2 * j]
            ax.scatter(samples[keep, 0], samples[keep, 1], s=0.5, alpha=0.5, color="C0")
            if row == 0:
                axes[row, 1 + 2 * j].set_title(f"{model_name}\ndensity", fontsize=9)
                axes[row, 2 + 2 * j].set_title(f"{model_name}\nsamples", fontsize=9)
        if row == 0:
            axes[row, 0].set_title("data", fontsize=9)
        for ax in axes[row]:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(args.out, dpi=72)
    plt.close(fig)

    models = list(builders)
    print()
    print(
        f"Test log-likelihood, nats per point (higher is better), {n_eval} fresh test points, "
        f"+/- one standard error; hidden {hidden}, {layers} flow layers."
    )
    print()
    print("| dataset | " + " | ".join(models) + " |")
    print("|---" * (1 + len(models)) + "|")
    for name in names:
        cells = [f"{results[name][m][0]:.3f} +/- {results[name][m][1]:.3f}" for m in models]
        print(f"| {name} | " + " | ".join(cells) + " |")
    total = sum(r[2] for res_ in results.values() for r in res_.values())
    print()
    print(f"Training time: {total:.0f} s in total. Figure saved to {args.out}")


if __name__ == "__main__":
    main()
