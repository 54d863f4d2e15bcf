"""Gradients through the sequential direction: madeflow's one-pass solve against D passes.

Every flow has 5 layers, each a MADE with hidden layers ``[H, H]`` and ReLU, orderings reversed
between layers, on a standard normal base, ``B = 256`` points. Timed in one process, interleaved
across variants, median of repeated runs:

* ``rsample``: ``rsample((B,))`` of a MAF, then ``backward`` of its sum (variational inference
  with a MAF posterior, or training a sampler). madeflow differentiates through its one-pass solve;
  ``madeflow-reference`` runs autograd through the ``D``-pass loop; Pyro, nflows and zuko
  differentiate through their own ``D``-pass sampling.
* ``iaf-logprob``: ``log_prob`` of ``B`` points an IAF did not draw, then ``backward`` (maximum
  likelihood for an IAF, or scoring data under a VI posterior): madeflow, its ``D``-pass
  reference, and Pyro's ``AffineAutoregressive`` (which solves in ``D`` passes).
* ``sample-and-logprob``: ``sample_and_log_prob((B,))`` against ``sample((B,))`` for madeflow's
  MAF, IAF and MADE density estimators (no gradient): the log-density should come almost free.

``dense`` is one forward and backward pass of the same 5 unmasked MLPs: the cost of one network
pass with gradients, the unit of the targets.

    python benchmarks/bench_gradients.py --threads 2 --sizes 64x1024
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

import madeflow
import madeflow.transforms.affine as affine

LAYERS = 5
BATCH = 256


def _orders(d: int) -> list[list[int]]:
    return [list(range(d)) if k % 2 == 0 else list(range(d))[::-1] for k in range(LAYERS)]


def _dense(d: int, h: int) -> Callable[[], None]:
    nets = nn.ModuleList(
        nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2 * d))
        for _ in range(LAYERS)
    )
    x0 = torch.randn(BATCH, d)

    def run() -> None:
        x = x0
        for net in nets:
            m, a = net(x).chunk(2, -1)
            x = (x * torch.exp(a) + m).flip(-1)
        x.sum().backward()

    return run


class _Reference:
    """Make madeflow's layers solve with the ``D``-pass reference loop while active."""

    def __init__(self) -> None:
        self.real = affine.autoregressive_solve

    def __enter__(self) -> None:
        real = self.real
        affine.autoregressive_solve = lambda *a, **k: real(*a, **{**k, "method": "reference"})

    def __exit__(self, *exc: object) -> None:
        affine.autoregressive_solve = self.real


def _madeflow_rsample(d: int, h: int, reference: bool) -> Callable[[], None]:
    flow = madeflow.MAF(d, LAYERS, [h, h])

    def run() -> None:
        if reference:
            with _Reference():
                flow.rsample((BATCH,)).sum().backward()
        else:
            flow.rsample((BATCH,)).sum().backward()

    return run


def _pyro_flow(d: int, h: int, iaf: bool):
    import pyro.distributions as dist
    from pyro.distributions.transforms import AffineAutoregressive
    from pyro.nn import AutoRegressiveNN

    layers = [
        AffineAutoregressive(AutoRegressiveNN(d, [h, h], permutation=torch.tensor(o)))
        for o in _orders(d)
    ]
    base = dist.Normal(torch.zeros(d), torch.ones(d)).to_event(1)
    # Pyro's layer is IAF-style (one pass to sample); a MAF is its inverse.
    return dist.TransformedDistribution(base, layers if iaf else [t.inv for t in layers])


def _pyro_rsample(d: int, h: int) -> Callable[[], None]:
    flow = _pyro_flow(d, h, iaf=False)
    return lambda: flow.rsample((BATCH,)).sum().backward()


def _nflows_rsample(d: int, h: int) -> Callable[[], None]:
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.permutations import ReversePermutation

    layers = []
    for _ in range(LAYERS):
        layers += [MaskedAffineAutoregressiveTransform(d, h, num_blocks=1), ReversePermutation(d)]
    flow = Flow(CompositeTransform(layers), StandardNormal([d]))
    return lambda: flow.sample(BATCH).sum().backward()  # nflows' sample keeps the graph


def _zuko_rsample(d: int, h: int) -> Callable[[], None]:
    import zuko

    flow = zuko.flows.MAF(d, transforms=LAYERS, hidden_features=(h, h))
    return lambda: flow().rsample((BATCH,)).sum().backward()


