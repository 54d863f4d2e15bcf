"""What order-agnostic training costs: one mask vs K masks with fixed, covering or random orderings.

An exact conditional p(rest | observed) needs a mask whose ordering starts with the observed
inputs, so conditioning on many different subsets needs many orderings. This script measures what
that costs in full-data test log-likelihood on the digits (D = 64, binarized for BernoulliMADE, or
in logit space for a 10-component GaussianMixtureMADE with ``--data logit``), for four ways of
choosing the masks of the same network:

* ``1 mask``: the identity ordering (row-major pixels, so the top half comes first);
* ``K masks, identity``: the same ordering, K connectivities (connectivity-agnostic only);
* ``K masks, top half first``: ``covering_orderings(64, [top half], per_subset=K)``, i.e. the 32
  top pixels first in a random order, then the bottom 32 in a random order, per mask;
* ``K masks, random``: K uniformly random orderings (``permutation="random"``).

Every model: one hidden layer, Adam (lr 3e-3), minibatches of 100, the next mask after every step
(:func:`madeflow.fit`), early stopping on the validation log-likelihood (of the mask ensemble)
with patience 20, at most 300 epochs. Reported on the 359 test images, in nats per image: the
mask ensemble's log-likelihood (the density the MADE paper evaluates) and its difference from the
one-mask model's on the same seed (a paired comparison), the mean over masks of
each single mask's, and the exact log p(bottom half | top half) of the covering masks' mixture
(``n/a`` where no mask's ordering starts with the top half). Mean and standard deviation over
``--seeds`` seeds (each seed: its own data split, initialization and masks).

    python examples/order_agnostic_digits.py                # binary, 3 seeds (about 10 min)
    python examples/order_agnostic_digits.py --data logit   # MoG in logit space
    python examples/order_agnostic_digits.py --quick        # a few seconds
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from madeflow import covering_orderings, evaluate_log_prob, fit
from madeflow.data import load_digits
from madeflow.distributions import BernoulliMADE, GaussianMixtureMADE, MADEDensity

TOP = torch.arange(64) < 32  # the top four rows of the 8x8 image


def build(kind: str, data: str, masks: int, hidden: int, seed: int) -> MADEDensity:
    """One of the four mask schemes, on the same network."""
    if kind == "1 mask":
        options = {}
    elif kind == "identity":
        options = {"num_masks": masks}
    elif kind == "top half first":
        options = {"permutation": covering_orderings(64, [TOP], per_subset=masks, seed=seed)}
    else:
        options = {"num_masks": masks, "permutation": "random"}
    if data == "binary":
        return BernoulliMADE(64, [hidden], skip_connections=True, seed=seed, **options)
    return GaussianMixtureMADE(64, [hidden], num_components=10, seed=seed, **options)


def mean_single_mask(model: MADEDensity, x: torch.Tensor) -> float:
    """The mean over masks of each mask's own test log-likelihood."""
    made, scores = model.made, []
    with torch.no_grad():
        for k in range(made.num_masks):
            made.set_mask(k)
            scores.append(float(model.log_prob(x).mean()))
    made.set_mask(0)
    return sum(scores) / len(scores)


def conditional(model: MADEDensity, x: torch.Tensor) -> float | None:
    """Mean exact log p(bottom | top), or None when no mask starts with the top half."""
    try:
        model.covering_masks(TOP)
    except ValueError:
        return None
    with torch.no_grad():
        return float(model.conditional_log_prob(x, TOP).mean())


def cell(values: list[float | None], sign: str = "") -> str:
    if any(v is None for v in values):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:{sign}.2f}"
    return f"{statistics.mean(values):{sign}.2f} +/- {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny nets, 2 epochs, 1 seed")
    parser.add_argument("--data", choices=("binary", "logit"), default="binary")
    parser.add_argument("--masks", type=int, default=8, help="K, masks per multi-mask model")
    parser.add_argument("--hidden", type=int, default=None, help="hidden units (default 300)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (300)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = args.hidden or (16 if args.quick else 300)
    seeds = args.seeds or (1 if args.quick else 3)
    epochs = args.epochs or (2 if args.quick else 300)
    masks = 2 if args.quick else args.masks

    kinds = ("1 mask", "identity", "top half first", "random")
    results: dict[str, dict[str, list]] = {k: {"ens": [], "single": [], "cond": []} for k in kinds}
    start = time.perf_counter()
    for seed in range(seeds):
        split = load_digits(args.data, seed=seed)
        for kind in kinds:
            torch.manual_seed(seed)
            model = build(kind, args.data, masks, hidden, seed)
            t0 = time.perf_counter()
            history = fit(
                model, split.train, split.val, max_epochs=epochs, batch_size=100, lr=3e-3,
                patience=20, seed=seed, progress=False,
            )  # fmt: skip
            r = results[kind]
            r["ens"].append(float(evaluate_log_prob(model, split.test).mean()))
            r["single"].append(mean_single_mask(model, split.test))
            r["cond"].append(conditional(model, split.test))
            print(
                f"seed {seed}, {kind}: best epoch {history.best_epoch}, test LL "
                f"{r['ens'][-1]:.2f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )

    family = "BernoulliMADE, binarized" if args.data == "binary" else "MoG MADE (K=10), logit"
    print()
    print(f"{family} digits, 1x{hidden} hidden, K = {masks} masks, {seeds} seed(s).")
    print("Test log-likelihood in nats per image (higher is better), mean +/- sd over seeds.")
    print()
    print(
        "| masks | test LL (ensemble) | minus 1 mask's (same seed) | test LL (single mask, mean) "
        "| log p(bottom \\| top) |"
    )
    print("|---|---|---|---|---|")
    base = results["1 mask"]["ens"]
    for kind in kinds:
        r = results[kind]
        name = kind if kind == "1 mask" else f"{masks} masks, {kind}"
        paired = cell([e - b for e, b in zip(r["ens"], base)], "+") if kind != "1 mask" else ""
        print(f"| {name} | {cell(r['ens'])} | {paired} | {cell(r['single'])} | {cell(r['cond'])} |")
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
