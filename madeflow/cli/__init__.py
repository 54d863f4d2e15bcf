"""The ``madeflow`` command line: fit, evaluate, sample and plot density estimators.

Exit codes: ``0`` success, ``1`` unexpected error, ``2`` usage error (bad arguments or flag
values, an existing non-empty ``--out`` without ``--resume``, a setting ``--resume`` cannot
change, an existing output file without ``--force``), ``3`` data error (missing, unreadable or
malformed data, or a data file changed since ``fit``), ``4`` checkpoint, run-folder or
output-file error (not a run; corrupt, tampered, foreign or incompatible files; a folder locked
by another process; a file that cannot be written: full disk, read-only folder), ``5``
numerical failure (a loss, a parameter or the model's values became NaN/Inf), ``6`` another
process of a distributed run failed or did not answer, ``130`` interrupted. Errors are one line
on stderr (from every rank under ``torchrun`` that met one, tagged with its rank); set
``MADEFLOW_TRACEBACK=1`` to see the traceback.

Nothing is overwritten without ``--force``: ``sample -o``/``evaluate -o`` refuse an existing
file. A run folder records fingerprints of its data file and ``model.pt``: a ``model.pt`` that
is not the one the run saved is refused by ``evaluate``, ``sample``, ``plot`` and ``fit
--resume``; a data file changed since ``fit`` is refused by ``evaluate`` (own split) and ``fit
--resume``, and only noted by ``plot``. ``--force`` goes on anyway, with a warning line.

``madeflow fit`` with no arguments trains a 5-layer MAF with a mixture-of-Gaussians base on the
bundled logit digits (fresh dequantization noise each batch), early-stopped on validation; see
:data:`madeflow.cli.fit.FIT_DEFAULTS`. Commands run on one CPU thread unless ``--threads``.
``torchrun --nproc_per_node N -m madeflow fit ...`` trains data-parallel on ``N`` processes
(:mod:`madeflow.train.distributed`).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from madeflow.cli.data import prepare
from madeflow.cli.fit import EXIT_CODES, UsageError, cmd_fit, device_from, error_kind, say
from madeflow.data.files import DataError, check_range, load_array
from madeflow.data.rows import to_device
from madeflow.models import MODELS
from madeflow.runs.folder import load_run
from madeflow.runs.integrity import MAX_TOY_SIZE, RunWarning, data_drift
from madeflow.runs.safe_io import atomic_write_bytes
from madeflow.train import distributed
from madeflow.train.evaluation import mean_and_stderr
from madeflow.train.loop import evaluate_log_prob

__all__ = ["EXIT_CODES", "UsageError", "load_run", "main"]


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line on stderr (exit code 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


MAX_SAMPLE_VALUES = 2 * 10**8
"""Most values (rows times columns) one ``madeflow sample`` call writes (1.6 GB as float64)."""

SAMPLE_CHUNK = 100_000
"""Rows drawn per model call by ``madeflow sample`` (bounds the memory of the sampler)."""

_MAX_SEED = 2**63 - 1


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``, with the range in the message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value

    return parse


def _number(positive: bool) -> Callable[[str], float]:
    """An argparse type: a finite number, ``> 0`` (``positive``) or ``>= 0``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    return parse


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
    f.add_argument("--hidden", type=_integer(1), nargs="+", help="hidden widths (default 256 256)")
    f.add_argument("--num-transforms", type=_integer(1), help="MAF layers (default 5)")
    f.add_argument(
        "--num-components",
        type=_integer(1),
        help="mixture components of made-mog and maf-mog (default 10)",
    )
    f.add_argument("--num-masks", type=_integer(1), help="MADE masks for order-agnostic training")
    f.add_argument("--batch-norm", action="store_true", default=None, help="MAF batch norm")
    f.add_argument("--epochs", "--max-epochs", dest="max_epochs", type=_integer(0))
    f.add_argument("--batch-size", type=_integer(1))
    f.add_argument("--lr", type=_number(positive=True))
    f.add_argument("--weight-decay", type=_number(positive=False))
    f.add_argument("--patience", type=_integer(0), help="early-stopping patience in epochs")
    f.add_argument("--clip-grad", type=_number(positive=False), help="gradient-norm clip (0: off)")
    f.add_argument(
        "--toy-size", type=_integer(3, MAX_TOY_SIZE), help="points drawn from a toy density"
    )
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
    f.add_argument("--seed", type=_integer(0, _MAX_SEED))
    f.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with the settings in its config.json (only --max-epochs "
        "may change)",
    )
    f.add_argument(
        "--force",
        action="store_true",
        help="with --resume: go on although the data file or model.pt changed since fit",
    )
    f.add_argument(
        "--save-every",
        type=_number(positive=False),
        default=10.0,
        help="seconds between resume checkpoints (0: every epoch)",
    )
    f.add_argument("--quiet", action="store_true", help="no progress bar, only the results")
    f.add_argument(
        "--compile",
        action="store_true",
        help="compile the training loss with torch.compile: 10-20 s of compilation first, then "
        "about 15%% faster steps for small models on CPU (docs/benchmarks.md)",
    )
    f.add_argument(
        "--threads",
        type=_integer(1, 1024),
        help="CPU threads for torch (default 1: these small matrices gain little from more "
        "threads, and lose up to 7x when other processes share the cores)",
    )

    e = sub.add_parser("evaluate", help="per-example log-likelihoods of a trained run")
    e.add_argument("run")
    e.add_argument("data", nargs="?", help="a data file (default: the run's own split)")
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--output", "-o", help="write per-row log-likelihoods (.npy or .csv)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    e.add_argument(
        "--force",
        action="store_true",
        help="overwrite --output; use a model.pt or data file that changed since fit",
    )

    s = sub.add_parser("sample", help="draw samples in the original data space")
    s.add_argument("run")
    s.add_argument("-n", "--num-samples", type=_integer(1), default=1000)
    s.add_argument("-o", "--output", required=True, help=".npy or .csv file")
    s.add_argument("--seed", type=_integer(0, _MAX_SEED), default=0)
    s.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    s.add_argument(
        "--force", action="store_true", help="overwrite --output; use a changed model.pt"
    )

    g = sub.add_parser("plot", help="redraw samples.png (and training.png) of a run")
    g.add_argument("run")
    g.add_argument("--seed", type=_integer(0, _MAX_SEED), default=0)
    g.add_argument("--force", action="store_true", help="use a changed model.pt")
    return p


