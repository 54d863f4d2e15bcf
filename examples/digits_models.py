"""Compare every continuous madeflow density model on dequantized logit digits, in one table.

Models: GaussianMADE, GaussianMixtureMADE (MADE MoG, 10 components), MAF (5 layers, normal
base) and MAF-MoG (5 layers on a MADE MoG base), all with the same hidden widths. Data:
scikit-learn's 8x8 digits from :func:`madeflow.data.load_digits` (``"logit"``: uniformly
dequantized, ``y = logit(0.05 + 0.9 x)``), 1,258 train / 180 validation / 359 test images.

Every model is trained with :func:`madeflow.fit` (Adam, minibatches of 100, fresh
dequantization noise for every training minibatch, early stopping on the validation
log-likelihood; the test set is only scored, never used to select anything). The table gives the
test log-likelihood in logit space and in ``[0, 1]`` pixel space (adding
:func:`madeflow.data.logit_log_jacobian`), with one standard error, and each model's wall time.

    python examples/digits_models.py            # full run, about 1-2 minutes on 1 CPU core
    python examples/digits_models.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from madeflow import MAF, GaussianMADE, GaussianMixtureMADE, evaluate_log_prob, fit
from madeflow.data import Dequantize, load_digits, logit_log_jacobian

ALPHA = 0.05  # load_digits' default logit margin


def model_builders(hidden: list[int], layers: int) -> dict[str, Callable[[], nn.Module]]:
    """Name -> constructor of each model of the table (64-D, unconditional)."""
    return {
        "GaussianMADE": lambda: GaussianMADE(64, hidden),
        "GaussianMixtureMADE (K=10)": lambda: GaussianMixtureMADE(64, hidden, num_components=10),
        f"MAF ({layers} layers)": lambda: MAF(64, num_transforms=layers, hidden_dims=hidden),
        f"MAF-MoG ({layers} layers, K=10)": lambda: MAF(
            64, num_transforms=layers, hidden_dims=hidden, base="mog", num_components=10
        ),
    }


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of a ``(N,)`` tensor."""
    return float(values.mean()), float(values.std()) / math.sqrt(values.numel())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny nets, 2 epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, init, training")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (200)")
    parser.add_argument("--patience", type=int, default=20, help="early-stopping patience")
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=None, help="hidden widths (256 256)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = args.hidden or ([64] if args.quick else [256, 256])
    layers = 2 if args.quick else 5
    epochs = args.epochs or (2 if args.quick else 200)

    data = load_digits("logit", seed=args.seed, alpha=ALPHA)
    redraw = Dequantize(ALPHA)  # fresh dequantization per batch
    test_jac = logit_log_jacobian(data.test, alpha=ALPHA)
    rows = []
    for name, build in model_builders(hidden, layers).items():
        torch.manual_seed(args.seed)
        model = build()
        t0 = time.perf_counter()
        hist = fit(
            model,
            data.train,
            data.val,
            max_epochs=epochs,
            batch_size=100,
            lr=1e-3,
            weight_decay=1e-6,
            patience=args.patience,
            clip_grad_norm=10.0,
            seed=args.seed,
            progress=False,
            augment=redraw,
        )
        test_ll = evaluate_log_prob(model, data.test)
        seconds = time.perf_counter() - t0
        rows.append(
            (
                name,
                hist.best_epoch,
                hist.epochs,
                hist.best_val_log_lik,
                mean_and_stderr(test_ll),
                mean_and_stderr(test_ll + test_jac),
                seconds,
            )
        )
        print(f"done: {name}: best epoch {hist.best_epoch} ({seconds:.0f} s)", flush=True)

    print()
    print(
        f"Logit digits (seed {args.seed}), hidden {hidden}: test log-likelihood in nats per "
        "image (higher is better), +/- one standard error over the 359 test images."
    )
    print()
    print(
        "| model | best epoch / run | val LL (logit) | test LL (logit) "
        "| test LL ([0,1] pixels) | wall time |"
    )
    print("|---|---|---|---|---|---|")
    for name, best, run, val, (lm, ls), (pm, ps), seconds in rows:
        print(
            f"| {name} | {best} / {run} | {val:.2f} | {lm:.2f} +/- {ls:.2f} "
            f"| {pm:.2f} +/- {ps:.2f} | {seconds:.0f} s |"
        )
    print()
    print(f"Total: {sum(r[-1] for r in rows):.0f} s.")


if __name__ == "__main__":
    main()
