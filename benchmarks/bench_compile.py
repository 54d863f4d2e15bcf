"""What ``torch.compile`` buys for a MAF training step, against madeflow's eager fast path.

A training step is fit's (fused) Adam on ``-log_prob(x).mean()`` of a 5-layer MAF
(``madeflow.MAF``, hidden ``[H, H]``, batch 256). Variants, timed interleaved in one run (medians):

* ``eager``: madeflow's default eager step (grouped masked products on large layers);
* ``eager-dense``: eager with the dense masked product everywhere (what compile traces);
* ``compiled``: the loss compiled with ``torch.compile`` (forward and backward, inductor), the
  optimizer step eager;
* ``compiled+opt``: also the optimizer step compiled.

    python benchmarks/bench_compile.py --threads 2 --sizes 64x256,64x1024
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from madeflow import MAF
from madeflow.train.loop import adam

LAYERS = 5
BATCH = 256


def _step(flow: MAF, x: torch.Tensor, compile_loss: bool, compile_opt: bool) -> Callable:
    opt = adam(flow.parameters(), 1e-4, 0.0)  # the optimizer fit uses (fused where possible)

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        return -flow.log_prob(batch).mean()

    loss = torch.compile(loss_fn, fullgraph=True) if compile_loss else loss_fn
    opt_step = torch.compile(opt.step) if compile_opt else opt.step

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(x).backward()
        opt_step()

    return step


def _variant(name: str, d: int, h: int) -> Callable:
    torch.manual_seed(0)
    flow = MAF(d, LAYERS, hidden_dims=[h, h], seed=0)
    if name == "eager-dense":
        for m in flow.modules():
            if hasattr(m, "grouped"):
                m.grouped = False
    x = torch.randn(BATCH, d)
    return _step(flow, x, name.startswith("compiled"), name == "compiled+opt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--sizes", default="64x256,64x1024", help="comma-separated DxH")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = ["8x32"] if args.quick else args.sizes.split(",")
    reps = 3 if args.quick else args.reps
    names = ["eager", "eager-dense", "compiled", "compiled+opt"]
    print(f"threads={args.threads} batch={BATCH} layers={LAYERS} reps={reps}\n")
    print("| D | H | variant | compile s | step ms (median) | x eager |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        d, h = (int(v) for v in size.split("x"))
        steps, warm = {}, {}
        for name in names:
            torch._dynamo.reset()
            steps[name] = _variant(name, d, h)
            start = time.perf_counter()
            steps[name]()  # compiles, for the compiled variants
            steps[name]()
            warm[name] = time.perf_counter() - start
        times: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(reps):
            for name in names:  # interleaved: load on a shared machine hits all alike
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["eager"])
        for name in names:
            med = statistics.median(times[name])
            print(f"| {d} | {h} | {name} | {warm[name]:.1f} | {med * 1e3:.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