# ------------------------------------------------------------------- evaluate / sample / plot
def _output(name: str, force: bool) -> Path:
    """Check an output file before any work: suffix, folder, and nothing overwritten unforced."""
    path = Path(name)
    if path.suffix.lower() not in (".npy", ".csv"):
        raise UsageError(f"output file must end in .npy or .csv, got {path}")
    if not path.parent.is_dir():
        raise UsageError(f"output folder does not exist: {path.parent}")
    if path.is_dir():
        raise UsageError(f"output {path} is a folder; name a file")
    if os.path.lexists(path) and not force:
        raise UsageError(
            f"{path} already exists; pass --force to overwrite it, or choose another -o"
        )
    return path


def _write_array(path: Path, arr: np.ndarray) -> None:
    """Write ``.npy`` or ``.csv`` atomically, to exactly ``path`` (``np.save`` adds ``.npy``)."""
    buffer = io.BytesIO()
    if path.suffix.lower() == ".npy":
        np.save(buffer, arr)
    else:
        np.savetxt(buffer, arr.reshape(arr.shape[0], -1), delimiter=",", fmt="%.9g")
    atomic_write_bytes(path, buffer.getvalue())


def _drift(config: dict, force: bool, action: str) -> bool:
    """Refuse (or with ``force`` warn about) a training data file changed since ``fit``."""
    drift = data_drift(config)
    if drift is None:
        return False
    if not force:
        raise DataError(f"{drift}; {action} Restore it, or pass --force to use it anyway")
    say(False, f"madeflow: warning: {drift}; using it anyway (--force)")
    return True


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``madeflow evaluate``: per-row log-likelihoods and their mean ± standard error."""
    device = device_from(args.device)
    out = _output(args.output, args.force) if args.output else None
    config, model, space = load_run(args.run, device, force=args.force)
    if args.data:
        x_data = load_array(args.data, dtype=torch.float64).to(device)
        d = config["model"]["input_dim"]
        if x_data.shape[1] != d:
            raise DataError(f"{args.data} has {x_data.shape[1]} columns; the model expects {d}")
        x = space.to_model(x_data).to(torch.float32)  # standardised in float64 first
        check_range(x, f"{args.data} (in model space)")
        label = args.data
    else:
        _drift(config, args.force, f"its {args.split} split is not the one the run was scored on.")
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
    if out is not None:
        _write_array(out, ll_data.detach().cpu().double().numpy())
        print(f"wrote {out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """``madeflow sample``: draw samples and save them in the original data space."""
    out = _output(args.output, args.force)
    device = device_from(args.device)
    config, model, space = load_run(args.run, device, force=args.force)
    d = config["model"]["input_dim"]
    if args.num_samples * d > MAX_SAMPLE_VALUES:
        raise UsageError(
            f"-n {args.num_samples} would write {args.num_samples * d:.2e} values (D={d}), more "
            f"than {MAX_SAMPLE_VALUES:.0e} in one call; draw fewer samples per call"
        )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        with torch.no_grad():
            parts = []
            for start in range(0, args.num_samples, SAMPLE_CHUNK):
                n = min(SAMPLE_CHUNK, args.num_samples - start)
                parts.append(space.to_data(model.sample((n,))).detach().cpu().double())
    _write_array(out, torch.cat(parts).numpy())
    print(f"wrote {args.num_samples} samples to {out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``madeflow plot``: redraw the run's pictures (the test data too, unless it changed)."""
    from madeflow.cli.plots import plot_run

    config, model, space = load_run(args.run, force=args.force)
    test = None
    drift = data_drift(config)
    if drift is not None:
        say(False, f"madeflow: warning: {drift}; plotting the model without its test data")
    else:
        try:
            test = prepare(config["data"]).test
        except DataError as err:
            say(False, f"madeflow: warning: {err}; plotting the model without its test data")
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
        torch.set_num_threads(getattr(args, "threads", None) or 1)
        with warnings.catch_warnings():
            _run_warnings_as_lines()
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("madeflow: interrupted", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    except Exception as err:
        return _fail(err, error_kind(err))
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_num_threads(old_threads)


def _run_warnings_as_lines() -> None:
    """Show :class:`RunWarning` as ``madeflow: warning: ...`` lines (inside catch_warnings)."""
    original = warnings.showwarning
    warnings.simplefilter("always", RunWarning)

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, RunWarning):
            print(f"madeflow: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


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
