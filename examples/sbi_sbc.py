"""Simulation-based calibration (SBC) with sbi: madeflow's MAF against sbi's own MAF.

SBC checks a trained posterior estimator by drawing posterior samples for many simulated
observations and testing whether the rank of the true parameter among them is uniform. That is
where posterior sampling speed is felt: ``num_sbc`` observations times ``num_posterior_samples``
draws each. This script trains NPE on a linear-Gaussian model with ``D`` parameters (prior
``N(0, I)``, ``x = A theta + 0.5 eps``) with ``madeflow.sbi.build_maf`` and with sbi's ``"maf"``,
runs ``sbi.diagnostics.run_sbc`` for both and prints a table: training time, SBC time, and the
uniformity checks of ``sbi.diagnostics.check_sbc`` (KS p-values of the ranks per dimension; the
C2ST of the ranks against uniform ranks, 0.5 is calibrated).

    python examples/sbi_sbc.py                   # D=50, 2,000 simulations (docs/sbi.md: 35 min
                                                 # on a loaded shared machine)
    python examples/sbi_sbc.py --quick           # a few seconds
    python examples/sbi_sbc.py --dim 20 --num-sbc 500

Needs the sbi extra: ``pip install "madeflow[sbi]"``.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--num-sbc", type=int, default=200, help="SBC observations")
    parser.add_argument("--num-posterior-samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.dim, args.simulations, args.max_epochs = 5, 300, 3
        args.num_sbc, args.num_posterior_samples = 20, 100
    try:
        import sbi  # noqa: F401
    except ImportError:
        print('| sbi_sbc | skipped: sbi is not installed (pip install "madeflow[sbi]") |')
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rows = run(args)
    print(
        f"SBC, linear Gaussian, D={args.dim}, {args.simulations} simulations, "
        f"{args.num_sbc} observations x {args.num_posterior_samples} posterior samples"
    )
    print("| estimator | train s | SBC s | samples/s in SBC | min KS p | ranks C2ST |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['train_s']:.1f} | {row['sbc_s']:.2f} | {row['rate']:,.0f} | "
            f"{row['ks_min']:.3f} | {row['c2st']:.3f} |"
        )
    base = rows["sbi maf"]["sbc_s"] / rows["madeflow maf"]["sbc_s"]
    print(f"madeflow's SBC step is {base:.1f}x faster than sbi's MAF")


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from sbi.diagnostics import check_sbc, run_sbc
    from sbi.inference import NPE

    import madeflow.sbi

    d = args.dim
    gen = torch.Generator().manual_seed(0)
    mixing = torch.eye(d) + torch.randn(d, d, generator=gen) / math.sqrt(d)
    prior = torch.distributions.MultivariateNormal(torch.zeros(d), torch.eye(d))

    def simulator(theta: torch.Tensor) -> torch.Tensor:
        return theta @ mixing.T + 0.5 * torch.randn(theta.shape[0], d)

    torch.manual_seed(0)
    theta = prior.sample((args.simulations,))
    x = simulator(theta)
    sbc_theta = prior.sample((args.num_sbc,))
    sbc_x = simulator(sbc_theta)
    estimators = {"madeflow maf": madeflow.sbi.build_maf, "sbi maf": "maf"}
    rows = {}
    for name, estimator in estimators.items():
        torch.manual_seed(1)
        inference = NPE(prior, density_estimator=estimator, show_progress_bars=False)
        start = time.perf_counter()
        inference.append_simulations(theta, x).train(
            max_num_epochs=args.max_epochs, show_train_summary=False
        )
        train_s = time.perf_counter() - start
        posterior = inference.build_posterior()
        start = time.perf_counter()
        ranks, dap = run_sbc(
            sbc_theta,
            sbc_x,
            posterior,
            num_posterior_samples=args.num_posterior_samples,
            show_progress_bar=False,
        )
        sbc_s = time.perf_counter() - start
        checks = check_sbc(ranks, sbc_theta, dap, num_posterior_samples=args.num_posterior_samples)
        rows[name] = {
            "train_s": train_s,
            "sbc_s": sbc_s,
            "rate": args.num_sbc * args.num_posterior_samples / sbc_s,
            "ks_min": float(checks["ks_pvals"].min()),
            "c2st": float(checks["c2st_ranks"].mean()),
        }
    return rows


if __name__ == "__main__":
    main()
