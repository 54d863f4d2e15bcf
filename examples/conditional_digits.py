"""A class-conditional MAF on logit digits: density given the label, and samples per class.

The context is the one-hot class label (``context_dim=10``): every MADE of the flow adds a dense
projection of it to its first hidden layer, so the whole flow models ``p(image | label)``. The
flow is trained with :func:`madeflow.fit` (``train_context``/``val_context``, fresh
dequantization noise per minibatch, early stopping on validation). The script reports the test
log-likelihood given the true label, the class-marginal ``log sum_c p(c) p(x | c)`` (``p(c)``
from the training labels), the accuracy of the Bayes classifier ``argmax_c p(c) p(x | c)`` that
comes for free, and saves a grid of samples: row ``c`` holds samples given label ``c``, mapped
back to pixels with ``x = (sigmoid(y) - alpha) / (1 - 2 alpha)`` clipped to ``[0, 1]``.

    python examples/conditional_digits.py           # full run, about 1 minute on 1 CPU core
    python examples/conditional_digits.py --quick   # a few seconds
"""

from __future__ import annotations

import argparse
import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.nn.functional import one_hot  # noqa: E402

from madeflow import MAF, evaluate_log_prob, fit  # noqa: E402
from madeflow.data import Dequantize, load_digits, logit_log_jacobian  # noqa: E402

ALPHA = 0.05  # load_digits' default logit margin
NUM_CLASSES = 10


def to_pixels(y: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """Logit space ``(*batch, 64)`` -> pixel intensities in ``[0, 1]``."""
    return ((torch.sigmoid(y) - alpha) / (1 - 2 * alpha)).clamp(0.0, 1.0)


def save_grid(images: torch.Tensor, path: str) -> None:
    """Save ``(classes, per_class, 64)`` pixel images as one grid (row = class)."""
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(0.6 * cols + 0.4, 0.6 * rows), squeeze=False)
    for c in range(rows):
        for j in range(cols):
            ax = axes[c, j]
            ax.imshow(images[c, j].reshape(8, 8), cmap="gray_r", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[c, 0].set_ylabel(str(c), rotation=0, labelpad=8, va="center")
    fig.subplots_adjust(left=0.06, right=0.99, top=0.99, bottom=0.01, wspace=0.08, hspace=0.08)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny flow, 2 epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, init, training")
    parser.add_argument("--out", default="conditional_digits.png", help="where to save samples")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (200)")
    parser.add_argument("--per-class", type=int, default=10, help="samples per class")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden, layers = ([64], 2) if args.quick else ([256, 256], 5)
    epochs = args.epochs or (2 if args.quick else 200)

    data = load_digits("logit", seed=args.seed, alpha=ALPHA)
    train_c = one_hot(data.train_y, NUM_CLASSES).float()  # (N, 10) one-hot labels
    val_c = one_hot(data.val_y, NUM_CLASSES).float()
    torch.manual_seed(args.seed)
    flow = MAF(64, num_transforms=layers, hidden_dims=hidden, context_dim=NUM_CLASSES)
    t0 = time.perf_counter()
    hist = fit(
        flow,
        data.train,
        data.val,
        train_context=train_c,
        val_context=val_c,
        max_epochs=epochs,
        batch_size=100,
        lr=1e-3,
        weight_decay=1e-6,
        patience=20,
        clip_grad_norm=10.0,
        seed=args.seed,
        progress=False,
        augment=Dequantize(ALPHA),  # fresh dequantization noise
    )
    seconds = time.perf_counter() - t0

    # log p(x | c) for every test image and every class c: (N, 10).
    n = data.test.shape[0]
    per_class = torch.stack(
        [
            evaluate_log_prob(flow, data.test, one_hot(torch.full((n,), c), NUM_CLASSES).float())
            for c in range(NUM_CLASSES)
        ],
        -1,
    )
    log_prior = torch.bincount(data.train_y, minlength=NUM_CLASSES).float().log()
    log_prior = log_prior - log_prior.logsumexp(0)
    given_label = per_class.gather(1, data.test_y[:, None]).squeeze(1)
    marginal = (per_class + log_prior).logsumexp(-1)
    accuracy = float(((per_class + log_prior).argmax(-1) == data.test_y).float().mean())
    jac = logit_log_jacobian(data.test, alpha=ALPHA)

    flow.eval()
    torch.manual_seed(args.seed)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(args.per_class)
    samples = flow.sample((), context=one_hot(labels, NUM_CLASSES).float())
    save_grid(to_pixels(samples).reshape(NUM_CLASSES, args.per_class, 64), args.out)

    def cell(v: torch.Tensor) -> str:
        return f"{float(v.mean()):.2f} +/- {float(v.std()) / math.sqrt(v.numel()):.2f}"

    print()
    print(
        f"Class-conditional MAF ({layers} layers, hidden {hidden}), logit digits seed "
        f"{args.seed}: best epoch {hist.best_epoch} of {hist.epochs}, {seconds:.0f} s. "
        "Test log-likelihood, nats per image (+/- one standard error, 359 images)."
    )
    print()
    print("| quantity | logit space | [0,1] pixels |")
    print("|---|---|---|")
    print(f"| log p(x \\| true label) | {cell(given_label)} | {cell(given_label + jac)} |")
    print(f"| log sum_c p(c) p(x \\| c) | {cell(marginal)} | {cell(marginal + jac)} |")
    print(f"| Bayes-classifier accuracy | {accuracy:.3f} | |")
    print()
    print(f"Samples saved to {args.out}")


if __name__ == "__main__":
    main()
