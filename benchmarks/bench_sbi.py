r"""madeflow.sbi against sbi's own estimators on sbibm tasks: C2ST, training time, sampling speed.

For every task, simulation budget and method, NPE is trained on the same simulations (drawn from
the prior with a seed fixed per task and budget), with sbi's default training settings. Then:

* ``c2st``: 10,000 posterior samples per observation through what users get by default
  (``posterior.sample``: rejection of samples outside a bounded prior's support) against sbibm's
  reference posterior, scored by ``sbibm.metrics.c2st`` (0.5 is perfect). For the
  linear-Gaussian tasks (``linear_gaussian_<D>``, analytic posterior) the exact
  ``KL(p || q) = E_p[log p - log q]`` is reported as well (C2ST only up to ``--c2st-max-dim``).
* ``speed``: every method of a (task, budget) is loaded and timed *interleaved*, ``--repeats``
  rounds; medians of the time to draw 10^4 and 10^5 samples from the raw estimator
  (``posterior.posterior_estimator.sample``) and through the default ``posterior.sample``.

Everything is resumable: trained posteriors are pickled under ``--cache``, and each finished
measurement appends one JSON line to ``--out``; rerunning skips what is there. Run niced, one
thread, one task per invocation if you like::

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/bench_sbi.py --tasks two_moons \\
        --budgets 1000,10000 --observations 1-10
    python benchmarks/bench_sbi.py --report
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

SBIBM_TASKS = ["two_moons", "gaussian_linear", "slcp", "gaussian_mixture", "bernoulli_glm"]
METHODS = [
    "madeflow_maf",
    "madeflow_maf_mog",
    "madeflow_made_mog",
    "sbi_maf",
    "sbi_zuko_maf",
    "sbi_nsf",
]
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(SBIBM_TASKS))
    parser.add_argument("--budgets", default="1000,10000")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--observations", default="1-10", help="e.g. 1-10 or 1,2,3")
    parser.add_argument("--phases", default="train,c2st,speed")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of timing")
    parser.add_argument("--speed-sizes", default="10000,100000")
    parser.add_argument(
        "--default-sizes",
        default=None,
        help="sizes timed through posterior.sample too (default: --speed-sizes)",
    )
    parser.add_argument("--c2st-max-dim", type=int, default=20)
    parser.add_argument(
        "--c2st-samples",
        type=int,
        default=10_000,
        help="posterior and reference samples per C2ST (sbibm's standard: 10,000)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "bench_sbi.jsonl"))
    parser.add_argument("--cache", default=str(RESULTS / "bench_sbi_cache"))
    parser.add_argument("--report", action="store_true", help="print the tables and exit")
    args = parser.parse_args()
    out, cache = Path(args.out).resolve(), Path(args.cache).resolve()
    if args.report:
        report(_read(out))
        return
    os.chdir(tempfile.mkdtemp(prefix="bench_sbi_"))  # sbi writes TensorBoard logs to ./sbi-logs
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    cache.mkdir(parents=True, exist_ok=True)
    observations = _parse_observations(args.observations)
    methods = args.methods.split(",")
    phases = args.phases.split(",")
    for task_name in args.tasks.split(","):
        task = get_task(task_name)
        for budget in map(int, args.budgets.split(",")):
            if "train" in phases:
                for method in methods:
                    train(task, budget, method, cache, out)
            if "c2st" in phases:
                for method in methods:
                    for obs in observations:
                        n = args.c2st_samples
                        accuracy(task, budget, method, obs, cache, out, args.c2st_max_dim, n)
            if "speed" in phases:
                sizes = [int(s) for s in args.speed_sizes.split(",")]
                through = args.default_sizes or args.speed_sizes
                default_sizes = [int(s) for s in through.split(",")]
                speed(task, budget, methods, sizes, default_sizes, args.repeats, cache, out)


# ------------------------------------------------------------------------------------ tasks
class LinearGaussian:
    """``theta ~ N(0, I_D)``, ``x = A theta + 0.5 eps``: a D-parameter task, analytic posterior."""

    def __init__(self, dim: int) -> None:
        self.name = f"linear_gaussian_{dim}"
        self.dim = dim
        gen = torch.Generator().manual_seed(dim)
        self.A = torch.eye(dim) + torch.randn(dim, dim, generator=gen) / math.sqrt(dim)
        self.noise = 0.5
        self.prior = torch.distributions.MultivariateNormal(torch.zeros(dim), torch.eye(dim))
        precision = torch.eye(dim) + self.A.T @ self.A / self.noise**2
        self.cov = torch.linalg.inv(precision)
        self.cov = (self.cov + self.cov.T) / 2

    def get_prior_dist(self) -> Any:
        """The prior as a torch distribution."""
        return self.prior

    def get_prior(self) -> Any:
        """A prior sampler, ``f(num_samples=n)``, as sbibm's."""
        return lambda num_samples: self.prior.sample((num_samples,))

    def get_simulator(self) -> Any:
        """The simulator, ``theta (n, D) -> x (n, D)``."""
        return lambda theta: theta @ self.A.T + self.noise * torch.randn(theta.shape[0], self.dim)

    def get_observation(self, num_observation: int) -> torch.Tensor:
        """Observation ``num_observation``, ``(1, D)``, from a fixed seed."""
        gen = torch.Generator().manual_seed(1000 + num_observation)
        theta = torch.randn(1, self.dim, generator=gen)
        return theta @ self.A.T + self.noise * torch.randn(1, self.dim, generator=gen)

    def posterior(self, num_observation: int) -> torch.distributions.MultivariateNormal:
        """The exact posterior given observation ``num_observation``."""
        x = self.get_observation(num_observation)[0]
        mean = self.cov @ self.A.T @ x / self.noise**2
        return torch.distributions.MultivariateNormal(mean, self.cov)

    def get_reference_posterior_samples(self, num_observation: int) -> torch.Tensor:
        """10,000 exact posterior samples (seeded)."""
        torch.manual_seed(2000 + num_observation)
        return self.posterior(num_observation).sample((10_000,))