def _iaf_logprob(d: int, h: int, which: str) -> Callable[[], None]:
    x = torch.randn(BATCH, d)
    if which == "pyro":
        flow = _pyro_flow(d, h, iaf=True)
        return lambda: flow.log_prob(x.clone()).sum().backward()
    iaf = madeflow.IAF(d, LAYERS, [h, h])

    def run() -> None:
        if which == "madeflow-reference":
            with _Reference():
                iaf.log_prob(x).sum().backward()
        else:
            iaf.log_prob(x).sum().backward()

    return run


def _sample_variants(d: int, h: int) -> dict[str, Callable[[], None]]:
    models = {
        "MAF": madeflow.MAF(d, LAYERS, [h, h]),
        "IAF": madeflow.IAF(d, LAYERS, [h, h]),
        "GaussianMADE": madeflow.GaussianMADE(d, [h, h]),
        "GaussianMixtureMADE": madeflow.GaussianMixtureMADE(d, [h, h]),
        "BernoulliMADE": madeflow.BernoulliMADE(d, [h, h]),
    }
    out = {}
    for name, m in models.items():
        out[f"{name}.sample"] = lambda m=m: m.sample((BATCH,))
        out[f"{name}.sample_and_log_prob"] = lambda m=m: m.sample_and_log_prob((BATCH,))
    return out


def variants(task: str, d: int, h: int, libs: list[str]) -> dict[str, Callable[[], None]]:
    """The functions to time for ``task`` at size ``d x h``."""
    if task == "sample-and-logprob":
        return _sample_variants(d, h)
    out = {"dense": _dense(d, h)}
    if task == "rsample":
        builders = {
            "madeflow": lambda: _madeflow_rsample(d, h, False),
            "madeflow-reference": lambda: _madeflow_rsample(d, h, True),
            "pyro": lambda: _pyro_rsample(d, h),
            "nflows": lambda: _nflows_rsample(d, h),
            "zuko": lambda: _zuko_rsample(d, h),
        }
    else:
        builders = {
            n: (lambda n=n: _iaf_logprob(d, h, n))
            for n in ("madeflow", "madeflow-reference", "pyro")
        }
    for name, build in builders.items():
        if name in libs or name == "madeflow-reference" and "madeflow" in libs:
            out[name] = build()
    return out


def measure(fns: dict[str, Callable[[], None]], reps: int, slow_reps: int) -> dict[str, float]:
    """Median seconds per variant, interleaved; variants slower than 2 s get ``slow_reps``."""
    times: dict[str, list[float]] = {n: [] for n in fns}
    for fn in fns.values():
        fn()  # warm-up
    for rep in range(reps):
        for name, fn in fns.items():
            if times[name] and rep >= slow_reps and statistics.median(times[name]) > 2.0:
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--slow-reps", type=int, default=2, help="reps of variants over 2 s")
    parser.add_argument("--sizes", default="8x256,64x256,64x1024", help="comma-separated DxH")
    parser.add_argument("--tasks", default="rsample,iaf-logprob,sample-and-logprob")
    parser.add_argument("--libs", default="madeflow,pyro,nflows,zuko")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    sizes = ["4x16"] if args.quick else args.sizes.split(",")
    reps = 2 if args.quick else args.reps
    libs = args.libs.split(",")
    print(
        f"threads={args.threads} batch={BATCH} layers={LAYERS} reps={reps} "
        f"torch={torch.__version__}"
    )
    print("| task | D | H | variant | median ms | x dense | x madeflow |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        for size in sizes:
            d, h = (int(v) for v in size.split("x"))
            res = measure(variants(task, d, h, libs), reps, args.slow_reps)
            dense = res.get("dense")
            mine = res.get("madeflow")
            for name, sec in res.items():
                if task == "sample-and-logprob" and name.endswith("sample_and_log_prob"):
                    ratio = f"{sec / res[name.replace('_and_log_prob', '')]:.2f} x sample"
                else:
                    ratio = f"{sec / dense:.2f}" if dense else ""
                rel = f"{sec / mine:.2f}" if mine else ""
                print(
                    f"| {task} | {d} | {h} | {name} | {sec * 1e3:.2f} | {ratio} | {rel} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
