r"""Choose madeflow.sbi's defaults from measurements: held-out log-likelihood of NPE estimators.

For each sbibm task and simulation budget, trains NPE with several madeflow configurations (and
sbi's default MAF as a reference) and scores each on fresh simulations from the same prior and
simulator: the mean of ``log q(theta | x)`` over 10,000 new pairs, which is (up to a constant
that is the same for every estimator) minus the expected KL divergence from the true posterior
to the estimate, averaged over the prior predictive. Higher is better. Training time is recorded
too. Each finished (task, budget, seed, config) appends one JSON line to ``--out``; rerunning skips
what is already there.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/tune_sbi.py --tasks two_moons,slcp \\
        --budgets 1000,10000 --seeds 0 --out tune_sbi.jsonl
    python benchmarks/tune_sbi.py --report tune_sbi.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

CONFIGS = {
    # name: builder options (madeflow.sbi.posterior_nn) or "sbi:<model>"
    "sbi_maf": "sbi:maf",
    "h50x2_t5_tanh": dict(hidden_features=50, num_transforms=5, activation="tanh"),
    "h50x2_t5_relu": dict(hidden_features=50, num_transforms=5, activation="relu"),
    "h100x2_t5_tanh": dict(hidden_features=100, num_transforms=5, activation="tanh"),
    "h50x2_t10_tanh": dict(hidden_features=50, num_transforms=10, activation="tanh"),
    "h100x2_t5_relu": dict(hidden_features=100, num_transforms=5, activation="relu"),
    "mog_h50x2_t5_tanh": dict(model="maf_mog", hidden_features=50, num_transforms=5),
    "h50x2_t5_tanh_bn": dict(hidden_features=50, num_transforms=5, use_batch_norm=True),
    "h50x2_t5_tanh_randperm": dict(hidden_features=50, num_transforms=5, permutation="random"),
    "mog_h100x2_t5_tanh": dict(model="maf_mog", hidden_features=100, num_transforms=5),
    "mog_h50x2_t3_tanh": dict(model="maf_mog", hidden_features=50, num_transforms=3),
    "mog_h50x2_t5_relu": dict(model="maf_mog", hidden_features=50, activation="relu"),
    "made_mog_h50x2_tanh": dict(model="made_mog", hidden_features=50),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="two_moons,slcp")
    parser.add_argument("--budgets", default="1000,10000")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--test-size", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="tune_sbi.jsonl")
    parser.add_argument("--report", default=None, help="print the table of a results file")
    args = parser.parse_args()
    if args.report:
        report(Path(args.report))
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    out = Path(args.out).resolve()
    os.chdir(tempfile.mkdtemp(prefix="tune_sbi_"))  # sbi writes TensorBoard logs to ./sbi-logs
    done = {_key(r) for r in _read(out)}
    for task_name in args.tasks.split(","):
        for budget in map(int, args.budgets.split(",")):
            for seed in map(int, args.seeds.split(",")):
                for config in args.configs.split(","):
                    key = (task_name, budget, seed, config)
                    if key in done:
                        continue
                    row = run(task_name, budget, seed, config, args.test_size)
                    with out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)


def run(task_name: str, budget: int, seed: int, config: str, test_size: int) -> dict:
    import sbibm
    from sbi.inference import NPE

    import madeflow.sbi

    task = sbibm.get_task(task_name)
    simulator = task.get_simulator()
    torch.manual_seed(seed)
    theta = task.get_prior()(num_samples=budget)
    x = simulator(theta)
    torch.manual_seed(10_000 + seed)  # the same test set for every config
    theta_test = task.get_prior()(num_samples=test_size)
    x_test = simulator(theta_test)
    options = CONFIGS[config]
    if isinstance(options, str):
        estimator = options.split(":", 1)[1]
    else:
        estimator = madeflow.sbi.posterior_nn(**options)
    torch.manual_seed(seed)
    inference = NPE(task.get_prior_dist(), density_estimator=estimator, show_progress_bars=False)
    start = time.perf_counter()
    net = inference.append_simulations(theta, x).train()
    train_s = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        log_q = torch.cat(
            [
                net.log_prob(t.unsqueeze(0), c)[0]
                for t, c in zip(theta_test.split(2000), x_test.split(2000))
            ]
        )
    return {
        "task": task_name,
        "budget": budget,
        "seed": seed,
        "config": config,
        "test_log_prob": float(log_q.mean()),
        "train_s": round(train_s, 1),
        "epochs": int(inference._summary["epochs_trained"][-1]),
        "params": sum(p.numel() for p in net.parameters()),
    }


def report(path: Path) -> None:
    rows = _read(path)
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["task"], r["budget"], r["config"]), []).append(r)
    columns = sorted({(r["task"], r["budget"]) for r in rows})
    configs = list(dict.fromkeys(r["config"] for r in rows))
    head = " | ".join(f"{t} {b}" for t, b in columns)
    print(f"| config | {head} |")
    print("|---" * (len(columns) + 1) + "|")
    for config in configs:
        parts = []
        for task, budget in columns:
            group = cells.get((task, budget, config))
            if not group:
                parts.append("-")
                continue
            lp = sum(r["test_log_prob"] for r in group) / len(group)
            secs = sum(r["train_s"] for r in group) / len(group)
            parts.append(f"{lp:.3f} ({secs:.0f} s)")
        print(f"| {config} | " + " | ".join(parts) + " |")


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _key(row: dict) -> tuple:
    return (row["task"], row["budget"], row["seed"], row["config"])


if __name__ == "__main__":
    main()
