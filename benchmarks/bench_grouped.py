"""One masked layer: the grouped product against the dense (masked) product.

Times ``F.linear(x, W * mask, b)`` (what every peer runs), ``F.linear(x, W, b)`` (a dense layer,
the floor for any unstructured product) and :func:`madeflow.nn.grouped.grouped_masked_linear` on a
MADE hidden-to-hidden mask with degree-sorted units, forward alone and forward + backward, for
several numbers of row groups. The ideal with ``G`` groups is ``(G + 1) / (2 G)`` of the dense
cost (0.5625 for 8), what the block lower-triangular structure leaves to compute.

    python benchmarks/bench_grouped.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from madeflow.nn.grouped import group_plan, grouped_masked_linear
from madeflow.nn.masks import mask_from_degrees


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--input-dim", type=int, default=64, help="D: degrees run 1..D-1")
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--reps", type=int, default=21)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    h, d = args.hidden, args.input_dim
    deg_in = torch.randint(1, d, (h,), generator=gen).sort().values
    deg_out = torch.randint(1, d, (h,), generator=gen).sort().values
    mask = mask_from_degrees(deg_out, deg_in)
    w = torch.randn(h, h, generator=gen, requires_grad=True)
    b = torch.randn(h, generator=gen, requires_grad=True)
    print(f"threads={args.threads} H={h} D={d} mask density={mask.float().mean():.3f}")
    print("| B | product | forward ms | x dense | fwd+bwd ms | x dense |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch:
        x = torch.randn(batch, h, generator=gen, requires_grad=True)
        grad = torch.randn(batch, h, generator=gen)
        products: dict[str, Callable[[], torch.Tensor]] = {
            "dense": lambda x=x: F.linear(x, w, b),
            "dense masked": lambda x=x: F.linear(x, w * mask, b),
        }
        for g in args.groups:
            plan = group_plan(mask, g)
            products[f"grouped, {g} groups"] = lambda x=x, p=plan: grouped_masked_linear(
                x, w, mask, b, p
            )
        rows = {}
        for name, fn in products.items():

            def forward(fn: Callable[[], torch.Tensor] = fn) -> None:
                with torch.no_grad():
                    fn()

            def both(fn: Callable[[], torch.Tensor] = fn, grad: torch.Tensor = grad) -> None:
                fn().backward(grad)

            rows[name] = (_median_ms(forward, args.reps), _median_ms(both, args.reps))
        ref_f, ref_b = rows["dense"]
        for name, (f_ms, b_ms) in rows.items():
            print(
                f"| {batch} | {name} | {f_ms:.2f} | {f_ms / ref_f:.2f} | {b_ms:.2f} | "
                f"{b_ms / ref_b:.2f} |"
            )


if __name__ == "__main__":
    main()
