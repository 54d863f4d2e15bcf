"""Data-parallel scaling: training samples per second on 1 and 2 processes (CPU, gloo).

The same training (a MAF with 5 layers of ``[H, H]`` on ``N`` rows of ``D``-dimensional data,
global mini-batch ``B``, one thread per process) runs once per process count: 1 is a plain
``fit`` in one process, ``P > 1`` is ``torchrun --nproc_per_node P`` (each rank computes
``B / P`` rows of every batch and DDP all-reduces the gradients). Throughput is training rows
per second over the epochs after the first (which pays for start-up), measured by rank 0;
validation is left out so that only training is timed.

Run ``python benchmarks/bench_distributed.py`` (or ``--procs 1 2 4 --rows 200000``); it prints a
table and the speed-up of each process count over one process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    import torch

    import madeflow

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(8, args.dim, generator=gen) * 3
    rows = centers[torch.randint(0, 8, (args.rows,), generator=gen)]
    data = rows + torch.randn(args.rows, args.dim, generator=gen)
    torch.manual_seed(0)
    model = madeflow.MAF(args.dim, num_transforms=5, hidden_dims=[args.hidden, args.hidden])
    ends: list[float] = []
    madeflow.fit(
        model,
        data,
        max_epochs=args.epochs,
        batch_size=args.batch,
        lr=1e-3,
        progress=False,
        callback=lambda event: ends.append(time.perf_counter()),
    )
    if madeflow.train.distributed.rank() == 0:
        seconds = ends[-1] - ends[0]
        result = {
            "procs": madeflow.train.distributed.world_size(),
            "samples_per_s": args.rows * (len(ends) - 1) / seconds,
            "seconds_per_epoch": seconds / (len(ends) - 1),
        }
        print("RESULT " + json.dumps(result), flush=True)


def run(procs: int, args: argparse.Namespace) -> dict:
    flags = [f"--{k}={getattr(args, k)}" for k in ("rows", "dim", "hidden", "batch", "epochs")]
    flags += [f"--threads={args.threads}", "--worker"]
    script = [str(Path(__file__).resolve()), *flags]
    if procs == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", str(procs), *script]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{procs} process(es) failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=512, help="global mini-batch")
    p.add_argument("--epochs", type=int, default=4, help="timed: all but the first")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    print(
        f"MAF 5 x [{args.hidden}, {args.hidden}], D={args.dim}, {args.rows} rows, global batch "
        f"{args.batch}, {args.threads} thread(s) per process, {os.cpu_count()} CPUs"
    )
    results = [run(n, args) for n in args.procs]
    base = results[0]["samples_per_s"]
    print(f"{'processes':>9}  {'samples/s':>10}  {'s/epoch':>8}  {'speed-up':>8}")
    for r in results:
        print(
            f"{r['procs']:>9}  {r['samples_per_s']:>10.0f}  {r['seconds_per_epoch']:>8.2f}  "
            f"{r['samples_per_s'] / base:>8.2f}"
        )


if __name__ == "__main__":
    main()
