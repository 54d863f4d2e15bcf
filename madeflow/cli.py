"""The ``madeflow`` command line: fit, evaluate, sample and plot density estimators.

Exit codes: ``0`` success, ``1`` unexpected error, ``2`` usage error (bad arguments, an existing
non-empty ``--out`` without ``--resume``), ``3`` data error (missing, unreadable or malformed data),
``4`` checkpoint or run-folder error (not a run, corrupt or incompatible checkpoint, folder
locked by another process), ``5`` numerical failure (loss became NaN/Inf), ``6`` another process
of a distributed run failed or did not answer, ``130`` interrupted. Errors are one line on
stderr (from every rank under ``torchrun`` that met one, tagged with its rank); set
``MADEFLOW_TRACEBACK=1`` to see the traceback.

``madeflow fit`` with no arguments trains a 5-layer MAF with a mixture-of-Gaussians base on the
bundled logit digits (fresh dequantization noise each batch), early-stopped on validation; see
:data:`madeflow.cli_fit.FIT_DEFAULTS`. Commands run on one CPU thread unless ``--threads``.
``torchrun --nproc_per_node N -m madeflow fit ...`` trains data-parallel on ``N`` processes
(:mod:`madeflow.distributed`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from madeflow import distributed
from madeflow.cli_data import mean_and_stderr, prepare
from madeflow.cli_fit import EXIT_CODES, UsageError, cmd_fit, device_from, error_kind
from madeflow.data.files import DataError, load_array
from madeflow.data.rows import to_device
from madeflow.models import MODELS
from madeflow.runs import load_run
from madeflow.training import evaluate_log_prob

__all__ = ["EXIT_CODES", "UsageError", "load_run", "main"]


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line on stderr (exit code 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="madeflow",
        description="Fit, evaluate and sample MADE/MAF density estimators.",
        epilog="Exit codes: 2 usage, 3 data error, 4 checkpoint/run-folder error, "
        "5 numerical failure, 6 another process of a distributed run failed, 130 interrupted. "
        "Data-parallel: torchrun --nproc_per_node N -m madeflow fit ...",
    )
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="train a density model (default: MAF-MoG on digits)")
    f.add_argument(
        "data",
        nargs="?",
        help="digits (default), digits-binary, a toy name "
        "(moons, rings, checkerboard, 8gaussians, spirals, pinwheel) or a .npy/.npz/.csv/.pt file",
    )
    f.add_argument(
        "--model",
        choices=sorted(MODELS),
        help="default: maf-mog (made-bernoulli for digits-binary)",
    )
    f.add_argument("--hidden", type=int, nargs="+", help="hidden widths (default 256 256)")
    f.add_argument("--num-transforms", type=int, help="MAF layers (default 5)")
    f.add_argument(
        "--num-components",
        type=int,
        help="mixture components of made-mog and maf-mog (default 10)",
    )
    f.add_argument("--num-masks", type=int, help="MADE masks for order-agnostic training")
    f.add_argument("--batch-norm", action="store_true", default=None, help="MAF batch norm")
    f.add_argument("--epochs", "--max-epochs", dest="max_epochs", type=int)
    f.add_argument("--batch-size", type=int)
    f.add_argument("--lr", type=float)
    f.add_argument("--weight-decay", type=float)
    f.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    f.add_argument("--clip-grad", type=float, help="gradient-norm clip (0: off)")
    f.add_argument("--toy-size", type=int, help="points drawn from a toy density")
    f.add_argument("--no-standardize", action="store_true", help="keep file/toy data as is")
    f.add_argument(
        "--mmap",
        action="store_true",
        help="memory-map a .npy file instead of loading it: only the rows of each mini-batch "
        "are read (for data larger than memory)",
    )
    f.add_argument(
        "--no-dequantize",
        action="store_true",
        help="digits: keep the fixed dequantization noise instead of redrawing it every batch",
    )
    f.add_argument("--out", help="run folder (default runs/<model>-<data>-<time>)")
    f.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    f.add_argument("--seed", type=int)
    f.add_argument("--resume", action="store_true", help="continue the run in --out")
    f.add_argument(
        "--save-every",
        type=float,
        default=10.0,
        help="seconds between resume checkpoints (0: every epoch)",
    )
    f.add_argument("--quiet", action="store_true", help="no progress bar, only the results")
    f.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default 1: these small matrices gain little from more "
        "threads, and lose up to 7x when other processes share the cores)",
    )

    e = sub.add_parser("evaluate", help="per-example log-likelihoods of a trained run")
    e.add_argument("run")
    e.add_argument("data", nargs="?", help="a data file (default: the run's own split)")
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--output", "-o", help="write per-row log-likelihoods (.npy or .csv)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    s = sub.add_parser("sample", help="draw samples in the original data space")
    s.add_argument("run")
    s.add_argument("-n", "--num-samples", type=int, default=1000)
    s.add_argument("-o", "--output", required=True, help=".npy or .csv file")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    g = sub.add_parser("plot", help="redraw samples.png (and training.png) of a run")
    g.add_argument("run")
    g.add_argument("--seed", type=int, default=0)
    return p


# ------------------------------------------------------------------- evaluate / sample / plot
def _write_array(path: Path, arr: np.ndarray) -> None:
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise UsageError(f"output file must end in .npy or .csv, got {path}")
    if not path.parent.exists():
        raise UsageError(f"output folder does not exist: {path.parent}")
    if suffix == ".npy":
        np.save(path, arr)
    else:
        np.savetxt(path, arr.reshape(arr.shape[0], -1), delimiter=",", fmt="%.9g")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``madeflow evaluate``: per-row log-likelihoods and their mean ± standard error."""
    device = device_from(args.device)
    config, model, space = load_run(args.run, device)
    if args.data:
        x_data = load_array(args.data).to(device)
        d = config["model"]["input_dim"]
        if x_data.shape[1] != d:
            raise DataError(f"{args.data} has {x_data.shape[1]} columns; the model expects {d}")
        x = space.to_model(x_data)
        label = args.data
    else:
        x = to_device(getattr(prepare(config["data"]), args.split), device)
        label = f"{args.split} split"
    ll = evaluate_log_prob(model, x)
    ll_data = ll + space.log_jacobian(x).to(ll.device)
    if not torch.isfinite(ll_data).all():
        bad = torch.nonzero(~torch.isfinite(ll_data)).flatten()[:10].tolist()
        print(f"madeflow: warning: non-finite log-likelihood in rows {bad}", file=sys.stderr)
    m, se = mean_and_stderr(ll_data)
    print(f"{label}: {len(ll)} rows, log-likelihood {m:.4f} ± {se:.4f} nats (data space)")
    if space.kind == "digits" or space.standardizer is not None:
        mm, sem = mean_and_stderr(ll)
        print(f"  in model space: {mm:.4f} ± {sem:.4f} nats")
    if args.output:
        _write_array(Path(args.output), ll_data.detach().cpu().double().numpy())
        print(f"wrote {args.output}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """``madeflow sample``: draw samples and save them in the original data space."""
    if args.num_samples < 1:
        raise UsageError("-n must be >= 1")
    out = Path(args.output)
    if out.suffix.lower() not in (".npy", ".csv"):
        raise UsageError(f"output file must end in .npy or .csv, got {out}")
    device = device_from(args.device)
    _, model, space = load_run(args.run, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        with torch.no_grad():
            y = model.sample((args.num_samples,))
    x = space.to_data(y)
    _write_array(out, x.detach().cpu().double().numpy())
    print(f"wrote {args.num_samples} samples to {out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``madeflow plot``: redraw the run's pictures."""
    from madeflow.cli_plots import plot_run

    config, model, space = load_run(args.run)
    try:
        test = prepare(config["data"]).test
    except DataError:
        test = None  # the data file moved: plot the model alone
    for path in plot_run(Path(args.run), model, space, test, config, seed=args.seed):
        print(f"wrote {path}")
    return 0


COMMANDS = {"fit": cmd_fit, "evaluate": cmd_evaluate, "sample": cmd_sample, "plot": cmd_plot}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring).

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["fit"]  # `madeflow` alone trains the default model
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float32)
    try:
        threads = getattr(args, "threads", None)
        if threads is not None and threads < 1:
            raise UsageError("--threads must be >= 1")
        torch.set_num_threads(threads or 1)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("madeflow: interrupted", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    except Exception as err:
        return _fail(err, error_kind(err))
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_num_threads(old_threads)


def _fail(err: Exception, kind: str | None) -> int:
    if os.environ.get("MADEFLOW_TRACEBACK"):
        raise err
    rank = distributed.rank()
    if kind == "numerical" and rank > 0:
        return EXIT_CODES[kind]  # decided alike on every rank: rank 0 says it
    where = f" (rank {rank})" if distributed.launched() else ""
    text = str(err) if kind is not None else f"{type(err).__name__}: {err}"
    print(f"madeflow: error{where}: {text}", file=sys.stderr)
    return 1 if kind is None else EXIT_CODES[kind]


if __name__ == "__main__":
    sys.exit(main())
