"""MAF speed: madeflow against Pyro, nflows and zuko, and a dense MLP of the same size.

Every library builds the same flow: 5 MAF layers, each a MADE with hidden layers ``[H, H]`` and
ReLU, orderings reversed between layers, standard normal base. Measured in one process,
interleaved across libraries, median of repeated runs:

* ``logprob``: log-density of ``B = 1024`` data points (one network pass per layer in MAF);
* ``sample``: ``B = 1024`` samples (the sequential direction of MAF);
* ``train``: one step of forward, backward and Adam on ``B = 256`` points.

The reference ``dense`` is the same flow with unmasked ``nn.Linear`` layers (not a valid flow: it
only measures what one pass of an equally sized MLP costs; its "sampling" is one pass per layer).
Peers' sampling costs ``D`` network passes per layer; for ``D > --direct-max-d`` it is estimated as
``D`` times the measured time of one pass of all their conditioners (which leaves out their
per-step elementwise work, so it flatters them). Estimated figures are marked ``~``.

Run ``python benchmarks/bench_maf.py`` (full grid, CPU, 2 threads) or ``--quick``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Callable

import torch
from torch import nn

LAYERS = 5
FUSED_ADAM = False  # --optimizer fused: every library's train step uses Adam(fused=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- models
class DenseFlow(nn.Module):
    """Reference: the MAF's arithmetic with dense MLPs (cost of one pass, not a flow)."""

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2 * d)
            )
            for _ in range(LAYERS)
        )

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density arithmetic of a MAF, ``(B, D) -> (B,)``."""
        logdet = x.new_zeros(x.shape[:-1])
        for net in self.nets:
            mean, log_scale = net(x).chunk(2, -1)
            x = ((x - mean) * torch.exp(-log_scale)).flip(-1)
            logdet = logdet - log_scale.sum(-1)
        return logdet - 0.5 * x.square().sum(-1)

    def sample(self, n: int) -> torch.Tensor:
        """One pass per layer, ``(n, D)``: the cost a one-pass sampler would have."""
        x = self.nets[0][0].weight.new_empty(n, self.nets[0][0].in_features).normal_()
        for net in self.nets:
            mean, log_scale = net(x).chunk(2, -1)
            x = (x * torch.exp(log_scale) + mean).flip(-1)
        return x


def _orders(d: int) -> list[list[int]]:
    return [list(range(d)) if k % 2 == 0 else list(range(d))[::-1] for k in range(LAYERS)]


def build_madeflow(d: int, h: int, device: torch.device, grouped: bool = True):
    import pyro.distributions as dist

    from madeflow import MADE
    from madeflow.transforms.affine import MAFTransform

    transforms = []
    for order in _orders(d):
        made = MADE(d, [h, h], permutation=order, seed=0)
        for layer in [*made.layers, made.output_layer]:
            layer.grouped = grouped
        transforms.append(MAFTransform(made))
    modules = nn.ModuleList(transforms).to(device)
    base = dist.Normal(torch.zeros(d, device=device), torch.ones(d, device=device)).to_event(1)
    flow = dist.TransformedDistribution(base, list(modules))
    nets = [t.nn for t in modules]
    return modules, flow.log_prob, lambda n: flow.sample((n,)), nets


def build_pyro(d: int, h: int, device: torch.device):
    import pyro.distributions as dist
    from pyro.distributions.transforms import AffineAutoregressive
    from pyro.nn import AutoRegressiveNN

    transforms = [
        AffineAutoregressive(AutoRegressiveNN(d, [h, h], permutation=torch.tensor(order)))
        for order in _orders(d)
    ]
    modules = nn.ModuleList(transforms).to(device)
    base = dist.Normal(torch.zeros(d, device=device), torch.ones(d, device=device)).to_event(1)
    # Pyro's AffineAutoregressive is IAF-style: its sequential direction is `_inverse`. A MAF is
    # its inverse: sampling runs `_inverse` (D passes), log_prob runs `_call` (one pass).
    flow = dist.TransformedDistribution(base, [t.inv for t in modules])
    nets = [t.arn for t in modules]
    return modules, flow.log_prob, lambda n: flow.sample((n,)), nets


def build_nflows(d: int, h: int, device: torch.device):
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.permutations import ReversePermutation

    layers = []
    for _ in range(LAYERS):
        layers.append(
            MaskedAffineAutoregressiveTransform(d, h, num_blocks=1, use_residual_blocks=False)
        )
        layers.append(ReversePermutation(d))
    flow = Flow(CompositeTransform(layers), StandardNormal([d])).to(device)
    nets = [t.autoregressive_net for t in layers if hasattr(t, "autoregressive_net")]
    return flow, flow.log_prob, flow.sample, nets


def build_zuko(d: int, h: int, device: torch.device):
    import zuko

    flow = zuko.flows.MAF(d, transforms=LAYERS, hidden_features=(h, h)).to(device)
    nets = [t.hyper for t in flow.transform.transforms]
    return flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)), nets


def build_dense(d: int, h: int, device: torch.device):
    flow = DenseFlow(d, h).to(device)
    return flow, flow.log_prob, flow.sample, None


BUILDERS: dict[str, Callable] = {
    "dense": build_dense,
    "madeflow": build_madeflow,
    "madeflow-nogroup": lambda d, h, dev: build_madeflow(d, h, dev, grouped=False),
    "pyro": build_pyro,
    "nflows": build_nflows,
    "zuko": build_zuko,
}
PEERS = ("pyro", "nflows", "zuko")


# --------------------------------------------------------------------------- timing
def _one_pass(nets: list, d: int, b: int, device: torch.device) -> Callable[[], None]:
    x = torch.randn(b, d, device=device)

    def run() -> None:
        for net in nets:
            net(x)

    return run


def _tasks(name: str, built, task: str, d: int, device: torch.device, direct_max_d: int):
    """Return ``(callable, multiplier, estimated)`` timing one unit of ``task``."""
    module, log_prob, sample, nets = built
    if task == "logprob":
        x = torch.randn(1024, d, device=device)
        # A fresh tensor per call: Pyro's transforms cache their last input by identity.
        return (lambda: log_prob(x.clone())), 1.0, False
    if task == "sample":
        if name in PEERS and d > direct_max_d:
            return _one_pass(nets, d, 1024, device), float(d), True
        return (lambda: sample(1024)), 1.0, False
    x = torch.randn(256, d, device=device)
    opt = torch.optim.Adam(module.parameters(), lr=1e-4, fused=FUSED_ADAM or None)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        loss = -log_prob(x.clone()).mean()
        loss.backward()
        opt.step()

    return train, 1.0, False


def measure(names, task, d, h, device, reps, direct_max_d) -> dict[str, tuple[float, bool, float]]:
    """Median seconds (and whether estimated, and CUDA peak MiB) per library, interleaved."""
    torch.manual_seed(0)
    runs: dict = {}
    times: dict = {n: [] for n in names}
    peaks = {n: float("nan") for n in names}
    for name in list(names):
        try:
            built = BUILDERS[name](d, h, device)
        except ValueError as err:  # e.g. Pyro refuses hidden widths below input_dim
            print(f"<!-- {name} skipped at D={d}, H={h}: {err} -->")
            names = [n for n in names if n != name]
            continue
        fn, mult, est = _tasks(name, built, task, d, device, direct_max_d)
        grad = torch.enable_grad() if task == "train" else torch.no_grad()
        runs[name] = (fn, mult, est, grad)
        with grad:
            fn()  # warm-up (also builds caches)
        _sync(device)
    slow = {n for n in names if n in PEERS and task == "sample" and not runs[n][2] and d >= 64}
    for rep in range(reps):
        for name in names:
            fn, mult, est, grad = runs[name]
            if name in slow and rep >= max(1, reps // 3):
                continue  # direct D-pass sampling is slow: fewer repetitions
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            _sync(device)
            start = time.perf_counter()
            with grad:
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) * mult)
            if device.type == "cuda":
                peaks[name] = torch.cuda.max_memory_allocated() / 2**20
    gc.collect()
    return {n: (statistics.median(times[n]), runs[n][2], peaks[n], min(times[n])) for n in names}


def report(task: str, d: int, h: int, res: dict, device: torch.device) -> list[str]:
    dense = res["dense"][0]
    peers = [res[n][0] for n in PEERS if n in res]
    best_peer = min(peers) if peers else float("nan")
    rows = []
    for name, (sec, est, peak, best) in res.items():
        mark = "~" if est else " "
        mem = f"{peak:8.0f}" if device.type == "cuda" else "     n/a"
        rows.append(
            f"| {task:7s} | {d:4d} | {h:5d} | {name:16s} | {mark}{sec * 1e3:10.2f} | "
            f"{best * 1e3:10.2f} | "
            f"{sec / dense:8.2f} | {best_peer / sec:9.2f} | {mem} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--only", choices=("logprob", "sample", "train"), default=None)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--direct-max-d", type=int, default=64, help="largest D timed directly")
    parser.add_argument("--libs", default=",".join(BUILDERS), help="comma-separated subset")
    parser.add_argument(
        "--optimizer",
        choices=("adam", "fused"),
        default="adam",
        help="train step's optimizer for every library: torch's default Adam, or Adam(fused=True) "
        "as madeflow.fit uses",
    )
    parser.add_argument(
        "--sizes", default=None, help="comma-separated DxH subset of the grid, e.g. 64x1024"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    global FUSED_ADAM
    FUSED_ADAM = args.optimizer == "fused"
    names = [n for n in BUILDERS if n in args.libs.split(",")]
    if "dense" not in names:
        names.insert(0, "dense")
    grid = {
        "logprob": [(d, h) for d in (8, 64, 784) for h in (256, 1024)],
        "sample": [(d, h) for d in (8, 64, 784) for h in (256, 1024)],
        "train": [(d, h) for d in (8, 64, 784) for h in (256, 1024)],
    }
    reps = args.reps
    if args.quick:
        grid = {k: [(8, 32), (16, 64)] for k in grid}
        reps = min(reps, 3)
    if args.sizes:
        keep = {tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")}
        grid = {k: [dh for dh in v if dh in keep] for k, v in grid.items()}
    tasks = [args.only] if args.only else list(grid)
    import warnings

    warnings.filterwarnings("ignore")
    print(
        f"device={device} threads={torch.get_num_threads()} reps={reps} "
        f"optimizer={args.optimizer} torch={torch.__version__}"
    )
    print(
        "| task    |    D |     H | library          |  median ms |     min ms | x dense  "
        "| peer/this | peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for task in tasks:
        for d, h in grid[task]:
            res = measure(names, task, d, h, device, reps, args.direct_max_d)
            for row in report(task, d, h, res, device):
                print(row, flush=True)
    print("x dense: median time / dense-MLP median time (lower is better); peer/this: fastest of")
    print("pyro/nflows/zuko median time / this median time (higher is better); ~: estimated as")
    print("D x (one pass of the 5 conditioners), which leaves out the peers' per-step work.")


if __name__ == "__main__":
    main()