def get_task(name: str) -> Any:
    if name.startswith("linear_gaussian_"):
        return LinearGaussian(int(name.rsplit("_", 1)[1]))
    import sbibm

    task = sbibm.get_task(name)
    task.name = name
    return task


def estimator_for(method: str) -> Any:
    if method.startswith("sbi_"):
        return method[len("sbi_") :]
    import madeflow.sbi

    return madeflow.sbi.posterior_nn(method[len("madeflow_") :])


# ------------------------------------------------------------------------------------ phases
def train(task: Any, budget: int, method: str, cache: Path, out: Path) -> None:
    from sbi.inference import NPE

    path = _cache_path(cache, task.name, budget, method)
    if path.exists():
        return
    theta, x = _simulations(task, budget)
    torch.manual_seed(0)
    inference = NPE(
        task.get_prior_dist(), density_estimator=estimator_for(method), show_progress_bars=False
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    net = inference.append_simulations(theta, x).train(show_train_summary=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    posterior = inference.build_posterior()
    path.write_bytes(pickle.dumps(posterior))
    _write(
        out,
        kind="train",
        task=task.name,
        budget=budget,
        method=method,
        train_s=round(seconds, 1),
        train_cpu_s=round(cpu_seconds, 1),  # robust to other jobs on a shared machine
        epochs=int(inference._summary["epochs_trained"][-1]),
        best_val_loss=float(inference._summary["best_validation_loss"][-1]),
        params=sum(p.numel() for p in net.parameters()),
    )


def accuracy(
    task: Any,
    budget: int,
    method: str,
    obs: int,
    cache: Path,
    out: Path,
    c2st_max_dim: int,
    n: int = 10_000,
) -> None:
    key = ("c2st", task.name, budget, method, obs, n)
    if key in {_key(r) for r in _read(out)}:
        return
    path = _cache_path(cache, task.name, budget, method)
    if not path.exists():
        return
    posterior = pickle.loads(path.read_bytes())
    x_o = task.get_observation(num_observation=obs)
    torch.manual_seed(obs)
    start = time.perf_counter()
    samples = posterior.sample((n,), x=x_o, show_progress_bars=False, max_sampling_time=900)
    sample_s = time.perf_counter() - start
    row: dict[str, Any] = {"c2st_n": n, "sample_s": round(sample_s, 3)}
    reference = task.get_reference_posterior_samples(num_observation=obs)[:n]
    if reference.shape[-1] <= c2st_max_dim:
        from sbibm.metrics import c2st

        start = time.perf_counter()
        row["c2st"] = float(c2st(reference, samples))
        row["c2st_s"] = round(time.perf_counter() - start, 1)
    if isinstance(task, LinearGaussian):
        truth = task.posterior(obs)
        draws = truth.sample((10_000,))
        with torch.no_grad():
            log_q = posterior.posterior_estimator.log_prob(draws, x_o)[0]
        row["kl"] = float((truth.log_prob(draws) - log_q).mean())
    _write(out, kind="c2st", task=task.name, budget=budget, method=method, obs=obs, **row)


def speed(
    task: Any,
    budget: int,
    methods: list[str],
    sizes: list[int],
    default_sizes: list[int],
    repeats: int,
    cache: Path,
    out: Path,
) -> None:
    done = {_key(r) for r in _read(out)}
    todo = [m for m in methods if ("speed", task.name, budget, m, None, None) not in done]
    paths = {m: _cache_path(cache, task.name, budget, m) for m in todo}
    posteriors = {m: pickle.loads(p.read_bytes()) for m, p in paths.items() if p.exists()}
    if not posteriors:
        return
    x_o = task.get_observation(num_observation=1)
    times: dict[str, dict[str, list[float]]] = {m: {} for m in posteriors}
    for _ in range(repeats):  # interleaved: every method in every round
        for method, posterior in posteriors.items():
            for n in sizes:
                estimator = posterior.posterior_estimator
                estimator.eval()
                start, cpu_start = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    estimator.sample((n,), x_o)
                times[method].setdefault(f"raw_{n}_s", []).append(time.perf_counter() - start)
                cpu = time.process_time() - cpu_start
                times[method].setdefault(f"raw_{n}_cpu_s", []).append(cpu)
                if n not in default_sizes:
                    continue
                start = time.perf_counter()
                posterior.sample((n,), x=x_o, show_progress_bars=False, max_sampling_time=900)
                times[method].setdefault(f"default_{n}_s", []).append(time.perf_counter() - start)
    for method, measured in times.items():
        medians = {k: round(statistics.median(v), 4) for k, v in measured.items()}
        _write(out, kind="speed", task=task.name, budget=budget, method=method, **medians)


# ----------------------------------------------------------------------------------- report
def report(rows: list[dict]) -> None:
    """Print the C2ST and sampling-speed tables of the results file, as markdown.

    One C2ST row per task, budget, method and C2ST sample size; speed rows are medians, with the
    ratio to sbi's MAF of the same task and budget.
    """
    train_rows = {(r["task"], r["budget"], r["method"]): r for r in rows if r["kind"] == "train"}
    speed_rows = {(r["task"], r["budget"], r["method"]): r for r in rows if r["kind"] == "speed"}
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] == "c2st":
            key = (r["task"], r["budget"], r["method"], r.get("c2st_n", 10_000))
            cells.setdefault(key, []).append(r)
    keys = sorted(cells, key=lambda k: (k[0], k[1], k[3], _order(k[2])))
    print(
        "| task | sims | method | C2ST n | C2ST (mean ± sd) | obs | KL | train s | train CPU s "
        "| epochs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key in keys:
        group = sorted(cells[key], key=lambda r: r["obs"])
        acc = _mean_sd([r["c2st"] for r in group if "c2st" in r])
        kls = [r["kl"] for r in group if "kl" in r]
        kl = f"{statistics.mean(kls):.2f}" if kls else "-"
        t = train_rows.get(key[:3], {})
        obs = ",".join(str(r["obs"]) for r in group)
        print(
            f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {acc} | {obs} | {kl} | "
            f"{t.get('train_s', '-')} | {t.get('train_cpu_s', '-')} | {t.get('epochs', '-')} |"
        )
    print()
    print(
        "| task | sims | method | raw 1e4 s | raw 1e5 s | default 1e4 s | default 1e5 s | "
        "raw 1e5 CPU s | raw samples/s | vs sbi_maf (raw 1e5) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(speed_rows, key=lambda k: (k[0], k[1], _order(k[2]))):
        r = speed_rows[key]
        ref = speed_rows.get((key[0], key[1], "sbi_maf"), {})
        n = 100_000 if "raw_100000_s" in r else 10_000
        raw = r.get(f"raw_{n}_s")
        rate = f"{n / raw:,.0f}" if raw else "-"
        ratio = f"{ref[f'raw_{n}_s'] / raw:.1f}x" if raw and f"raw_{n}_s" in ref else "-"
        print(
            f"| {key[0]} | {key[1]} | {key[2]} | {r.get('raw_10000_s', '-')} | "
            f"{r.get('raw_100000_s', '-')} | {r.get('default_10000_s', '-')} | "
            f"{r.get('default_100000_s', '-')} | {r.get('raw_100000_cpu_s', '-')} | {rate} | "
            f"{ratio} |"
        )


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


# ---------------------------------------------------------------------------------- helpers
def _simulations(task: Any, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(budget)
    theta = task.get_prior()(num_samples=budget)
    return theta, task.get_simulator()(theta)


def _cache_path(cache: Path, task: str, budget: int, method: str) -> Path:
    return cache / f"{task}__{budget}__{method}.pkl"


def _parse_observations(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = map(int, spec.split("-"))
        return list(range(lo, hi + 1))
    return [int(s) for s in spec.split(",")]


def _write(out: Path, **row: Any) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _key(row: dict) -> tuple:
    n = row.get("c2st_n", 10_000) if row["kind"] == "c2st" else None  # early rows: 10,000
    return (row["kind"], row["task"], row["budget"], row["method"], row.get("obs"), n)


if __name__ == "__main__":
    main()
